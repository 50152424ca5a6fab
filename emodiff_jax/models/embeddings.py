"""Timestep embeddings of the diffusion UNets (DDPM, Ho et al. 2020; diffusers `Timesteps` and
`TimestepEmbedding`)."""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from emodiff_jax.models.layers import Dense

Array = jax.Array


def timestep_embedding(t: Array, dim: int, *, flip_sin_to_cos: bool = True, freq_shift: float = 0.0,
                       max_period: float = 10000.0) -> Array:
  """Sinusoidal embedding of (possibly fractional) timesteps `[N]` -> `[N, dim]` float32.

  Frequencies `exp(-log(max_period) * i / (dim/2 - freq_shift))`; `[sin, cos]`, or `[cos, sin]` when
  `flip_sin_to_cos` (SD-1.5 uses flip=True, shift=0). Odd `dim` is zero-padded by one column.
  """
  half = dim // 2
  exponent = -math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / (half - freq_shift)
  args = jnp.asarray(t, jnp.float32)[:, None] * jnp.exp(exponent)[None, :]
  emb = jnp.concatenate([jnp.cos(args), jnp.sin(args)] if flip_sin_to_cos else [jnp.sin(args), jnp.cos(args)], -1)
  if dim % 2:
    emb = jnp.pad(emb, ((0, 0), (0, 1)))
  return emb


class TimestepEmbedding(nn.Module):
  """`linear_1` -> SiLU -> `linear_2`: `[N, Cin]` -> `[N, features]`."""

  features: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    x = Dense(self.features, dtype=self.dtype, name="linear_1")(x)
    return Dense(self.features, dtype=self.dtype, name="linear_2")(nn.silu(x))
