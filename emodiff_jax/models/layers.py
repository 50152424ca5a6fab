"""`Dense`: `flax.linen.Dense` with the same params, computed as one 2D matmul.

XLA:CPU runs the weight gradient of a dense layer on `[B, L, C]` inputs ~2x slower than on the same
data flattened to `[B*L, C]` (measured 22 vs 9.5 ms forward+backward at [4, 1024, 128] -> 512), so the
leading axes are folded before the matmul. Param names (`kernel`, `bias`) and initialisers match
`nn.Dense`, so checkpoints map the same.
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
