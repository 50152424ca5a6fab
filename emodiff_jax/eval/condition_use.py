"""Which conditions a stage-2 model uses: its held-out denoising loss with every condition, and with each one
removed or mismatched, on the same clips, timesteps and noise.

A condition the model relies on raises the loss when it is removed; one it ignores leaves the loss where it
is. This separates "the model cannot render the emotion" from "the model never learned to read it" without
sampling a single video. Variants (`VARIANTS`):

- 'all': every condition as the batch gives it;
- 'no_reference', 'no_audio', 'no_expression': that condition replaced by the null the model trained with
  for classifier-free guidance (`diffusion.cond_dropout`, rate 1);
- 'shuffled_audio', 'shuffled_expression': each clip gets the next clip's audio or expressions;
- 'expression_without_emotion': the coefficients of the synthetic world's emotion prototypes
  (`synth.expression.EMOTION_COEFFS`) set to zero, except those speech and blinks also drive (`jaw_open`,
  `eye_close`); only meaningful on the synthetic world's named coefficient layout.

Losses are the stage-2 objective (condition dropout off otherwise) averaged over `num_keys` fixed keys.
That average weights noise levels as training does, and an epsilon loss gives the high-noise steps, where
a sampler decides a clip's layout and expression, almost no weight. `ConditionLosses.by_timestep` says
where a condition is read: the error of the predicted clean latents (`x0`, any prediction type) at fixed
timesteps, per variant.

`emotion_latent_shift` says how large a signal each emotion is in the latent space the diffusion model
works in: the mean squared change of the VAE latents (posterior mean, scaled) when a synthetic face takes
the emotion at full intensity, beside the same for an open jaw and the latents' variance.
"""

from __future__ import annotations

import copy
from typing import Any, Callable, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from emodiff_jax.models.build import Models
from emodiff_jax.synth.expression import EMOTION_COEFFS, EMOTIONS, INDEX, emotion_direction, expression_vector
from emodiff_jax.synth.identity import make_identity
from emodiff_jax.synth.render import render_frames
from emodiff_jax.train.objective import DiffusionObjective

SPEECH_DRIVEN = ("jaw_open", "eye_close")
EMOTION_ONLY = tuple(sorted({INDEX[name] for coeffs in EMOTION_COEFFS.values() for name in coeffs
                             if name not in SPEECH_DRIVEN}))


def _without_emotion(expression: np.ndarray) -> np.ndarray:
  out = np.array(expression, copy=True)
  out[..., list(EMOTION_ONLY)] = 0.0
  return out


Edit = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]
# name -> (conditions dropped to their null, edit of the batch)
VARIANTS: dict[str, tuple[tuple[str, ...], Edit]] = {
    "all": ((), lambda b: b),
    "no_reference": (("reference",), lambda b: b),
    "no_audio": (("audio",), lambda b: b),
    "no_expression": (("expression",), lambda b: b),
    "shuffled_audio": ((), lambda b: dict(b, audio=np.roll(b["audio"], 1, axis=0))),
    "shuffled_expression": ((), lambda b: dict(b, expression=np.roll(b["expression"], 1, axis=0))),
    "expression_without_emotion": ((), lambda b: dict(b, expression=_without_emotion(b["expression"]))),
}


class _Loss:
  """The jitted objective with condition dropout off except `dropped` (always dropped); `mean(params, batch)`
  averages it over the fixed keys `PRNGKey(1000 + i)`, i < num_keys (the same timesteps and noise each call)."""

  def __init__(self, models: Models, diffusion: ml_collections.ConfigDict, *, stage: int, frame_stride: int,
               audio_margin: int, dropped: tuple[str, ...], num_keys: int):
    diffusion = copy.deepcopy(diffusion)
    diffusion.cond_drop = {k: float(k in dropped) for k in ("reference", "audio", "expression")}
    self.objective = DiffusionObjective(models, diffusion, stage, frame_stride, audio_margin)
    self.loss = jax.jit(lambda p, b, k: self.objective(p, b, k)[0])
    self.x0_error = jax.jit(lambda p, b, k, t: jnp.mean(self.objective(p, b, k, timesteps=t)[1]["x0_error"]))
    self.num_keys = num_keys

  def _over_keys(self, fn: Callable[..., jax.Array], params: Any, batch: Mapping[str, np.ndarray], num_keys: int,
                 *args: Any) -> float:
    """`fn(params, inputs, PRNGKey(1000 + i), *args)` averaged over i < num_keys."""
    inputs = {k: jnp.asarray(batch[k]) for k in self.objective.batch_keys}
    return float(np.mean([fn(params, inputs, jax.random.PRNGKey(1000 + i), *args) for i in range(num_keys)]))

  def mean(self, params: Any, batch: Mapping[str, np.ndarray]) -> float:
    return self._over_keys(self.loss, params, batch, self.num_keys)

  def mean_x0_error(self, params: Any, batch: Mapping[str, np.ndarray], timestep: int, num_keys: int) -> float:
    """The mean squared error of the predicted clean latents at `timestep` for every clip, over the first
    `num_keys` keys."""
    t = jnp.full((len(batch[self.objective.batch_keys[0]]),), timestep, jnp.int32)
    return self._over_keys(self.x0_error, params, batch, num_keys, t)


def denoising_loss(models: Models, diffusion: ml_collections.ConfigDict, params: Any,
                   batch: Mapping[str, np.ndarray], *, stage: int = 2, frame_stride: int = 1, audio_margin: int = 2,
                   dropped: tuple[str, ...] = (), num_keys: int = 4) -> float:
  """The objective on `batch` with condition dropout off except `dropped` (always dropped), averaged over the
  fixed keys `PRNGKey(1000 + i)`, i < num_keys (so every call sees the same timesteps and noise)."""
  return _Loss(models, diffusion, stage=stage, frame_stride=frame_stride, audio_margin=audio_margin,
               dropped=dropped, num_keys=num_keys).mean(params, batch)


class ConditionLosses:
  """`ConditionLosses(models, diffusion, ...)(params, batch) -> {variant: held-out loss}` for every entry of
  `VARIANTS`, on a stage-2 `batch` (`frames [B, T, H, W, 3]`, `reference`, `audio`, `expression [B, T, D]`).
  One compilation per distinct set of dropped conditions, reused for every params of the same model."""

  def __init__(self, models: Models, diffusion: ml_collections.ConfigDict, *, frame_stride: int = 1,
               audio_margin: int = 2, num_keys: int = 4):
    self.losses = {dropped: _Loss(models, diffusion, stage=2, frame_stride=frame_stride, audio_margin=audio_margin,
                                  dropped=dropped, num_keys=num_keys)
                   for dropped in {d for d, _ in VARIANTS.values()}}

  def __call__(self, params: Any, batch: Mapping[str, np.ndarray]) -> dict[str, float]:
    return {name: self.losses[dropped].mean(params, edit(dict(batch))) for name, (dropped, edit) in VARIANTS.items()}

  def by_timestep(self, params: Any, batch: Mapping[str, np.ndarray], timesteps: Sequence[int], num_keys: int
                  ) -> dict[str, dict[int, float]]:
    """`{variant: {t: mean squared x0 error}}` at each fixed timestep `t`, averaged over `num_keys` noise
    draws (the same for every variant)."""
    return {name: {int(t): self.losses[dropped].mean_x0_error(params, edit(dict(batch)), int(t), num_keys)
                   for t in timesteps} for name, (dropped, edit) in VARIANTS.items()}


def measured_data(data: ml_collections.ConfigDict,
                  weights: Optional[Sequence[float]] = None) -> ml_collections.ConfigDict:
  """A copy of a data config whose `sources` are mixed by `weights` (one per source) instead of the training
  run's, so that the measured clips, and the numbers, do not change when a training config reweights its
  sources. None: equal weights, however many sources; empty: the config's own."""
  data = copy.deepcopy(data)
  if weights is None:
    weights = [1.0] * len(data.sources)
  if weights:
    if len(weights) != len(data.sources):
      raise ValueError(f"{len(weights)} source weights for {len(data.sources)} data.sources "
                       f"({', '.join(s['name'] for s in data.sources)})")
    for source, weight in zip(data.sources, weights):
      source["weight"] = float(weight)
  return data


def markdown_table(losses: Mapping[str, float]) -> str:
  """One row per variant: the loss and its change against 'all' (absolute and relative)."""
  base = losses["all"]
  lines = ["| variant | held-out loss | change vs all |", "| --- | ---: | ---: |"]
  for name, value in losses.items():
    change = "" if name == "all" else f"{value - base:+.5f} ({(value - base) / base:+.1%})"
    lines.append(f"| {name} | {value:.5f} | {change} |")
  return "\n".join(lines)


def timestep_table(errors: Mapping[str, Mapping[int, float]]) -> str:
  """Rows: variants; columns: timesteps; 'all' as the x0 error, the others as their change against it."""
  steps = list(errors["all"])
  lines = ["| variant | " + " | ".join(f"t={t}" for t in steps) + " |", "| --- |" + " ---: |" * len(steps)]
  for name, row in errors.items():
    cells = [f"{row[t]:.4f}" if name == "all" else f"{(row[t] - errors['all'][t]) / errors['all'][t]:+.1%}"
             for t in steps]
    lines.append(f"| {name} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def emotion_latent_shift(models: Models, vae_params: Any, identities: Sequence[tuple[str, int]],
                         resolution: int = 64) -> dict[str, float]:
  """`{emotion or 'jaw_open': mean squared latent change from the neutral face, 'latent_variance': ...}`,
  averaged over synthetic `identities` `[(partition, index)]`, each face rendered frontal at `resolution`."""
  vae = models.vae
  encode = jax.jit(lambda x: vae.apply({"params": vae_params}, x, method=vae.encode).mean * vae.config.scaling_factor)
  offsets = {e: emotion_direction(e) for e in EMOTIONS[1:]}
  offsets["jaw_open"] = expression_vector({"jaw_open": 1.0})
  names = list(offsets)
  shifts, variance = {n: [] for n in names}, []
  for partition, index in identities:
    faces = np.stack([np.zeros_like(offsets["jaw_open"])] + [offsets[n] for n in names])
    frames = render_frames(make_identity(partition, index), faces, resolution).astype(np.float32) / 127.5 - 1.0
    latents = np.asarray(encode(frames))
    variance.append(float(latents[0].var()))
    for i, n in enumerate(names):
      shifts[n].append(float(np.mean((latents[i + 1] - latents[0]) ** 2)))
  return {**{n: float(np.mean(v)) for n, v in shifts.items()}, "latent_variance": float(np.mean(variance))}
