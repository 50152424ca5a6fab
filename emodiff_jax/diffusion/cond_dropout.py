"""Condition dropout for classifier-free guidance (Ho & Salimans 2022) over the three conditions.

Each condition is dropped independently per example with its own rate, so the model sees every subset of
conditions (needed for the multi-condition guidance at sampling time). What "dropped" means per condition:

- `reference`: the reference *latent* fed to the ReferenceNet is replaced by zeros (`NULL_VALUE`), so the
  extra keys/values that the backbone's self-attentions receive are the ReferenceNet features of a null
  image, a fixed "no identity" context the model learns. Zeroing the features themselves would be wrong:
  concatenated zero keys still take softmax mass (`exp(q . 0) = 1`) and dilute the attention.
- `audio`: the audio tokens (wav2vec2 features entering the audio projection) are replaced by zeros.
- `expression`: the per-frame FLAME expression vector is replaced by zeros, i.e. the FLAME neutral face.

All three use zeros here; `apply_drop` also accepts a learned null embedding if a model keeps one.
"""

from __future__ import annotations

import zlib
from typing import Mapping, Union

import jax
import jax.numpy as jnp

Array = jax.Array
CONDITIONS = ('reference', 'audio', 'expression')
NULL_VALUE = {'reference': 0.0, 'audio': 0.0, 'expression': 0.0}


def drop_mask(rng: Array, batch: int, rates: Mapping[str, float]) -> dict[str, Array]:
  """`{name: bool[batch]}`, True where that condition is dropped for that example.

  Each condition draws from `fold_in(rng, crc32(name))`, so its mask depends only on `rng` and its own rate
  (not on the other conditions present). Rate 0 never drops, rate 1 always drops.
  """
  out = {}
  for name, rate in rates.items():
    if not 0.0 <= rate <= 1.0:
      raise ValueError(f'cond_dropout.py: drop rate of {name!r} must be in [0, 1], got {rate}')
    key = jax.random.fold_in(rng, zlib.crc32(name.encode()))
    out[name] = jax.random.uniform(key, (batch,)) < rate
  return out


def apply_drop(x: Array, dropped: Array, null: Union[float, Array] = 0.0) -> Array:
  """Replaces the examples of `x [B, ...]` where `dropped [B]` is True by `null`.

  `null` is a scalar or an array broadcastable to `x.shape[1:]` (e.g. a learned null embedding `[L, D]`).
  """
  if dropped.shape != x.shape[:1]:
    raise ValueError(f'cond_dropout.py: mask shape {dropped.shape} does not match batch of x {x.shape}')
  mask = dropped.reshape(dropped.shape + (1,) * (x.ndim - 1))
  return jnp.where(mask, jnp.asarray(null, x.dtype), x)
