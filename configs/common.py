"""Model sections shared by the configs: SD-1.5 layout at paper scale and a tiny layout for tests.

Each section holds the keyword arguments of one model's config dataclass (`UNetConfig`, `VAEConfig`,
`MotionConfig`, `Wav2Vec2Config`, `AudioProjectionConfig`), so `--config.model.unet.layers_per_block=1`
style overrides reach the module directly. `emodiff_jax.models.build` turns a `model` section into modules.
"""

from __future__ import annotations

import ml_collections

EXPRESSION_DIM = 50  # FLAME expression coefficients, as regressed by DECA.


def sd15_model() -> ml_collections.ConfigDict:
  """Paper scale: SD-1.5 UNet and VAE, AnimateDiff motion modules, wav2vec2-base, 50-d expressions."""
  m = ml_collections.ConfigDict()
  m.resolution = 512
  m.vae = dict(block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
               norm_num_groups=32, scaling_factor=0.18215)
  m.unet = dict(block_out_channels=(320, 640, 1280, 1280), layers_per_block=2, cross_attention_dim=768,
                attention_head_dim=8, norm_num_groups=32)
  m.motion = dict(num_attention_heads=8, layers_per_block=2, norm_num_groups=32, max_seq_length=32,
                  use_mid_block=True)
  m.wav2vec2 = dict()  # wav2vec2-base defaults.
  m.audio_proj = dict(window=2, num_tokens=32, context_dim=768, hidden_dim=512)
  m.expression = dict(dim=EXPRESSION_DIM, tokens=4, injection="cross_attn")
  m.reference_attention = True
  return m


def tiny_model() -> ml_collections.ConfigDict:
  """A few-MB layout of the same shape for tests and CPU runs on 64x64 frames (8x8 latents)."""
  m = ml_collections.ConfigDict()
  m.resolution = 64
  m.vae = dict(block_out_channels=(32, 64, 64, 64), layers_per_block=1, latent_channels=4,
               norm_num_groups=8, scaling_factor=0.18215)
  m.unet = dict(block_out_channels=(32, 64), layers_per_block=1, cross_attention_dim=32,
                attention_head_dim=4, norm_num_groups=8,
                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"))
  m.motion = dict(num_attention_heads=4, layers_per_block=1, norm_num_groups=8, max_seq_length=32,
                  use_mid_block=False)
  m.wav2vec2 = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                    conv_dim=(32, 32, 32), conv_kernel=(10, 8, 4), conv_stride=(5, 4, 16),
                    num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)
  m.audio_proj = dict(window=2, num_tokens=4, context_dim=32, hidden_dim=64)
  m.expression = dict(dim=EXPRESSION_DIM, tokens=2, injection="cross_attn")
  m.reference_attention = True
  return m
