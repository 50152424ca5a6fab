"""Query-chunked softmax attention with a hand-written backward pass (memory-efficient attention,
Rabe & Staats 2021, arXiv 2112.05682; backward as in FlashAttention, Dao et al. 2022, Alg. 4).

The forward pass maps over query chunks and keeps each query's log-sum-exp of the scores; the backward
pass recomputes each chunk's probabilities from it (`exp(s - lse)`, one pass over the scores instead of a
second softmax) instead of storing the `[B, H, L, L]` matrix, and accumulates dK and dV in a scan. On
XLA:CPU, where attention is memory-bound, forward+backward is about 3x faster than plain matmul attention
at 1024 tokens (120 vs 357 ms for 8 heads of 8 channels, batch 4; `benchmarks/unet_step.py` for the whole
UNet). Layout `[B, H, L, Dh]`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

Array = jax.Array
CHUNK = 128


def _chunks(x: Array, c: int) -> Array:
  """`[B, H, L, D]` -> `[L/c, B, H, c, D]`."""
  b, h, l, d = x.shape
  return x.reshape(b, h, l // c, c, d).transpose(2, 0, 1, 3, 4)


def _unchunk(x: Array) -> Array:
  n, b, h, c, d = x.shape
  return x.transpose(1, 2, 0, 3, 4).reshape(b, h, n * c, d)


def _scores(q_scaled: Array, k: Array) -> Array:
  return jnp.matmul(q_scaled, jnp.swapaxes(k, -1, -2)).astype(jnp.float32)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def chunked_attention(q: Array, k: Array, v: Array, chunk: int = CHUNK) -> Array:
  """softmax(q k^T / sqrt(Dh)) v for `q [B, H, Lq, Dh]`, `k, v [B, H, Lk, Dh]`; Lq divisible by `chunk`."""
  return _forward(q, k, v, chunk)[0]


def _forward(q: Array, k: Array, v: Array, chunk: int):
  """Returns the output `[B, H, Lq, Dh]` and the residuals, with the scores' log-sum-exp `[B, H, Lq, 1]`."""
  scale = q.shape[-1] ** -0.5

  def attend(qc: Array) -> tuple[Array, Array]:
    s = _scores(qc * scale, k)
    m = jnp.max(s, axis=-1, keepdims=True)
    e = jnp.exp(s - m)
    total = jnp.sum(e, axis=-1, keepdims=True)
    return (jnp.matmul(e.astype(v.dtype), v) / total).astype(q.dtype), m + jnp.log(total)

  out, lse = jax.lax.map(attend, _chunks(q, chunk))
  out = _unchunk(out)
  return out, (q, k, v, out, _unchunk(lse))


def _backward(chunk: int, residuals, d_out: Array):
  q, k, v, out, lse = residuals
  scale = q.shape[-1] ** -0.5
  delta = jnp.sum(d_out * out, axis=-1, keepdims=True)  # rowsum(dP * P) per query

  def step(carry, xs):
    dk, dv = carry
    qc, doc, dc, lc = xs
    qs = qc * scale
    p = jnp.exp(_scores(qs, k) - lc).astype(q.dtype)
    dv = dv + jnp.matmul(jnp.swapaxes(p, -1, -2), doc)
    ds = p * (jnp.matmul(doc, jnp.swapaxes(v, -1, -2)) - dc)
    dk = dk + jnp.matmul(jnp.swapaxes(ds, -1, -2), qs)
    return (dk, dv), jnp.matmul(ds, k) * scale

  (dk, dv), dq = jax.lax.scan(step, (jnp.zeros_like(k), jnp.zeros_like(v)),
                              tuple(_chunks(x, chunk) for x in (q, d_out, delta, lse)))
  return _unchunk(dq), dk, dv


chunked_attention.defvjp(_forward, _backward)
