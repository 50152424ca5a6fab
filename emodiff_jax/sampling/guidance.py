"""Classifier-free guidance with one scale per condition (Ho & Salimans 2022), conditions added in order.

With conditions added one at a time, reference (r), then audio (a), then expression (e), and the model's
outputs `e_0 = f(x)`, `e_1 = f(x | r)`, `e_2 = f(x | r, a)`, `e_3 = f(x | r, a, e)`, the guided output is

    out = e_0 + s_r (e_1 - e_0) + s_a (e_2 - e_1) + s_e (e_3 - e_2)

(the compositional form of InstructPix2Pix, Brooks et al. 2023, Eq. 3, extended to three conditions; Hallo,
Xu et al. 2024, guides its audio and reference the same way). Rearranged it is a weighted sum
`out = sum_k c_k e_k` with `c_0 = 1 - s_r`, `c_1 = s_r - s_a`, `c_2 = s_a - s_e`, `c_3 = s_e`, whose
weights add up to 1. Passes whose weight is 0 are never run: all scales 1 needs only the conditional
pass, `s_r = 1` drops the unconditional one. The remaining passes go through the backbone as one batch.

Emotion guidance (`s_m`, ours) amplifies only the emotion edit. EMOdiffhead's expression is the neutral
trajectory plus the intensity-scaled editing direction (`emotion.condition`), so a fifth pass
`e_n = f(x | r, a, e_neutral)` takes the same trajectory at intensity 0 (same speech, blinks and pose), and

    out = (the output above) + (s_m - 1) (e_3 - e_n)

pushes along what the emotion changes and nothing else (guidance on the whole expression also amplifies
the jaw). `s_m = 1` is the form above, without the extra pass.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class Guidance:
  """Guidance scales per condition; 1 is no guidance (the conditional pass alone), 0 ignores it; `emotion`
  scales the emotion edit (the expression against its intensity-0 trajectory)."""

  reference: float = 1.0
  audio: float = 1.0
  expression: float = 1.0
  emotion: float = 1.0

  def passes(self) -> tuple[tuple[tuple[bool, bool, bool, bool], float], ...]:
    """The passes to run: `((uses_reference, uses_audio, uses_expression, uses_emotion), weight)` with
    weight != 0; a pass with the expression but not the emotion reads the intensity-0 trajectory."""
    s_r, s_a, s_e, s_m = self.reference, self.audio, self.expression, self.emotion
    flags_weights = (((False, False, False, False), 1.0 - s_r), ((True, False, False, False), s_r - s_a),
                     ((True, True, False, False), s_a - s_e), ((True, True, True, False), 1.0 - s_m),
                     ((True, True, True, True), s_e + s_m - 1.0))
    return tuple((f, w) for f, w in flags_weights if w != 0.0)

  @property
  def needs_neutral(self) -> bool:
    """Whether a pass reads the intensity-0 expression trajectory."""
    return any(f[2] and not f[3] for f, _ in self.passes())


def combine(outputs: Array, weights: tuple[float, ...]) -> Array:
  """`outputs [P, ...]` of the passes, `weights [P]` -> the guided output `[...]` (float32 sum)."""
  if outputs.shape[0] != len(weights):
    raise ValueError(f"guidance.py: {outputs.shape[0]} pass outputs for {len(weights)} weights")
  w = jnp.asarray(weights, jnp.float32).reshape((-1,) + (1,) * (outputs.ndim - 1))
  return jnp.sum(outputs.astype(jnp.float32) * w, axis=0)
