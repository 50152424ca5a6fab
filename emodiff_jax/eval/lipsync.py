"""Lip sync in the synthetic world: correlation of the audio envelope with the jaw opening.

In `synth` the jaw coefficient follows the speech envelope one frame late (`synth.trajectory.JAW_LAG`), so
a generated clip is in sync when the jaw it shows (measured from its frames, e.g. `jaw_open` of
`emotion.probe`) correlates with the loudness of its audio (`synth.audio.envelope_from_audio`) at a small
positive offset. For each offset k in [-max_offset, max_offset] (positive: the jaw lags the audio by k
frames) the Pearson correlation of `envelope[t]` and `jaw[t + k]` is taken over the frames both cover; the
score is the best correlation and its offset (the SyncNet-free counterpart of Sync-C and the AV offset).
Real clips use `syncnet.sync_scores` instead.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class LipSyncResult:
  """Best mean correlation, its offset in frames (positive: jaw lags audio), and the mean correlation per
  offset `[2 max_offset + 1]` (offsets -max_offset..max_offset)."""

  correlation: float
  offset: int
  correlations: np.ndarray


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
  """Pearson correlation of `[n]` vectors; 0 when either is constant."""
  x, y = x - x.mean(), y - y.mean()
  denom = np.sqrt((x @ x) * (y @ y))
  return float(x @ y / denom) if denom > 1e-12 else 0.0


def lagged_correlations(envelope: np.ndarray, jaw: np.ndarray, max_offset: int = 5) -> np.ndarray:
  """Correlation of `envelope[t]` with `jaw[t + k]` for k = -max_offset..max_offset, `[T]` x2 ->
  `[2 max_offset + 1]`."""
  env, jaw = np.asarray(envelope, np.float64), np.asarray(jaw, np.float64)
  if env.shape != jaw.shape or env.ndim != 1:
    raise ValueError(f"expected envelope and jaw [T] of one shape, got {env.shape} and {jaw.shape}")
  if len(env) < max_offset + 3:
    raise ValueError(f"{len(env)} frames are too few for offsets up to {max_offset}")
  t = len(env)
  return np.array([_pearson(env[max(0, -k):t - max(0, k)], jaw[max(0, k):t + min(0, k)])
                   for k in range(-max_offset, max_offset + 1)])


def envelope_jaw_sync(envelopes: np.ndarray, jaws: np.ndarray, max_offset: int = 5) -> LipSyncResult:
  """Lip sync of one clip (`[T]` each) or of several (`[N, T]` each: correlations averaged over clips
  per offset before the best offset is chosen)."""
  env, jaw = np.atleast_2d(np.asarray(envelopes)), np.atleast_2d(np.asarray(jaws))
  if env.shape != jaw.shape:
    raise ValueError(f"envelopes {env.shape} and jaws {jaw.shape} differ in shape")
  mean = np.mean([lagged_correlations(e, j, max_offset) for e, j in zip(env, jaw)], axis=0)
  best = int(np.argmax(mean))
  return LipSyncResult(correlation=float(mean[best]), offset=best - max_offset, correlations=mean)
