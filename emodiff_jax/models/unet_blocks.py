"""Down, mid and up blocks of the SD-1.5 UNet (diffusers `CrossAttnDownBlock2D`, `DownBlock2D`,
`UNetMidBlock2DCrossAttn`, `CrossAttnUpBlock2D`, `UpBlock2D`), optionally with AnimateDiff motion modules
at the positions of diffusers' `UNetMotionModel` blocks (`motion_modules_j` after each resnet[+attention]
pair; in the mid block between each attention and the following resnet).

Every block takes `x [N, H, W, C]` with N = B*T frames (`num_frames` = T, a static attribute) and
`cond = {'audio_context': ..., 'expression_context': ...}` (arrays or None), and returns, besides its
output, the features entering each spatial self-attention
(`{'attentions_j': {'transformer_blocks_k': [N, H*W, C]}}`).
"""

from __future__ import annotations

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from emodiff_jax.models.motion_module import TemporalTransformer
from emodiff_jax.models.resnet import Downsample2D, ResnetBlock2D, Upsample2D
from emodiff_jax.models.transformer_2d import Transformer2DModel, reference_entry
from emodiff_jax.models.unet_config import UNetConfig

Array = jax.Array
Features = dict[str, Any]


class _Block(nn.Module):
  """Shared construction of the layers of one UNet block."""

  config: UNetConfig
  index: int  # Position of the block's channels in `block_out_channels`.
  out_channels: int
  num_layers: int
  cross_attention: bool
  dtype: jnp.dtype = jnp.float32
  num_frames: int = 1

  def resnet(self, j: int) -> ResnetBlock2D:
    c = self.config
    return ResnetBlock2D(self.out_channels, c.norm_num_groups, c.norm_eps, dtype=self.dtype, name=f"resnets_{j}")

  def attention(self, j: int, heads: int, layers: int) -> Transformer2DModel:
    c = self.config
    return Transformer2DModel(
        heads, self.out_channels // heads, layers, c.norm_num_groups, c.use_linear_projection,
        c.reference_attention, c.audio_context_dim, c.expression_context_dim, c.attention_impl, self.dtype,
        name=f"attentions_{j}")

  def motion(self, j: int, heads: int, layers: int) -> TemporalTransformer:
    m = self.config.motion
    return TemporalTransformer(heads, layers, m.norm_num_groups, m.max_seq_length, self.config.attention_impl,
                               self.dtype, name=f"motion_modules_{j}")

  def attend(self, j: int, x: Array, context: Array, cond: dict, reference: Optional[Features],
             features: Features) -> Array:
    """Runs `attentions_j`, recording its attn1 features under its name."""
    c, i = self.config, self.index
    name = f"attentions_{j}"
    x, features[name] = self.attention(j, c.heads[i], c.transformer_layers[i])(
        x, context, num_frames=self.num_frames, reference=reference_entry(reference, name, self.name),
        audio_context=cond["audio_context"], expression_context=cond["expression_context"])
    return x

  def temporal(self, j: int, x: Array, layers: int) -> Array:
    """Runs `motion_modules_j` over the frames of each clip."""
    return self.motion(j, self.config.motion.heads(self.index), layers)(x, self.num_frames)


class DownBlock(_Block):
  """`CrossAttnDownBlock2D` (cross_attention=True) or `DownBlock2D`, + `downsamplers_0` unless last."""

  add_downsample: bool = True

  @nn.compact
  def __call__(self, x: Array, temb: Array, context: Array, cond: dict, reference: Optional[Features] = None
               ) -> tuple[Array, tuple[Array, ...], Features]:
    """Returns (output, skip activations for the up path, attn1 features)."""
    c, i = self.config, self.index
    skips, features = [], {}
    for j in range(self.num_layers):
      x = self.resnet(j)(x, temb)
      if self.cross_attention:
        x = self.attend(j, x, context, cond, reference, features)
      if c.motion is not None:
        x = self.temporal(j, x, c.motion.transformer_layers(i))
      skips.append(x)
    if self.add_downsample:
      x = Downsample2D(c.downsample_padding, self.dtype, name="downsamplers_0")(x)
      skips.append(x)
    return x, tuple(skips), features


class MidBlock(_Block):
  """`UNetMidBlock2DCrossAttn`: resnet, then (attention, [motion], resnet) x num_layers."""

  @nn.compact
  def __call__(self, x: Array, temb: Array, context: Array, cond: dict, reference: Optional[Features] = None
               ) -> tuple[Array, Features]:
    c = self.config
    features: Features = {}
    x = self.resnet(0)(x, temb)
    use_motion = c.motion is not None and c.motion.use_mid_block
    for j in range(self.num_layers):
      x = self.attend(j, x, context, cond, reference, features)
      if use_motion:
        x = self.temporal(j, x, c.motion.mid_transformer_layers(j))
      x = self.resnet(j + 1)(x, temb)
    return x, features


class UpBlock(_Block):
  """`CrossAttnUpBlock2D` or `UpBlock2D`: concatenates skips, + `upsamplers_0` unless last."""

  add_upsample: bool = True

  @nn.compact
  def __call__(self, x: Array, skips: tuple[Array, ...], temb: Array, context: Array, cond: dict,
               reference: Optional[Features] = None) -> tuple[Array, Features]:
    """`skips` are consumed last-first, one per layer."""
    c, i = self.config, self.index
    features: Features = {}
    for j in range(self.num_layers):
      x = jnp.concatenate([x, skips[-1 - j]], axis=-1)
      x = self.resnet(j)(x, temb)
      if self.cross_attention:
        x = self.attend(j, x, context, cond, reference, features)
      if c.motion is not None:
        x = self.temporal(j, x, c.motion.transformer_layers(i))
    if self.add_upsample:
      x = Upsample2D(self.dtype, name="upsamplers_0")(x)
    return x, features
