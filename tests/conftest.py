import os
import sys

# Tests import `tests.parity` and the repo's top-level packages (configs, data, launch).
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402

# Compiled programs are cached on disk for the session, so tests that build the same step (the training
# loop's resume test, the stage-2 init test) compile it once.
jax.config.update("jax_compilation_cache_dir", os.path.join(os.environ.get("TMPDIR", "/tmp"), "emodiff_jax_xla_cache"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
