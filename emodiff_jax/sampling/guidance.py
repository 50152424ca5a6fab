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

Emotion guidance can be limited to an interval of timesteps, `emotion_t_min <= t <= emotion_t_max` (training
timesteps; outside it `s_m` is 1 and the intensity-0 pass weighs 0), as Kynkaanniemi et al. 2024 ("Applying
guidance in a limited interval improves sample and distribution quality") limit CFG to an interval of noise
levels: the expression's layout is decided at high noise, the face's detail at low noise. Passes that weigh
0 outside the interval (the intensity-0 one) run only at steps inside it (`lax.cond` in the sampler), so
guidance on 8 of 15 steps costs 8 extra passes, not 15.

Guidance rescale (`rescale` = phi; Lin et al. 2024, "Common Diffusion Noise Schedules and Sample Steps are
Flawed", Sec. 3.4, proposed with zero-terminal-SNR v-prediction models like ours): large guidance scales
inflate the output's standard deviation (over-exposed images in their paper). Each frame's guided output is
brought back to the standard deviation of the all-conditions output `e_3`, then mixed with the unrescaled one,
`out = phi out (std(e_3) / std(out)) + (1 - phi) out`, on the model output as diffusers' pipelines do.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

Array = jax.Array
# Every pass the guided output can use, `(uses_reference, uses_audio, uses_expression, uses_emotion)`.
FLAGS = ((False, False, False, False), (True, False, False, False), (True, True, False, False),
         (True, True, True, False), (True, True, True, True))


@dataclasses.dataclass(frozen=True)
class Guidance:
  """Guidance scales per condition; 1 is no guidance (the conditional pass alone), 0 ignores it; `emotion`
  scales the emotion edit (the expression against its intensity-0 trajectory) at the timesteps
  `emotion_t_min <= t <= emotion_t_max` (the default: every step)."""

  reference: float = 1.0
  audio: float = 1.0
  expression: float = 1.0
  emotion: float = 1.0
  emotion_t_min: int = 0
  emotion_t_max: int = 1000
  rescale: float = 0.0  # phi of Lin et al.'s guidance rescale: 0 off, 0.7 theirs

  def __post_init__(self):
    if self.emotion_t_min > self.emotion_t_max:
      raise ValueError(f"guidance.py: emotion_t_min {self.emotion_t_min} > emotion_t_max {self.emotion_t_max}")
    if not 0.0 <= self.rescale <= 1.0:
      raise ValueError(f"guidance.py: rescale must be in [0, 1], got {self.rescale}")

  def _weights(self, emotion: float) -> tuple[float, ...]:
    """The weight of each of `FLAGS` with emotion scale `emotion`."""
    s_r, s_a, s_e = self.reference, self.audio, self.expression
    return (1.0 - s_r, s_r - s_a, s_a - s_e, 1.0 - emotion, s_e + emotion - 1.0)

  def _rescale_reads(self, flags: tuple[bool, bool, bool, bool]) -> bool:
    """Whether the rescale needs this pass whatever its weight: the all-conditions one, when it is on."""
    return bool(self.rescale) and flags == FLAGS[-1]

  def passes(self) -> tuple[tuple[tuple[bool, bool, bool, bool], float], ...]:
    """The passes to run: `((uses_reference, uses_audio, uses_expression, uses_emotion), weight)`, weight
    inside the emotion interval, for those weighing != 0 inside or outside it (and the all-conditions pass
    when `rescale` reads it); a pass with the expression but not the emotion reads the intensity-0
    trajectory."""
    inside, outside = self._weights(self.emotion), self._weights(1.0)
    return tuple((f, w) for f, w, w_out in zip(FLAGS, inside, outside)
                 if w != 0.0 or w_out != 0.0 or self._rescale_reads(f))

  def inside(self, t: Array) -> Array:
    """Whether timesteps `t [B]` are in the emotion interval `[B]` (bool)."""
    return (t >= self.emotion_t_min) & (t <= self.emotion_t_max)

  def weights_at(self, t: Array) -> Array:
    """The weights `[P, B]` of `passes()` at timesteps `t [B]`: the emotion scale inside its interval, 1
    outside it."""
    flags = [f for f, _ in self.passes()]
    pick = lambda w: jnp.asarray([w[FLAGS.index(f)] for f in flags], jnp.float32)[:, None]
    return jnp.where(self.inside(t)[None, :], pick(self._weights(self.emotion)), pick(self._weights(1.0)))

  def outside_passes(self) -> tuple[int, ...]:
    """Indices into `passes()` of those weighing != 0 outside the emotion interval, and of the
    all-conditions pass when `rescale` reads it (all others weigh 0 there and need not run)."""
    outside = self._weights(1.0)
    return tuple(i for i, (f, _) in enumerate(self.passes())
                 if outside[FLAGS.index(f)] != 0.0 or self._rescale_reads(f))

  @property
  def needs_neutral(self) -> bool:
    """Whether a pass reads the intensity-0 expression trajectory."""
    return any(f[2] and not f[3] for f, _ in self.passes())


def combine(outputs: Array, weights: Array | tuple[float, ...]) -> Array:
  """`outputs [P, B, ...]` of the passes, `weights [P]` or per example `[P, B]` -> the guided output
  `[B, ...]` (float32 sum)."""
  w = jnp.asarray(weights, jnp.float32)
  if outputs.shape[0] != w.shape[0]:
    raise ValueError(f"guidance.py: {outputs.shape[0]} pass outputs for {w.shape[0]} weights")
  w = w.reshape(w.shape + (1,) * (outputs.ndim - w.ndim))
  return jnp.sum(outputs.astype(jnp.float32) * w, axis=0)


def rescale_guidance(guided: Array, positive: Array, phi: float) -> Array:
  """Guidance rescale (module docstring): `guided [B, T, ...]` with each frame's standard deviation brought
  to that of `positive [B, T, ...]` (the all-conditions output), mixed by `phi`."""
  axes = tuple(range(2, guided.ndim))
  spread = lambda a: jnp.std(a, axis=axes, keepdims=True)
  ratio = spread(positive) / jnp.maximum(spread(guided), 1e-6)
  return guided * (phi * ratio + (1.0 - phi))
