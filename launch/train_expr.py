"""Trains the expression GAN (see emodiff_jax/emotion/gan_loop.py); resumes from the workdir if it has
checkpoints.

  python -m launch.train_expr --config=configs/expr_gan_synthetic.py --workdir=/tmp/emodiff/expr_gan
  python -m launch.plot_expr --workdir=/tmp/emodiff/expr_gan --out=expr.png
"""

import logging

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", "configs/expr_gan_synthetic.py", "Expression GAN config file.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (checkpoints, TensorBoard).", required=True)


def main(argv) -> None:
  del argv
  logging.getLogger("emodiff_jax").setLevel(logging.INFO)
  from emodiff_jax.emotion.gan_loop import train_expression_gan

  train_expression_gan(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
  app.run(main)
