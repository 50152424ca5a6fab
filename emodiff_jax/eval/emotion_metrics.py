"""Emotion metrics: classification accuracy, intensity faithfulness, expression error.

Pure functions on measured and requested arrays; the measuring models live elsewhere (an emotion
classifier for real clips, `emotion.probe` for the expression codes of synthetic ones).

- `emotion_accuracy` / `confusion_matrix`: a classifier's labels (or scores) on generated clips against
  the emotions they were asked to show.
- `direction_projection`: the measured intensity of a clip, `<e - e_n, d_e> / |d_e|^2` averaged over its
  frames: 0 at the neutral code `e_n`, 1 at `e_n + d_e` (the linear rule of `emotion.editing`).
- `intensity_faithfulness`: per emotion, the Spearman rank correlation between requested intensities
  and those projections (1: stronger requests always give stronger expressions), and its mean.
- `expression_error`: distance between requested expression codes (`emotion.editing.expression_sequence`)
  and measured ones (`emotion.probe.probe_extractor`), over the coefficients the probe predicts.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import scipy.stats

from emodiff_jax.synth.expression import COEFFICIENTS

PROBE_DIMS = slice(0, len(COEFFICIENTS))  # `emotion.probe` predicts the 18 named coefficients, then zeros.


def _labels(predicted: np.ndarray) -> np.ndarray:
  """Labels `[N]` from labels `[N]` or class scores `[N, K]`."""
  p = np.asarray(predicted)
  return p.argmax(-1) if p.ndim == 2 else p.astype(np.int64)


def emotion_accuracy(predicted: np.ndarray, labels: np.ndarray) -> float:
  """Fraction of clips whose predicted emotion (labels `[N]` or scores `[N, K]`) equals `labels [N]`."""
  pred, labels = _labels(predicted), np.asarray(labels)
  if pred.shape != labels.shape or pred.ndim != 1 or len(pred) == 0:
    raise ValueError(f"expected predictions and labels for the same N > 0 clips, got {pred.shape}, {labels.shape}")
  return float(np.mean(pred == labels))


def confusion_matrix(predicted: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
  """Counts `[K, K]`: row = requested emotion, column = predicted one."""
  out = np.zeros((num_classes, num_classes), np.int64)
  np.add.at(out, (np.asarray(labels), _labels(predicted)), 1)
  return out


def direction_projection(expressions: np.ndarray, direction: np.ndarray, neutral: np.ndarray | float = 0.0) -> float:
  """Measured intensity of one clip: `<e_t - e_n, d> / |d|^2` averaged over frames.

  Args:
    expressions: measured codes `[T, D]` (or `[D]`).
    direction: the emotion's direction `d` `[D]` (e.g. `synth.expression.emotion_direction`).
    neutral: the neutral code `e_n`, `[D]` or per frame `[T, D]` (e.g. the same clip generated at
      intensity 0); 0 by default.
  """
  d = np.asarray(direction, np.float64)
  norm = d @ d
  if norm < 1e-12:
    raise ValueError("the emotion direction is zero (neutral has no direction to project on)")
  offsets = np.atleast_2d(np.asarray(expressions, np.float64) - np.asarray(neutral, np.float64))
  return float(np.mean(offsets @ d) / norm)


def spearman(x: np.ndarray, y: np.ndarray) -> float:
  """Spearman rank correlation of `[N]` vectors (average ranks for ties); NaN if either is constant."""
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  if x.shape != y.shape or x.ndim != 1 or len(x) < 2:
    raise ValueError(f"expected two vectors [N >= 2] of one shape, got {x.shape} and {y.shape}")
  if np.ptp(x) == 0 or np.ptp(y) == 0:
    return float("nan")
  return float(scipy.stats.spearmanr(x, y).statistic)


def intensity_faithfulness(requested: np.ndarray, measured: np.ndarray, emotions: Sequence[str]) -> dict[str, float]:
  """Spearman correlation per emotion between requested intensities `[N]` and measured ones `[N]` (e.g.
  `direction_projection` of each clip), clips grouped by `emotions [N]`; 'mean' averages the emotions with
  a defined correlation."""
  requested, measured, emotions = np.asarray(requested), np.asarray(measured), np.asarray(emotions)
  if not requested.shape == measured.shape == emotions.shape:
    raise ValueError(f"requested {requested.shape}, measured {measured.shape} and emotions {emotions.shape} differ")
  out = {str(e): spearman(requested[emotions == e], measured[emotions == e]) for e in np.unique(emotions)}
  defined = [v for v in out.values() if not np.isnan(v)]
  out["mean"] = float(np.mean(defined)) if defined else float("nan")
  return out


def expression_error(requested: np.ndarray, measured: np.ndarray,
                     dims: slice | np.ndarray = PROBE_DIMS) -> dict[str, float]:
  """Errors between expression codes `[..., D]` over coefficients `dims`: 'l2' is the mean per-frame
  Euclidean distance, 'mae' the mean absolute error per coefficient."""
  req, meas = np.asarray(requested, np.float64), np.asarray(measured, np.float64)
  if req.shape != meas.shape:
    raise ValueError(f"requested {req.shape} and measured {meas.shape} differ in shape")
  diff = req[..., dims] - meas[..., dims]
  return {"l2": float(np.linalg.norm(diff, axis=-1).mean()), "mae": float(np.abs(diff).mean())}
