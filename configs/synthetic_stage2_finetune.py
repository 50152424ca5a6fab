"""A bundle's model trained on (`init.bundle`: every network from the bundle's weights, a fresh optimizer),
stage 2 with the 2D layers as in `configs/synthetic_stage2_2d.py`, with the loss stressing the latent cells
that change against the reference (`diffusion.change_weight`: mouth, brows, the emotion's marks;
`diffusion/losses.change_weights`): the model of the 2D run renders the emotions at a tenth to a half of the
world's strength (README, evaluation), and those cells are a small part of the plain mean. Without
`init.bundle` it would start from random weights.

  python -m launch.train --config=configs/synthetic_stage2_finetune.py --workdir=/tmp/emodiff/stage2_ft \
      --config.init.bundle=/tmp/emodiff/bundle_2d
"""

import ml_collections

from configs import synthetic_stage2_2d


def get_config() -> ml_collections.ConfigDict:
  config = synthetic_stage2_2d.get_config()
  config.diffusion.change_weight = 4.0
  config.data.seed = 2  # neither data order of the runs before it
  config.train.steps = 4000
  config.optim.warmup_steps = 100
  config.optim.cooldown_steps = 2000  # constant 1e-4, then linear to 0 over the second half
  return config
