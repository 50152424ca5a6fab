"""AnimateDiff motion modules (Guo et al. 2023, arXiv 2307.04725) in diffusers' `MotionAdapter` layout.

A motion module is a temporal transformer inserted after the spatial layers of a UNet block: every
spatial position attends over the T frames of its clip. Layout of diffusers `AnimateDiffTransformer3D`:
`norm` (GroupNorm over C x T x H x W of each clip), `proj_in`, `transformer_blocks_k` (`norm1`, `attn1`,
`norm2`, `attn2`: both temporal self-attention with a sinusoidal position encoding added to the normed
input; `norm3`, `ff` GEGLU), `proj_out` (zero-initialised, so a fresh module is the identity).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping, Optional, Union

import flax.linen as nn
import jax
import jax.numpy as jnp

from emodiff_jax.models.layers import Dense, GroupNorm
import numpy as np

from emodiff_jax.models.attention import Attention
from emodiff_jax.models.transformer_2d import FeedForward

Array = jax.Array
IntOrTuple = Union[int, tuple[int, ...]]


@dataclasses.dataclass(frozen=True)
class MotionConfig:
  """Motion-module hyper-parameters (diffusers `MotionAdapter` config; defaults = AnimateDiff v1.5).

  `layers_per_block` counts modules per down block; up blocks get one more, as in diffusers.
  Per-block tuples are in down-block order.
  """

  num_attention_heads: IntOrTuple = 8
  layers_per_block: IntOrTuple = 2
  transformer_layers_per_block: IntOrTuple = 1
  mid_block_layers: int = 1
  mid_transformer_layers_per_block: IntOrTuple = 1
  norm_num_groups: int = 32
  max_seq_length: int = 32
  use_mid_block: bool = True

  def _at(self, value: IntOrTuple, i: int) -> int:
    return value if isinstance(value, int) else value[i]

  def heads(self, i: int) -> int:
    return self._at(self.num_attention_heads, i)

  def layers(self, i: int) -> int:
    return self._at(self.layers_per_block, i)

  def transformer_layers(self, i: int) -> int:
    return self._at(self.transformer_layers_per_block, i)

  def mid_transformer_layers(self, j: int) -> int:
    return self._at(self.mid_transformer_layers_per_block, j)

  @classmethod
  def from_diffusers(cls, cfg: Mapping[str, Any]) -> "MotionConfig":
    """From a diffusers `MotionAdapter` config.json dict."""
    if cfg.get("conv_in_channels"):
      raise ValueError("MotionAdapter with conv_in_channels (SparseCtrl/PIA inputs) is not supported")
    t = lambda v: tuple(v) if isinstance(v, list) else v
    return cls(
        num_attention_heads=t(cfg.get("motion_num_attention_heads", 8)),
        layers_per_block=t(cfg.get("motion_layers_per_block", 2)),
        transformer_layers_per_block=t(cfg.get("motion_transformer_layers_per_block", 1)),
        mid_block_layers=cfg.get("motion_mid_block_layers_per_block", 1),
        mid_transformer_layers_per_block=t(cfg.get("motion_transformer_layers_per_mid_block", 1)),
        norm_num_groups=cfg.get("motion_norm_num_groups", 32),
        max_seq_length=cfg.get("motion_max_seq_length", 32),
        use_mid_block=cfg.get("use_motion_mid_block", True),
    )


def sinusoidal_positions(length: int, dim: int) -> np.ndarray:
  """`[length, dim]` table: even channels sin(p w_i), odd channels cos(p w_i), w_i = 10000^(-2i/dim)."""
  position = np.arange(length, dtype=np.float32)[:, None]
  freq = np.exp(np.arange(0, dim, 2, dtype=np.float32) * (-math.log(10000.0) / dim))
  table = np.zeros((length, dim), np.float32)
  table[:, 0::2] = np.sin(position * freq)
  table[:, 1::2] = np.cos(position * freq)
  return table


class TemporalTransformerBlock(nn.Module):
  """Two temporal self-attentions with position encoding, then GEGLU; `[M, T, C]` -> `[M, T, C]`."""

  heads: int
  dim_head: int
  max_seq_length: int = 32
  implementation: Optional[str] = None
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    t, c = x.shape[-2:]
    if t > self.max_seq_length:
      raise ValueError(f"{t} frames exceed the motion module's max_seq_length {self.max_seq_length}")
    pos = jnp.asarray(sinusoidal_positions(self.max_seq_length, c)[:t], x.dtype)
    ln = lambda name: nn.LayerNorm(epsilon=1e-5, dtype=self.dtype, name=name)
    for name, norm in (("attn1", "norm1"), ("attn2", "norm2")):
      x = x + Attention(self.heads, self.dim_head, implementation=self.implementation, dtype=self.dtype,
                        name=name)(ln(norm)(x) + pos)
    return x + FeedForward(dtype=self.dtype, name="ff")(ln("norm3")(x))


class TemporalTransformer(nn.Module):
  """One AnimateDiff motion module: `[B*T, H, W, C]` -> `[B*T, H, W, C]` (residual included)."""

  num_attention_heads: int
  num_layers: int = 1
  norm_num_groups: int = 32
  max_seq_length: int = 32
  implementation: Optional[str] = None
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, num_frames: int) -> Array:
    n, h, w, c = x.shape
    b, t = n // num_frames, num_frames
    # GroupNorm statistics over (T, H, W) of each clip, as diffusers normalises [B, C, T, H, W].
    y = GroupNorm(self.norm_num_groups, epsilon=1e-6, dtype=self.dtype, name="norm")(x.reshape(b, t * h, w, c))
    y = y.reshape(b, t, h * w, c).transpose(0, 2, 1, 3).reshape(b * h * w, t, c)
    y = Dense(c, dtype=self.dtype, name="proj_in")(y)
    for k in range(self.num_layers):
      y = TemporalTransformerBlock(self.num_attention_heads, c // self.num_attention_heads, self.max_seq_length,
                                   self.implementation, self.dtype, name=f"transformer_blocks_{k}")(y)
    y = Dense(c, dtype=self.dtype, kernel_init=nn.initializers.zeros, name="proj_out")(y)
    y = y.reshape(b, h * w, t, c).transpose(0, 2, 1, 3).reshape(n, h, w, c)
    return x + y
