"""Stage 2 at paper scale: temporal (AnimateDiff motion modules), audio and expression layers on clips.

512x512 clips of 16 frames, SD-1.5 backbone + motion modules + audio cross-attention on wav2vec2-base
features (all 13 hidden states, +-2 frame window) + expression cross-attention on 50-d FLAME vectors;
ReferenceNet, VAE and wav2vec2 frozen. On a 2-core CPU it only builds (`jax.eval_shape`).

  python -m launch.inspect --config=configs/sd15_stage2.py
"""

import ml_collections

from configs import common


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.stage = 2
  config.num_frames = 16
  config.model = common.sd15_model()
  return config
