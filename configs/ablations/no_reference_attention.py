"""Ablation: no reference attention (`model.reference_attention=False`): the backbone's `attn1` layers
attend within the frame only, so the ReferenceNet's features never reach it and identity must come from
the noisy latents alone (the ReferenceNet still runs in the objective; its output is ignored).

Otherwise `configs/synthetic_stage2.py` (tiny model, 8-frame 64x64 clips, batch 4, 6000 steps or `--steps`): its cost.
Train alone, or beside the other ablations with one table (`python -m launch.ablate`):

  python -m launch.train --config=configs/ablations/no_reference_attention.py \
      --workdir=/tmp/emodiff/ablations/no_reference_attention --config.init.stage1_checkpoint=/tmp/emodiff/stage1
"""

import ml_collections

from configs import synthetic_stage2


def get_config() -> ml_collections.ConfigDict:
  config = synthetic_stage2.get_config()
  config.model.reference_attention = False
  return config
