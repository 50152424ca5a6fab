"""Emotion editing in expression space: continuous intensity, mixing, and intensity curves over time.

EMOdiffhead (arXiv 2409.07255, Sec. 3 and Fig. 3) controls emotion through FLAME expression codes, which
are linear: for a frame with neutral expression `e_n` and the same frame spoken with emotion `e_e`, the
expression at intensity `alpha` is

    e = e_n + alpha * (e_e - e_n)

so `alpha = 0` is neutral, `alpha = 1` the full emotion, and values in between are intermediate
strengths. `e_e - e_n` is the emotion's direction `d_e` (e.g. `synth.expression.emotion_direction`, or the
mean emotional-minus-neutral code of a trained model), and the rule reads `e = e_n + alpha * d_e`.

This module implements:

- `interpolate`: the rule above for arrays `[T, D]` or `[D]`, `alpha` a scalar or one per frame `[T]`.
- `mix_directions`: several emotions at once, `{'happy': 0.7, 'surprised': 0.3}` -> `sum_k w_k d_k`.
- `parse_intensity_curve` / `intensity_curve`: keyframes `"0s:0.0,2s:1.0,4s:0.3"` -> per-frame alphas `[T]`,
  linear between keyframes and constant before the first / after the last.
- `expression_sequence`: a neutral trajectory `[T, D]` + directions + emotion(s) + intensity (number,
  curve string or `[T]` array) -> per-frame expression codes `[T, D]`.

Intensities lie in [0, 1]; above 1 (extrapolating past the recorded emotion) only with
`allow_extrapolation=True`. Negative or NaN intensities, unknown emotions and malformed curves raise a
ValueError saying what is wrong.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Union

import numpy as np

from emodiff_jax.synth.expression import check_emotion

CURVE_FORMAT = "'<time>s:<intensity>,...', e.g. '0s:0.0,2s:1.0,4s:0.3' (times in seconds, increasing)"
_NUMBER = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
_KEYFRAME = re.compile(rf"^\s*({_NUMBER})\s*s?\s*:\s*({_NUMBER}|nan|inf)\s*$", re.IGNORECASE)

Intensity = Union[float, str, np.ndarray]


def check_intensity(alpha: Union[float, np.ndarray], allow_extrapolation: bool = False) -> np.ndarray:
  """Validates intensities (scalar or array): finite, >= 0, and <= 1 unless `allow_extrapolation`."""
  a = np.asarray(alpha, np.float64)
  if np.isnan(a).any():
    raise ValueError(f"intensity is NaN ({alpha!r}); expected a number in [0, 1]")
  if (a < 0).any():
    raise ValueError(f"intensity must be >= 0, got {a.min():g}; 0 is neutral, 1 the full emotion")
  if not np.isfinite(a).all():
    raise ValueError(f"intensity must be finite, got {alpha!r}")
  if not allow_extrapolation and (a > 1).any():
    raise ValueError(f"intensity {a.max():g} > 1 extrapolates past the emotion; pass allow_extrapolation=True "
                     "to allow it")
  return a.astype(np.float32)


def interpolate(neutral: np.ndarray, emotional: np.ndarray, alpha: Union[float, np.ndarray],
                allow_extrapolation: bool = False) -> np.ndarray:
  """`e_n + alpha * (e_e - e_n)` for `neutral`, `emotional` `[T, D]` or `[D]`; `alpha` scalar or `[T]`.

  Returns float32 with the broadcast shape of `neutral` and `emotional`.
  """
  neutral, emotional = np.asarray(neutral, np.float32), np.asarray(emotional, np.float32)
  a = check_intensity(alpha, allow_extrapolation)
  if a.ndim == 1:
    a = a[:, None]  # One alpha per frame.
  elif a.ndim > 1:
    raise ValueError(f"alpha must be a scalar or one value per frame [T], got shape {a.shape}")
  return neutral + a * (emotional - neutral)


def _check_directions(names: list[str], directions: Mapping[str, np.ndarray]) -> None:
  for name in names:
    check_emotion(name)
    if name not in directions:
      raise ValueError(f"no direction for emotion {name!r}; directions are given for {', '.join(directions)}")


def mix_directions(weights: Mapping[str, float], directions: Mapping[str, np.ndarray]) -> np.ndarray:
  """`sum_k w_k * d_k` over `weights` (emotion name -> weight >= 0); directions name -> `[D]` (or any one
  shape, e.g. `[T, D]`). Returns that shape."""
  if not weights:
    raise ValueError("no emotions to mix; expected e.g. {'happy': 0.7, 'surprised': 0.3}")
  _check_directions(list(weights), directions)
  for name, w in weights.items():
    if not np.isfinite(w) or w < 0:
      raise ValueError(f"mixing weight of {name!r} must be a finite number >= 0, got {w!r}")
  return sum(np.float32(w) * np.asarray(directions[name], np.float32) for name, w in weights.items())


def parse_intensity_curve(spec: str, allow_extrapolation: bool = False) -> list[tuple[float, float]]:
  """`"0s:0.0,2s:1.0,4s:0.3"` -> `[(0.0, 0.0), (2.0, 1.0), (4.0, 0.3)]` (seconds, intensity).

  Times are non-negative and strictly increasing; intensities as in `check_intensity`.
  """
  items = spec.split(",") if spec.strip() else []
  if not items:
    raise ValueError(f"empty intensity curve {spec!r}; expected {CURVE_FORMAT}")
  keyframes = []
  for item in items:
    m = _KEYFRAME.match(item)
    if not m:
      raise ValueError(f"malformed keyframe {item.strip()!r} in intensity curve {spec!r}; expected {CURVE_FORMAT}")
    time, value = float(m.group(1)), float(m.group(2))
    if time < 0:
      raise ValueError(f"keyframe time {time:g}s < 0 in intensity curve {spec!r}; expected {CURVE_FORMAT}")
    if keyframes and time <= keyframes[-1][0]:
      raise ValueError(f"keyframe times must increase: {time:g}s after {keyframes[-1][0]:g}s in intensity curve "
                       f"{spec!r}; expected {CURVE_FORMAT}")
    try:
      check_intensity(value, allow_extrapolation)
    except ValueError as e:
      raise ValueError(f"keyframe {item.strip()!r} in intensity curve {spec!r}: {e}; expected {CURVE_FORMAT}") from None
    keyframes.append((time, value))
  return keyframes


def intensity_curve(curve: Union[str, list[tuple[float, float]]], num_frames: int, fps: float = 25.0,
                    allow_extrapolation: bool = False) -> np.ndarray:
  """Per-frame intensities `[num_frames]` float32: frame `t` at time `t / fps`, linear between keyframes,
  held constant before the first and after the last."""
  keyframes = parse_intensity_curve(curve, allow_extrapolation) if isinstance(curve, str) else list(curve)
  if not keyframes:
    raise ValueError(f"no keyframes; expected {CURVE_FORMAT}")
  if fps <= 0:
    raise ValueError(f"fps must be > 0, got {fps!r}")
  times, values = (np.asarray(x, np.float64) for x in zip(*keyframes))
  check_intensity(values, allow_extrapolation)
  return np.interp(np.arange(num_frames) / fps, times, values).astype(np.float32)


def expression_sequence(neutral: np.ndarray, directions: Mapping[str, np.ndarray],
                        emotion: Union[str, Mapping[str, float]], intensity: Intensity, fps: float = 25.0,
                        allow_extrapolation: bool = False) -> np.ndarray:
  """Per-frame expression codes `[T, D]`: `neutral[t] + alpha[t] * d`.

  Args:
    neutral: the neutral trajectory `[T, D]` (e.g. speech-driven expressions without emotion).
    directions: emotion name -> direction `[D]`, or per frame `[T, D]` (e.g. a generator's emotional
      minus neutral trajectory on the same noise and audio).
    emotion: one emotion name, or mixing weights (`mix_directions`).
    intensity: a number (all frames), a keyframe curve string (`intensity_curve` at `fps`) or `[T]` alphas.
    fps: frame rate of `neutral`, for curves.
    allow_extrapolation: allow intensities above 1.
  """
  neutral = np.asarray(neutral, np.float32)
  if neutral.ndim != 2:
    raise ValueError(f"neutral trajectory must be [T, D], got shape {neutral.shape}")
  weights = {emotion: 1.0} if isinstance(emotion, str) else emotion
  direction = mix_directions(weights, directions)
  if direction.shape not in (neutral.shape[1:], neutral.shape):
    raise ValueError(f"direction shape {direction.shape} is neither [D] nor [T, D] of the neutral trajectory "
                     f"{neutral.shape}")
  if isinstance(intensity, str):
    alpha = intensity_curve(intensity, len(neutral), fps, allow_extrapolation)
  else:
    alpha = check_intensity(intensity, allow_extrapolation)
    if alpha.ndim == 1 and alpha.shape[0] != len(neutral):
      raise ValueError(f"{alpha.shape[0]} intensities for {len(neutral)} frames")
  return interpolate(neutral, neutral + direction, alpha, allow_extrapolation)
