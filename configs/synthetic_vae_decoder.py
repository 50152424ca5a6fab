"""Fine-tunes the shipped checkpoint's VAE decoder on the synthetic world, its encoder frozen: the latents the
diffusion model was trained on stay what they were, and the new decoder replaces the bundle's
(`python -m launch.export_bundle --bundle=data/checkpoints/synthetic --vae=<this workdir> --out=...`).

  python -m launch.train_vae --config=configs/synthetic_vae_decoder.py --workdir=/tmp/emodiff/vae_decoder

The loss, data and held-out PSNR of configs/synthetic_vae.py; AdamW 1e-3 with 30 warmup steps and a cosine to 0
over the run, EMA 0.99. See emodiff_jax/train/vae_loop.py (decoder fine-tuning).
"""

import ml_collections

from configs import synthetic_vae


def get_config() -> ml_collections.ConfigDict:
  config = synthetic_vae.get_config()
  config.init.bundle = "data/checkpoints/synthetic"
  config.train.decoder_only = True
  config.optim.learning_rate = 1e-3
  config.optim.decay_steps = 0  # the cosine spans the run
  return config
