"""Prints the parameter table of every network of a config, built with `jax.eval_shape`.

  python -m launch.inspect --config=configs/sd15_stage2.py [--config.num_frames=8]
"""

from absl import app
from ml_collections import config_flags

from emodiff_jax.models.build import abstract_params, build_models
from emodiff_jax.models.summary import param_table

_CONFIG = config_flags.DEFINE_config_file("config", "configs/sd15_stage2.py", "Config file.")


def main(argv) -> None:
  del argv
  config = _CONFIG.value
  models = build_models(config.model)
  rows = param_table(abstract_params(models, config.model, config.num_frames))
  print(f"{'module':<40} {'parameters':>15} {'f32 MiB':>10}")
  for name, n, mib in rows:
    print(f"{name:<40} {n:>15,} {mib:>10.1f}")


if __name__ == "__main__":
  app.run(main)
