"""A micro model of the full layout (16x16 frames, 8x8 latents, a one-level UNet) for training tests:
XLA:CPU compile time grows with the number of ops, so the graph is kept as small as the layout allows,
and the persistent compilation cache (conftest) shares the programs between tests."""

import ml_collections

from configs import common, synthetic_stage1, synthetic_stage2


def micro_model() -> ml_collections.ConfigDict:
  m = synthetic_stage1.get_config().model
  m.resolution = 16
  m.vae = dict(block_out_channels=(8, 8), layers_per_block=1, latent_channels=4, norm_num_groups=4,
               scaling_factor=0.18215)
  m.unet = dict(block_out_channels=(16,), layers_per_block=1, cross_attention_dim=16, attention_head_dim=4,
                norm_num_groups=4, down_block_types=("CrossAttnDownBlock2D",),
                up_block_types=("CrossAttnUpBlock2D",), **common.unet_runtime())
  m.motion = dict(num_attention_heads=2, layers_per_block=1, norm_num_groups=4, max_seq_length=16,
                  use_mid_block=False)
  m.wav2vec2 = dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                    conv_dim=(16, 16, 16), conv_kernel=(10, 8, 4), conv_stride=(5, 4, 16),
                    num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)
  m.audio_proj = dict(window=2, num_tokens=2, context_dim=16, hidden_dim=32)
  m.expression = dict(dim=50, tokens=2, injection="cross_attn")
  return m


def micro_config(stage: int, batch_size: int = 8, num_frames: int = 4) -> ml_collections.ConfigDict:
  """`configs/synthetic_stage{1,2}.py` with the micro model, 16x16 data, no previews, small checkpoints."""
  config = (synthetic_stage1 if stage == 1 else synthetic_stage2).get_config()
  config.model = micro_model()
  config.data.resolution = 16
  config.data.batch_size = batch_size
  for s in config.data.sources:
    s["clip_frames"] = 12
  if stage == 2:
    config.num_frames = config.data.num_frames = num_frames
  config.train.preview_every = 0
  config.train.log_every = 5
  config.train.checkpoint_every = 5
  config.train.async_checkpoints = False
  return config


def get_config(stage: str = "1") -> ml_collections.ConfigDict:
  """For `--config=tests/train_configs.py:1` (or `:2`) on the command line."""
  return micro_config(int(stage))
