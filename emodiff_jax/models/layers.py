"""`Dense` and `GroupNorm`: the `flax.linen` layers with the same params, computed in shapes XLA:CPU is fast on.

- `Dense`: XLA:CPU runs the weight gradient of a dense layer on `[B, L, C]` inputs ~2x slower than on the
  same data flattened to `[B*L, C]` (measured 22 vs 9.5 ms forward+backward at [4, 1024, 128] -> 512), so
  the leading axes are folded before the matmul.
- `GroupNorm`: `nn.GroupNorm` reduces over `[B, ..., G, C/G]` with the group axis strided; summing each
  channel over the positions first (`[B, N, C]` -> `[B, C]`) and then the channels of a group (`[B, G]`)
  is 1.6-2.4x faster forward+backward on XLA:CPU (1.1 vs 0.6 ms at [4, 32, 32, 64], 32 groups; forward
  alone 3-4x).

Param names (`kernel`, `bias`; `scale`, `bias`) and initialisers match flax's, so checkpoints map the same.
"""

from __future__ import annotations

from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array


class Dense(nn.Module):
  """`[..., Cin]` -> `[..., features]`."""

  features: int
  use_bias: bool = True
  dtype: jnp.dtype = jnp.float32
  kernel_init: Callable = nn.initializers.lecun_normal()

  @nn.compact
  def __call__(self, x: Array) -> Array:
    kernel = self.param("kernel", self.kernel_init, (x.shape[-1], self.features), jnp.float32)
    y = x.reshape(-1, x.shape[-1]).astype(self.dtype) @ kernel.astype(self.dtype)
    if self.use_bias:
      y = y + self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32).astype(self.dtype)
    return y.reshape(x.shape[:-1] + (self.features,))


class GroupNorm(nn.Module):
  """`[B, ..., C]` normalised over all positions and the channels of each of `num_groups` groups.

  Statistics in float32 (mean and mean of squares, as `nn.GroupNorm`'s default fast variance), output in
  `dtype`, learned per-channel `scale` and `bias`.
  """

  num_groups: int = 32
  epsilon: float = 1e-6
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    b, c = x.shape[0], x.shape[-1]
    if c % self.num_groups:
      raise ValueError(f"GroupNorm: {c} channels do not split into {self.num_groups} groups")
    scale = self.param("scale", nn.initializers.ones, (c,), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (c,), jnp.float32)
    xf = x.reshape(b, -1, c).astype(jnp.float32)
    per_group = lambda stat: jnp.mean(stat.reshape(b, self.num_groups, -1), axis=-1)  # [B, C] -> [B, G]
    mean = per_group(jnp.mean(xf, axis=1))
    var = jnp.maximum(per_group(jnp.mean(xf * xf, axis=1)) - mean * mean, 0.0)
    to_channels = lambda g: jnp.repeat(g, c // self.num_groups, axis=-1)[:, None, :]  # [B, G] -> [B, 1, C]
    mul = to_channels(jax.lax.rsqrt(var + self.epsilon)) * scale
    y = xf * mul + (bias - to_channels(mean) * mul)
    return y.reshape(x.shape).astype(self.dtype)
