"""The SD-1.5-style UNet: diffusers `UNet2DConditionModel` on channels-last frames, optionally the
spatio-temporal backbone (motion modules, reference / audio / expression attention; see `UNetConfig`).

Param layout = diffusers' module tree with numeric segments joined by '_': `conv_in`,
`time_embedding.{linear_1,linear_2}`, `down_blocks_i`, `mid_block`, `up_blocks_i`, `conv_norm_out`,
`conv_out`; backbone extensions add `motion_modules_j`, `attn_audio`/`norm_audio`, `attn_expr`/`norm_expr`.
"""

from __future__ import annotations

from typing import Any, Optional, Union

import flax.linen as nn
import jax
import jax.numpy as jnp

from emodiff_jax.models.embeddings import TimestepEmbedding, timestep_embedding
from emodiff_jax.models.layers import GroupNorm
from emodiff_jax.models.resnet import conv3x3
from emodiff_jax.models.unet_blocks import DownBlock, MidBlock, UpBlock
from emodiff_jax.models.unet_config import UNetConfig

Array = jax.Array
Features = dict[str, Any]

_DOWN = {"CrossAttnDownBlock2D": True, "DownBlock2D": False}
_UP = {"CrossAttnUpBlock2D": True, "UpBlock2D": False}


def _block_kind(table: dict[str, bool], name: str) -> bool:
  if name not in table:
    raise ValueError(f"unsupported block type {name!r}; expected one of {sorted(table)}")
  return table[name]


class UNet(nn.Module):
  """Noise-prediction UNet on frames `[N, H, W, C]`, N = B*T (batch-major, n = b*T + t)."""

  config: UNetConfig
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, sample: Array, timesteps: Union[Array, int, float], encoder_hidden_states: Array, *,
               num_frames: int = 1, reference: Optional[Features] = None, audio_context: Optional[Array] = None,
               expression_context: Optional[Array] = None, added_time_embedding: Optional[Array] = None,
               return_reference_features: bool = False) -> Union[Array, tuple[Array, Features]]:
    """Predicts the noise (or v) for `sample`.

    Args:
      sample: `[N, H, W, in_channels]`; H and W divisible by 2**(number of blocks - 1).
      timesteps: `[N]` or a scalar.
      encoder_hidden_states: `[N, L, cross_attention_dim]`.
      num_frames: T, used by the motion modules and to repeat reference features over frames.
      reference: ReferenceNet features `{'down_blocks_0': {'attentions_0': {'transformer_blocks_0': [B, L, C]}}}`.
      audio_context: `[N, La, audio_context_dim]` audio tokens per frame.
      expression_context: `[N, Le, expression_context_dim]` expression tokens per frame.
      added_time_embedding: `[N, 4 * block_out_channels[0]]` added to the time embedding that every ResNet
        block reads (the slot of diffusers' class embedding).
      return_reference_features: also return the normed inputs of every `attn1` (same nesting).

    Returns:
      `[N, H, W, out_channels]`, and the feature dict when asked.
    """
    c = self.config
    n = sample.shape[0]
    timesteps = jnp.broadcast_to(jnp.asarray(timesteps), (n,))
    temb = timestep_embedding(timesteps, c.block_out_channels[0], flip_sin_to_cos=c.flip_sin_to_cos,
                              freq_shift=c.freq_shift).astype(self.dtype)
    temb = TimestepEmbedding(4 * c.block_out_channels[0], self.dtype, name="time_embedding")(temb)
    if added_time_embedding is not None:
      temb = temb + added_time_embedding.astype(self.dtype)
    cond = dict(audio_context=audio_context, expression_context=expression_context)
    sub = lambda name: None if reference is None else reference.get(name, {})  # {}: the block's error names it
    remat = lambda cls: cls if c.remat_policy is None else nn.remat(cls, policy=c.checkpoint_policy)
    blocks = dict(dtype=self.dtype, num_frames=num_frames)
    features: Features = {}

    x = conv3x3(c.block_out_channels[0], "conv_in", self.dtype)(sample.astype(self.dtype))
    skips = [x]
    nblocks = len(c.block_out_channels)
    for i, kind in enumerate(c.down_block_types):
      name = f"down_blocks_{i}"
      x, block_skips, features[name] = remat(DownBlock)(
          c, i, c.block_out_channels[i], c.layers[i], _block_kind(_DOWN, kind), **blocks,
          add_downsample=i < nblocks - 1, name=name)(x, temb, encoder_hidden_states, cond, sub(name))
      skips.extend(block_skips)

    x, features["mid_block"] = remat(MidBlock)(c, nblocks - 1, c.block_out_channels[-1], 1, True, **blocks,
                                              name="mid_block")(x, temb, encoder_hidden_states, cond, sub("mid_block"))

    for i, kind in enumerate(c.up_block_types):
      name = f"up_blocks_{i}"
      index = nblocks - 1 - i
      num_layers = c.layers[index] + 1
      block_skips, skips = tuple(skips[-num_layers:]), skips[:-num_layers]
      x, features[name] = remat(UpBlock)(
          c, index, c.block_out_channels[index], num_layers, _block_kind(_UP, kind), **blocks,
          add_upsample=i < nblocks - 1, name=name)(x, block_skips, temb, encoder_hidden_states, cond, sub(name))

    x = GroupNorm(c.norm_num_groups, epsilon=c.norm_eps, dtype=self.dtype, name="conv_norm_out")(x)
    x = conv3x3(c.out_channels, "conv_out", self.dtype)(nn.silu(x))
    features = {k: v for k, v in features.items() if v}
    return (x, features) if return_reference_features else x
