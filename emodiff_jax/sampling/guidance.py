"""Classifier-free guidance with one scale per condition (Ho & Salimans 2022), conditions added in order.

With conditions added one at a time, reference (r), then audio (a), then expression (e), and the model's
outputs `e_0 = f(x)`, `e_1 = f(x | r)`, `e_2 = f(x | r, a)`, `e_3 = f(x | r, a, e)`, the guided output is

    out = e_0 + s_r (e_1 - e_0) + s_a (e_2 - e_1) + s_e (e_3 - e_2)

(the compositional form of InstructPix2Pix, Brooks et al. 2023, Eq. 3, extended to three conditions; Hallo,
Xu et al. 2024, guides its audio and reference the same way). Rearranged it is a weighted sum
`out = sum_k c_k e_k` with `c_0 = 1 - s_r`, `c_1 = s_r - s_a`, `c_2 = s_a - s_e`, `c_3 = s_e`, whose
weights add up to 1. Passes whose weight is 0 are never run: all scales 1 needs only the conditional
pass, `s_r = 1` drops the unconditional one. The remaining passes go through the backbone as one batch.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

Array = jax.Array
ORDER = ("reference", "audio", "expression")


@dataclasses.dataclass(frozen=True)
class Guidance:
  """Guidance scales per condition; 1 is no guidance (the conditional pass alone), 0 ignores it."""

  reference: float = 1.0
  audio: float = 1.0
  expression: float = 1.0

  def passes(self) -> tuple[tuple[tuple[bool, bool, bool], float], ...]:
    """The passes to run: `((uses_reference, uses_audio, uses_expression), weight)` with weight != 0."""
    s = (self.reference, self.audio, self.expression)
    weights = (1.0 - s[0], s[0] - s[1], s[1] - s[2], s[2])
    return tuple((tuple(i < k for i in range(3)), w) for k, w in enumerate(weights) if w != 0.0)


def combine(outputs: Array, weights: tuple[float, ...]) -> Array:
  """`outputs [P, ...]` of the passes, `weights [P]` -> the guided output `[...]` (float32 sum)."""
  if outputs.shape[0] != len(weights):
    raise ValueError(f"guidance.py: {outputs.shape[0]} pass outputs for {len(weights)} weights")
  w = jnp.asarray(weights, jnp.float32).reshape((-1,) + (1,) * (outputs.ndim - 1))
  return jnp.sum(outputs.astype(jnp.float32) * w, axis=0)
