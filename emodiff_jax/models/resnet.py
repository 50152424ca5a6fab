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

from emodiff_jax.models.layers import GroupNorm

Array = jax.Array


# Feature maps of at most this many positions (a UNet's 2x2 and 4x4 levels) are convolved as one matmul over
# their 3x3 patches: XLA:CPU's convolution is far slower there (forward+backward, 8 frames, this repo's
# 2-core CPU: [8, 2, 2, 512] -> 256 158 vs 9 ms, [8, 2, 2, 256] 47 vs 7 ms, [8, 4, 4, 256] 14 vs 8 ms; at
# [8, 8, 8, 128] the two are even and at 16x16 the convolution wins). Nine copies of so few positions are
# small on any backend.
PATCH_MATMUL_MAX_POSITIONS = 16


class Conv3x3(nn.Module):
  """A 3x3 convolution with PyTorch-style symmetric padding, `[N, H, W, Cin]` -> `[N, H', W', features]`,
  with `nn.Conv`'s params (`kernel [3, 3, Cin, features]`, `bias`, same initialisers and order)."""

  features: int
  stride: int = 1
  padding: int = 1
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    kernel = self.param("kernel", nn.initializers.lecun_normal(), (3, 3, x.shape[-1], self.features), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
    x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
    if x.shape[1] * x.shape[2] <= PATCH_MATMUL_MAX_POSITIONS:
      y = _patch_matmul(x, kernel, self.stride, self.padding)
    else:
      pad = (self.padding, self.padding)
      y = jax.lax.conv_general_dilated(x, kernel, (self.stride, self.stride), (pad, pad),
                                       dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return y + bias.astype(self.dtype)


def _patch_matmul(x: Array, kernel: Array, stride: int, padding: int) -> Array:
  """The convolution as `[N*H'*W', 9*Cin] @ [9*Cin, Cout]` (patches in the kernel's (kh, kw, Cin) order)."""
  n, h, w, c = x.shape
  xp = jnp.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
  ho, wo = (h + 2 * padding - 3) // stride + 1, (w + 2 * padding - 3) // stride + 1
  patches = jnp.concatenate([xp[:, i:i + stride * (ho - 1) + 1:stride, j:j + stride * (wo - 1) + 1:stride]
                             for i in range(3) for j in range(3)], axis=-1)
  return (patches.reshape(-1, 9 * c) @ kernel.reshape(9 * c, -1)).reshape(n, ho, wo, -1)


def conv3x3(features: int, name: str, dtype: jnp.dtype, stride: int = 1, padding: int = 1) -> Conv3x3:
  """`Conv3x3` named `name`."""
  return Conv3x3(features, stride, padding, dtype, name=name)


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
    h = GroupNorm(self.groups, epsilon=self.eps, dtype=self.dtype, name="norm1")(x)
    h = conv3x3(out_ch, "conv1", self.dtype)(nn.silu(h))
    if temb is not None:
      h = h + nn.Dense(out_ch, dtype=self.dtype, name="time_emb_proj")(nn.silu(temb))[:, None, None, :]
    h = GroupNorm(self.groups, epsilon=self.eps, dtype=self.dtype, name="norm2")(h)
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
