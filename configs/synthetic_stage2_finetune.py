"""The shipped synthetic checkpoint trained on (`init.bundle`: every network from the bundle's weights, a
fresh optimizer), stage 2 with the 2D layers as in `configs/synthetic_stage2_2d.py`, with the loss stressing
the latent cells that change against the reference (`diffusion.change_weight`: mouth, brows, the emotion's
marks; `diffusion/losses.change_weights`): the shipped model renders the emotions at a tenth to a half of the
world's strength (README, evaluation), and those cells are a small part of the plain mean. Run from the
repository root (the bundle path is relative):

  python -m launch.train --config=configs/synthetic_stage2_finetune.py --workdir=/tmp/emodiff/stage2_ft
"""

import ml_collections

from configs import synthetic_stage2_2d


def get_config() -> ml_collections.ConfigDict:
  config = synthetic_stage2_2d.get_config()
  config.init.bundle = "data/checkpoints/synthetic"
  config.diffusion.change_weight = 4.0
  config.data.seed = 2  # neither data order of the runs behind the bundle
  config.train.steps = 4000
  config.optim.warmup_steps = 100
  config.optim.cooldown_steps = 2000  # constant 1e-4, then linear to 0 over the second half
  return config
