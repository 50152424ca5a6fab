"""Inference-only layers shared by the metric networks (`inception.py`, `syncnet.py`)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp


class FrozenBatchNorm(nn.Module):
  """BatchNorm with frozen statistics over the last axis `[..., C]`.

  Its params carry PyTorch's names (`weight` -> `scale`, `bias`, `running_mean`, `running_var`), so a
  state dict maps onto them with `convert.torch_state.torch_to_flax` and no renaming.
  """

  eps: float = 1e-5

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    c = x.shape[-1]
    scale = self.param("scale", nn.initializers.ones, (c,))
    bias = self.param("bias", nn.initializers.zeros, (c,))
    mean = self.param("running_mean", nn.initializers.zeros, (c,))
    var = self.param("running_var", nn.initializers.ones, (c,))
    return (x - mean) * (scale * jax.lax.rsqrt(var + self.eps)) + bias


def resize_bilinear(images: jax.Array, height: int, width: int) -> jax.Array:
  """`[B, H, W, C]` -> `[B, height, width, C]`, bilinear with half-pixel centres and no antialiasing:
  PyTorch's `F.interpolate(mode='bilinear', align_corners=False)`."""
  b, h, w, c = images.shape
  if (h, w) == (height, width):
    return images
  scale = jnp.array([height / h, width / w], jnp.float32)
  return jax.image.scale_and_translate(images, (b, height, width, c), (1, 2), scale, jnp.zeros(2, jnp.float32),
                                       method="linear", antialias=False)
