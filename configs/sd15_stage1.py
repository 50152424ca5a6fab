"""Stage 1 at paper scale: ReferenceNet + the backbone's 2D layers trained on images.

512x512 frames (64x64x4 SD latents), SD-1.5 UNet for both ReferenceNet and backbone (859,520,964
parameters each), the SD VAE (sd-vae-ft-mse, 83,653,863, frozen). Paper hardware class: multi-GPU;
on a 2-core CPU it only builds (`jax.eval_shape`).

  python -m launch.inspect --config=configs/sd15_stage1.py
"""

import ml_collections

from configs import common


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.stage = 1
  config.num_frames = 1
  config.model = common.sd15_model()
  return config
