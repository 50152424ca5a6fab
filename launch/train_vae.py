"""Trains the VAE on frames (see emodiff_jax/train/vae_loop.py); resumes from the workdir if it has
checkpoints.

  python -m launch.train_vae --config=configs/synthetic_vae.py --workdir=/tmp/emodiff/vae
  python -m launch.train --config=configs/synthetic_stage1.py --workdir=/tmp/emodiff/stage1 \
      --config.init.vae_checkpoint=/tmp/emodiff/vae
"""

import logging

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", "configs/synthetic_vae.py", "VAE training config file.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (checkpoints, TensorBoard, previews).", required=True)


def main(argv) -> None:
  del argv
  logging.getLogger("emodiff_jax").setLevel(logging.INFO)
  from emodiff_jax.train.vae_loop import train_vae

  train_vae(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
  app.run(main)
