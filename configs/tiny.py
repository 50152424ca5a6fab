"""Tiny model of the full system, for tests and CPU smoke runs.

Same layout as the paper's model (VAE, ReferenceNet, spatio-temporal backbone with reference, audio and
expression attention and motion modules, wav2vec2, audio projection) with a few MB of parameters, on
64x64 frames (8x8x4 latents). Builds and runs a forward pass in seconds on 2 CPU cores.

  python -m launch.inspect --config=configs/tiny.py
"""

import ml_collections

from configs import common


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.stage = 2
  config.num_frames = 8
  config.model = common.tiny_model()
  return config
