"""Multi-head attention: the one place where attention is computed.

Every attention layer in the project (UNet spatial/cross attention, reference attention, audio and
expression cross-attention, AnimateDiff temporal attention, wav2vec2 self-attention) goes through
`dot_product_attention`, so a faster kernel is swapped in by config (`implementation=`):
`"xla"` runs `jax.nn.dot_product_attention`'s XLA path, `"cudnn"` cuDNN's fused attention on GPU,
`"matmul"` plain batched matmuls in `[B, H, L, Dh]` layout, `"chunked"` the same with query chunks and a
recomputing backward pass (`chunked_attention.py`); the last two are the fast ones on XLA:CPU (see
`benchmarks/unet_step.py`). `None` picks per backend: `"chunked"` on CPU (the synthetic stage-2 step 1.06
against 0.84 steps/s with `"xla"`, README), `"xla"` on GPU and TPU.

Parameter names follow diffusers' `Attention` (`to_q`, `to_k`, `to_v`, `to_out_0`) so weight mapping
tables read line by line.
"""

from __future__ import annotations

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from emodiff_jax.models.layers import Dense

from emodiff_jax.models.chunked_attention import CHUNK, chunked_attention

Array = jax.Array


def dot_product_attention(
    q: Array, k: Array, v: Array, *, implementation: Optional[str] = None, bias: Optional[Array] = None
) -> Array:
  """Scaled dot-product attention.

  Args:
    q: queries `[B, Lq, H, Dh]`.
    k: keys `[B, Lk, H, Dh]`.
    v: values `[B, Lk, H, Dh]`.
    implementation: `"xla"`, `"cudnn"` (both `jax.nn.dot_product_attention`; cuDNN computes in bfloat16
      when the inputs are float32), `"matmul"`, `"chunked"`, or `None`: `"chunked"` on CPU, else `"xla"`.
    bias: optional additive bias broadcastable to `[B, H, Lq, Lk]`.

  Returns:
    `[B, Lq, H, Dh]` in the dtype of `q`.
  """
  with jax.named_scope("sdpa"):  # names the kernel's ops in profiles (`benchmarks/op_profile.py`)
    return _attention(q, k, v, implementation, bias)


def _attention(q: Array, k: Array, v: Array, implementation: Optional[str], bias: Optional[Array]) -> Array:
  if implementation is None:
    implementation = "chunked" if jax.default_backend() == "cpu" else "xla"
  if implementation == "matmul":
    return _matmul_attention(q, k, v, bias)
  if implementation == "chunked":
    if bias is not None or q.shape[1] % CHUNK:
      return _matmul_attention(q, k, v, bias)  # short or biased sequences: nothing to save
    qt, kt, vt = (jnp.swapaxes(t, 1, 2) for t in (q, k, v))
    return jnp.swapaxes(chunked_attention(qt, kt, vt), 1, 2)
  if implementation == "xla":
    implementation = None  # jax.nn.dot_product_attention's own default: XLA
  if implementation == "cudnn" and q.dtype == jnp.float32:
    # cuDNN's fused kernel takes float16/bfloat16 only: float32 inputs are attended in bfloat16.
    out = jax.nn.dot_product_attention(q.astype(jnp.bfloat16), k.astype(jnp.bfloat16), v.astype(jnp.bfloat16),
                                       bias=None if bias is None else bias.astype(jnp.bfloat16),
                                       implementation="cudnn")
    return out.astype(q.dtype)
  return jax.nn.dot_product_attention(q, k, v, bias=bias, implementation=implementation)


def _matmul_attention(q: Array, k: Array, v: Array, bias: Optional[Array]) -> Array:
  """Softmax attention as batched matmuls in `[B, H, L, Dh]` layout (faster than the default on XLA:CPU)."""
  qt, kt, vt = (jnp.swapaxes(t, 1, 2) for t in (q, k, v))
  scores = jnp.matmul(qt, jnp.swapaxes(kt, -1, -2)) * (q.shape[-1] ** -0.5)
  if bias is not None:
    scores = scores + bias
  probs = jax.nn.softmax(scores.astype(jnp.float32), axis=-1).astype(v.dtype)
  return jnp.swapaxes(jnp.matmul(probs, vt), 1, 2)


class Attention(nn.Module):
  """diffusers-style multi-head attention on token sequences.

  Attributes:
    heads: number of heads.
    dim_head: channels per head.
    out_dim: output channels (defaults to the query's channels).
    qkv_bias: bias on `to_q/to_k/to_v` (False in diffusers UNets, True in wav2vec2).
    zero_init_out: zero-initialise `to_out_0` so a new layer starts as the identity of its residual.
    implementation: attention kernel, see `dot_product_attention`.
    dtype: compute dtype (params stay float32).
  """

  heads: int
  dim_head: int
  out_dim: Optional[int] = None
  qkv_bias: bool = False
  zero_init_out: bool = False
  implementation: Optional[str] = None
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, context: Optional[Array] = None, extra_kv: Optional[Array] = None) -> Array:
    """Attend from `x` to `context` (self-attention when None).

    Args:
      x: `[B, Lq, C]` queries.
      context: `[B, Lk, Cc]` keys/values source; defaults to `x`.
      extra_kv: `[B, Le, C]` tokens concatenated to the keys/values source along the sequence axis
        (reference attention: ReferenceNet features appended to spatial self-attention).

    Returns:
      `[B, Lq, out_dim or C]`.
    """
    kv = x if context is None else context
    if extra_kv is not None:
      kv = jnp.concatenate([kv, extra_kv.astype(kv.dtype)], axis=1)
    return project_attend(x, kv, heads=self.heads, dim_head=self.dim_head, out_dim=self.out_dim or x.shape[-1],
                          qkv_bias=self.qkv_bias, zero_init_out=self.zero_init_out,
                          implementation=self.implementation, dtype=self.dtype)


def project_attend(x: Array, kv: Array, *, heads: int, dim_head: int, out_dim: int, qkv_bias: bool = False,
                   zero_init_out: bool = False, implementation: Optional[str] = None,
                   dtype: jnp.dtype = jnp.float32) -> Array:
  """`to_q/to_k/to_v` projections, attention and `to_out_0`, created in the calling module's scope.

  Call it from inside a compact method: the Dense layers become children of that module, which lets
  a module that owns other layers too (the VAE's attention with its `group_norm`) keep diffusers' flat
  key names. `x` `[B, Lq, C]`, `kv` `[B, Lk, Ckv]` -> `[B, Lq, out_dim]`.
  """
  inner = heads * dim_head
  dense = lambda n, name, bias: Dense(n, use_bias=bias, dtype=dtype, name=name)
  q = dense(inner, "to_q", qkv_bias)(x)
  k = dense(inner, "to_k", qkv_bias)(kv)
  v = dense(inner, "to_v", qkv_bias)(kv)
  split = lambda t: t.reshape(t.shape[:-1] + (heads, dim_head))
  out = dot_product_attention(split(q), split(k), split(v), implementation=implementation)
  out = out.reshape(out.shape[:-2] + (inner,))
  init = nn.initializers.zeros if zero_init_out else nn.initializers.lecun_normal()
  return Dense(out_dim, dtype=dtype, kernel_init=init, name="to_out_0")(out)
