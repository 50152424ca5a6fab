"""Ablation: the expression merged into the audio tokens (`model.expression.injection='add_to_audio'`)
instead of its own cross-attention: one projected token per frame is added to every audio token, so
expression and speech share `attn_audio`.

Otherwise `configs/synthetic_stage2.py` (tiny model, 8-frame 64x64 clips, batch 4, 6000 steps or `--steps`): its cost.
Train alone, or beside the other ablations with one table (`python -m launch.ablate`):

  python -m launch.train --config=configs/ablations/expression_in_audio.py \
      --workdir=/tmp/emodiff/ablations/expression_in_audio --config.init.stage1_checkpoint=/tmp/emodiff/stage1
"""

import ml_collections

from configs import synthetic_stage2


def get_config() -> ml_collections.ConfigDict:
  config = synthetic_stage2.get_config()
  config.model.expression.injection = "add_to_audio"
  return config
