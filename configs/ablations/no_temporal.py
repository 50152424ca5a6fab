"""Ablation: no temporal layers (`model.motion=None`): the backbone has no AnimateDiff motion modules, so
frames are denoised independently (they share only the audio window of each frame's tokens).

Otherwise `configs/synthetic_stage2.py` (tiny model, 8-frame 64x64 clips, batch 4, 6000 steps or `--steps`), at a little
less than its cost. Train alone, or beside the other ablations with one table
(`python -m launch.ablate`):

  python -m launch.train --config=configs/ablations/no_temporal.py --workdir=/tmp/emodiff/ablations/no_temporal \
      --config.init.stage1_checkpoint=/tmp/emodiff/stage1
"""

import ml_collections

from configs import synthetic_stage2


def get_config() -> ml_collections.ConfigDict:
  config = synthetic_stage2.get_config()
  config.model.motion = None
  return config
