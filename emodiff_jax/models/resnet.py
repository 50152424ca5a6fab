"""ResNet building blocks shared by the UNets and the VAE (diffusers `ResnetBlock2D`, `Downsample2D`,
`Upsample2D`), channels-last.

Layout follows the SD-1.5 / diffusers modules so that checkpoint keys map one to one
(`norm1`, `conv1`, `time_emb_proj`, `norm2`, `conv2`, `conv_shortcut`).
"""

from __future__ import annotations

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array


def conv3x3(features: int, name: str, dtype: jnp.dtype, stride: int = 1, padding: int = 1) -> nn.Conv:
  """A 3x3 convolution with PyTorch-style symmetric padding."""
  return nn.Conv(features, (3, 3), strides=(stride, stride), padding=((padding, padding), (padding, padding)),
                 dtype=dtype, name=name)


class ResnetBlock2D(nn.Module):
  """GroupNorm-SiLU-Conv x2 with an optional timestep projection and a 1x1 shortcut.

  Attributes:
    out_channels: output channels (defaults to the input's).
    groups: GroupNorm groups.
    eps: GroupNorm epsilon.
    output_scale_factor: the residual sum is divided by it (1.0 in SD).
    dtype: compute dtype.
  """

  out_channels: Optional[int] = None
  groups: int = 32
  eps: float = 1e-6
  output_scale_factor: float = 1.0
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, temb: Optional[Array] = None) -> Array:
    """x `[N, H, W, Cin]`, temb `[N, Ct]` or None -> `[N, H, W, Cout]`."""
    out_ch = self.out_channels or x.shape[-1]
    h = nn.GroupNorm(self.groups, epsilon=self.eps, dtype=self.dtype, name="norm1")(x)
    h = conv3x3(out_ch, "conv1", self.dtype)(nn.silu(h))
    if temb is not None:
      h = h + nn.Dense(out_ch, dtype=self.dtype, name="time_emb_proj")(nn.silu(temb))[:, None, None, :]
    h = nn.GroupNorm(self.groups, epsilon=self.eps, dtype=self.dtype, name="norm2")(h)
    h = conv3x3(out_ch, "conv2", self.dtype)(nn.silu(h))
    if x.shape[-1] != out_ch:
      x = nn.Conv(out_ch, (1, 1), dtype=self.dtype, name="conv_shortcut")(x)
    return (x + h) / self.output_scale_factor


class Downsample2D(nn.Module):
  """Stride-2 3x3 convolution. `padding=0` pads (0, 1) on the bottom/right first, as the SD VAE does."""

  padding: int = 1
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    """`[N, H, W, C]` -> `[N, H/2, W/2, C]`."""
    if self.padding == 0:
      x = jnp.pad(x, ((0, 0), (0, 1), (0, 1), (0, 0)))
    return conv3x3(x.shape[-1], "conv", self.dtype, stride=2, padding=self.padding)(x)


class Upsample2D(nn.Module):
  """Nearest-neighbour x2 upsampling followed by a 3x3 convolution."""

  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    """`[N, H, W, C]` -> `[N, 2H, 2W, C]`."""
    x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
    return conv3x3(x.shape[-1], "conv", self.dtype)(x)
