"""Query-chunked softmax attention with a hand-written backward pass (memory-efficient attention,
Rabe & Staats 2021, arXiv 2112.05682; backward as in FlashAttention, Dao et al. 2022, Alg. 4).

The forward pass maps over query chunks; the backward pass recomputes each chunk's probabilities
instead of storing the `[B, H, L, L]` matrix, and accumulates dK and dV in a scan. On XLA:CPU, where
attention is memory-bound, this halves the backward time of plain matmul attention at 1024 tokens
(`benchmarks/unet_step.py`). Layout `[B, H, L, Dh]`.
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


def _probs(qc: Array, k: Array) -> Array:
  scores = jnp.matmul(qc, jnp.swapaxes(k, -1, -2)) * (qc.shape[-1] ** -0.5)
  return jax.nn.softmax(scores.astype(jnp.float32), axis=-1).astype(qc.dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def chunked_attention(q: Array, k: Array, v: Array, chunk: int = CHUNK) -> Array:
  """softmax(q k^T / sqrt(Dh)) v for `q [B, H, Lq, Dh]`, `k, v [B, H, Lk, Dh]`; Lq divisible by `chunk`."""
  return _forward(q, k, v, chunk)[0]


def _forward(q: Array, k: Array, v: Array, chunk: int):
  out = _unchunk(jax.lax.map(lambda qc: jnp.matmul(_probs(qc, k), v), _chunks(q, chunk)))
  return out, (q, k, v, out)


def _backward(chunk: int, residuals, d_out: Array):
  q, k, v, out = residuals
  scale = q.shape[-1] ** -0.5
  delta = jnp.sum(d_out * out, axis=-1, keepdims=True)  # rowsum(dP * P) per query

  def step(carry, xs):
    dk, dv = carry
    qc, doc, dc = xs
    p = _probs(qc, k)
    dv = dv + jnp.matmul(jnp.swapaxes(p, -1, -2), doc)
    ds = p * (jnp.matmul(doc, jnp.swapaxes(v, -1, -2)) - dc) * scale
    dk = dk + jnp.matmul(jnp.swapaxes(ds, -1, -2), qc)
    return (dk, dv), jnp.matmul(ds, k)

  (dk, dv), dq = jax.lax.scan(step, (jnp.zeros_like(k), jnp.zeros_like(v)),
                              (_chunks(q, chunk), _chunks(d_out, chunk), _chunks(delta, chunk)))
  return _unchunk(dq), dk, dv


chunked_attention.defvjp(_forward, _backward)
