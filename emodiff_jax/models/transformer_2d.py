"""Spatial transformer of the SD UNets (diffusers `Transformer2DModel`, `BasicTransformerBlock`,
`FeedForward` with GEGLU), extended with the backbone's conditions.

Backbone extensions of `BasicTransformerBlock` (Hu et al. 2023 "Animate Anyone" reference attention;
EMO/EMOdiffhead audio and expression attention), each off unless configured:
- reference attention: ReferenceNet features of the same layer `[B, L, C]` are repeated over the T
  frames and concatenated to the keys/values of the spatial self-attention `attn1`;
- `norm_audio` + `attn_audio`: cross-attention to per-frame audio tokens, after `attn2`;
- `norm_expr` + `attn_expr`: cross-attention to per-frame expression tokens, after the audio one.
New attention outputs are zero-initialised, so a fresh backbone equals the 2D UNet.
"""

from __future__ import annotations

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from emodiff_jax.models.layers import Dense, GroupNorm

from emodiff_jax.models.attention import Attention

Array = jax.Array
Features = dict[str, Any]


def reference_entry(reference: Optional[Features], name: str, owner: str) -> Any:
  """`reference[name]` (None without reference), with a clear error when the feature dict lacks it."""
  if reference is None:
    return None
  if name not in reference:
    raise ValueError(f"reference features have no {name!r} for {owner} (they have {sorted(reference)}); "
                     "were they computed by a ReferenceNet of the same UNet layout?")
  return reference[name]


class GEGLU(nn.Module):
  """`proj` to 2x`features`, then `hidden * gelu(gate)` (Shazeer 2020)."""

  features: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    hidden, gate = jnp.split(Dense(2 * self.features, dtype=self.dtype, name="proj")(x), 2, axis=-1)
    return hidden * nn.gelu(gate, approximate=False)


class FeedForward(nn.Module):
  """GEGLU feed-forward `net_0` (4x inner) -> `net_2`: `[..., C]` -> `[..., C]`."""

  mult: int = 4
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    h = GEGLU(x.shape[-1] * self.mult, dtype=self.dtype, name="net_0")(x)
    return Dense(x.shape[-1], dtype=self.dtype, name="net_2")(h)


class BasicTransformerBlock(nn.Module):
  """Self-attention, cross-attention, [audio, expression attention], feed-forward; pre-LayerNorm.

  Attributes:
    heads, dim_head: attention shape.
    reference_attention: accept ReferenceNet features in `attn1`.
    audio_context_dim / expression_context_dim: create the audio / expression attention when set.
  """

  heads: int
  dim_head: int
  reference_attention: bool = False
  audio_context_dim: Optional[int] = None
  expression_context_dim: Optional[int] = None
  implementation: Optional[str] = None
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, context: Array, *, num_frames: int = 1, reference: Optional[Array] = None,
               audio_context: Optional[Array] = None, expression_context: Optional[Array] = None
               ) -> tuple[Array, Array]:
    """x `[N, L, C]` (N = B*T), context `[N, Lc, Dc]`, reference `[B, Lr, C]`.

    Returns the output `[N, L, C]` and the normed input of `attn1` `[N, L, C]` (the feature a
    ReferenceNet hands to the backbone's matching layer).
    """
    ln = lambda name: nn.LayerNorm(epsilon=1e-5, dtype=self.dtype, name=name)
    attn = lambda name, zero=False: Attention(self.heads, self.dim_head, zero_init_out=zero,
                                              implementation=self.implementation, dtype=self.dtype, name=name)
    h = ln("norm1")(x)
    extra = None
    if reference is not None:
      if not self.reference_attention:
        raise ValueError("reference features given to a block built without reference_attention")
      if reference.shape[0] * num_frames != x.shape[0]:
        raise ValueError(f"reference features {reference.shape} for {x.shape[0]} frames of {num_frames} per clip: "
                         "need one entry per clip")
      extra = jnp.repeat(reference, num_frames, axis=0)
    x = x + attn("attn1")(h, extra_kv=extra)
    x = x + attn("attn2")(ln("norm2")(x), context)
    if self.audio_context_dim is not None and audio_context is not None:
      x = x + attn("attn_audio", zero=True)(ln("norm_audio")(x), audio_context)
    if self.expression_context_dim is not None and expression_context is not None:
      x = x + attn("attn_expr", zero=True)(ln("norm_expr")(x), expression_context)
    x = x + FeedForward(dtype=self.dtype, name="ff")(ln("norm3")(x))
    return x, h


class Transformer2DModel(nn.Module):
  """GroupNorm, `proj_in` (1x1 conv or linear), `transformer_blocks_k`, `proj_out`, residual."""

  heads: int
  dim_head: int
  num_layers: int = 1
  norm_num_groups: int = 32
  use_linear_projection: bool = False
  reference_attention: bool = False
  audio_context_dim: Optional[int] = None
  expression_context_dim: Optional[int] = None
  implementation: Optional[str] = None
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, context: Array, *, num_frames: int = 1, reference: Optional[Features] = None,
               audio_context: Optional[Array] = None, expression_context: Optional[Array] = None
               ) -> tuple[Array, Features]:
    """x `[N, H, W, C]` -> (`[N, H, W, C]`, {'transformer_blocks_k': attn1 input `[N, H*W, C]`})."""
    n, hgt, wid, c = x.shape
    inner = self.heads * self.dim_head
    proj = lambda name, f: (Dense(f, dtype=self.dtype, name=name) if self.use_linear_projection
                            else nn.Conv(f, (1, 1), dtype=self.dtype, name=name))
    h = GroupNorm(self.norm_num_groups, epsilon=1e-6, dtype=self.dtype, name="norm")(x)
    h = proj("proj_in", inner)(h).reshape(n, hgt * wid, inner)
    features: Features = {}
    for k in range(self.num_layers):
      name = f"transformer_blocks_{k}"
      h, features[name] = BasicTransformerBlock(
          self.heads, self.dim_head, self.reference_attention, self.audio_context_dim,
          self.expression_context_dim, self.implementation, self.dtype, name=name)(
              h, context, num_frames=num_frames, reference=reference_entry(reference, name, self.name),
              audio_context=audio_context, expression_context=expression_context)
    h = proj("proj_out", c)(h.reshape(n, hgt, wid, inner))
    return h + x, features
