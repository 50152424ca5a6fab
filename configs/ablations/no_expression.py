"""Ablation: stage 2 without the expression condition (`model.expression.injection='none'`): the backbone
never sees the per-frame expression vectors, so emotion can only come from the reference image.

Otherwise `configs/synthetic_stage2.py` (tiny model, 8-frame 64x64 clips, batch 4, 6000 steps or `--steps`): its cost.
Train alone, or beside the other ablations with one table (`python -m launch.ablate`):

  python -m launch.train --config=configs/ablations/no_expression.py --workdir=/tmp/emodiff/ablations/no_expression \
      --config.init.stage1_checkpoint=/tmp/emodiff/stage1
"""

import ml_collections

from configs import synthetic_stage2


def get_config() -> ml_collections.ConfigDict:
  config = synthetic_stage2.get_config()
  config.model.expression.injection = "none"
  return config
