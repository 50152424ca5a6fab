"""Which conditions a checkpoint uses: held-out denoising losses with each condition removed or mismatched
(see emodiff_jax/eval/condition_use.py), the error of the predicted clean latents at fixed timesteps per
variant (`--timesteps`: where in the noise range each condition is read), and how far each synthetic
emotion moves the checkpoint's VAE latents (`emotion_latent_shift`). Prints markdown tables; `--out` also
writes `condition_use.json` and `condition_use.md`.

  python -m launch.condition_use --checkpoint=data/checkpoints/synthetic --clips=16 --keys=8

The clips are the first `--clips` of `--split` under the data section of `--config` (default: the synthetic
stage-2 config: held-out identities, the identity's neutral face as reference), its sources mixed by
`--source_weights` (default equal, so the clips stay the same when a training config reweights its sources);
`--config.data.*` overrides work, e.g. `--config.data.reference=clip`.
"""

import json
import os
import sys

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", "configs/synthetic_stage2.py", "Config whose data section to use.")
_CHECKPOINT = flags.DEFINE_string("checkpoint", os.path.join("data", "checkpoints", "synthetic"),
                                  "Inference bundle folder.")
_SPLIT = flags.DEFINE_string("split", "test", "Data split.")
_CLIPS = flags.DEFINE_integer("clips", 16, "Held-out clips (one batch).")
_KEYS = flags.DEFINE_integer("keys", 8, "Fixed noise/timestep draws averaged per variant.")
_TIMESTEPS = flags.DEFINE_list("timesteps", ["900", "700", "500", "300", "100"],
                               "Fixed timesteps of the x0-error table (empty: no table; an epsilon model has no x0 "
                               "at the last step of a zero-terminal-SNR schedule).")
_TIMESTEP_KEYS = flags.DEFINE_integer("timestep_keys", 2, "Noise draws averaged per variant and timestep.")
_IDENTITIES = flags.DEFINE_integer("latent_identities", 4, "Test identities for the emotion latent-shift table.")
_WEIGHTS = flags.DEFINE_list("source_weights", None,
                              "Mixture weights of the config's data.sources for the measured clips (default: equal "
                              "for every source, as measured before configs/synthetic_stage2.py weighted its sources "
                              "3:1; empty: the config's own).")
_OUT = flags.DEFINE_string("out", "", "Folder for condition_use.json / .md.")


def main(argv) -> None:
  del argv
  from emodiff_jax.atomic_io import write_bytes
  from emodiff_jax.eval.condition_use import (ConditionLosses, emotion_latent_shift, markdown_table, measured_data,
                                              timestep_table)
  from emodiff_jax.eval.harness import identity_pool
  from emodiff_jax.input import pipeline
  from emodiff_jax.sampling.bundle import BundleError, load_bundle

  try:
    bundle = load_bundle(_CHECKPOINT.value)
  except BundleError as e:
    sys.exit(f"error: {e}")
  weights = None if _WEIGHTS.value is None else [float(w) for w in _WEIGHTS.value]
  data = measured_data(_CONFIG.value.data, weights)
  data.batch_size = _CLIPS.value
  batch = next(iter(pipeline.make_dataset(data, split=_SPLIT.value)))
  conditions = ConditionLosses(bundle.models(), bundle.config.diffusion, frame_stride=data.frame_stride,
                               audio_margin=bundle.config.audio_margin, num_keys=_KEYS.value)
  losses = conditions(bundle.params, batch)
  timesteps = [int(t) for t in _TIMESTEPS.value]
  by_t = conditions.by_timestep(bundle.params, batch, timesteps, _TIMESTEP_KEYS.value) if timesteps else {}
  shift = emotion_latent_shift(bundle.models(), bundle.params["vae"], identity_pool("test")[:_IDENTITIES.value],
                               bundle.config.model.resolution) if _IDENTITIES.value else {}
  table = markdown_table(losses) + "\n\n"
  if by_t:
    table += f"x0 error at fixed timesteps ({_TIMESTEP_KEYS.value} noise draws):\n\n" + timestep_table(by_t) + "\n\n"
  if shift:
    table += "| emotion at intensity 1 | latent MSE from neutral |\n| --- | ---: |\n" + "\n".join(
        f"| {name} | {value:.4f} |" for name, value in shift.items())
  print(table)
  if _OUT.value:
    os.makedirs(_OUT.value, exist_ok=True)
    record = dict(checkpoint=os.path.abspath(_CHECKPOINT.value), split=_SPLIT.value, clips=_CLIPS.value,
                  keys=_KEYS.value, data=data.to_dict(), losses=losses,
                  x0_error_by_timestep={k: {str(t): v for t, v in row.items()} for k, row in by_t.items()},
                  timestep_keys=_TIMESTEP_KEYS.value, emotion_latent_shift=shift)
    write_bytes(os.path.join(_OUT.value, "condition_use.json"), (json.dumps(record, indent=1) + "\n").encode())
    write_bytes(os.path.join(_OUT.value, "condition_use.md"), (table + "\n").encode())


if __name__ == "__main__":
  app.run(main)
