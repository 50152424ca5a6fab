"""Ablation: no condition dropout (`diffusion.cond_drop` rates all 0): reference, audio and expression are
never dropped in training, so the model learns no unconditional branch and classifier-free guidance
(`sampling.guidance` scales other than 1) has nothing to contrast with.

Otherwise `configs/synthetic_stage2.py` (tiny model, 8-frame 64x64 clips, batch 4, 6000 steps or `--steps`): its cost.
Train alone, or beside the other ablations with one table (`python -m launch.ablate`):

  python -m launch.train --config=configs/ablations/no_cond_dropout.py \
      --workdir=/tmp/emodiff/ablations/no_cond_dropout --config.init.stage1_checkpoint=/tmp/emodiff/stage1
"""

import ml_collections

from configs import synthetic_stage2


def get_config() -> ml_collections.ConfigDict:
  config = synthetic_stage2.get_config()
  config.diffusion.cond_drop = dict(reference=0.0, audio=0.0, expression=0.0)
  return config
