"""Fréchet distance between Gaussians fitted to features: FID on frames, FVD on clips.

For features of two sets summarised by means `mu_1, mu_2 [D]` and covariances `S_1, S_2 [D, D]`
(Heusel et al. 2017, "GANs trained by a two time-scale update rule converge to a local Nash equilibrium"):

    d^2 = |mu_1 - mu_2|^2 + Tr(S_1 + S_2 - 2 (S_1 S_2)^{1/2})

`Tr((S_1 S_2)^{1/2})` is computed without a general matrix square root: `S_1 S_2` is similar to the
symmetric PSD matrix `S_1^{1/2} S_2 S_1^{1/2}`, so the trace is the sum of the square roots of that
matrix's eigenvalues (float64 `eigh`, tiny negative round-off clipped to 0). This stays real and finite
for the singular covariances of few samples, where `scipy.linalg.sqrtm(S_1 @ S_2)` can return complex
values.

The feature network is pluggable: any `feature_fn` mapping a batch to `[B, D]`.

- FID: `inception.fid_feature_fn` (InceptionV3 pool features `[B, 2048]`, the pytorch-fid network and
  weights) on frames `[B, H, W, 3]`.
- FVD (Unterthiner et al. 2018, "Towards accurate generative models of video"): the reference
  implementation (google-research `frechet_video_distance`) embeds clips with the Kinetics-400 I3D of
  Carreira & Zisserman 2017 (TF-Hub `deepmind/i3d-kinetics-400/1`): clips `[B, T, H, W, 3]` of values
  in [0, 255] (16 frames in the published numbers) resized bilinearly to 224x224, scaled to [-1, 1], and
  the network's 400 logits taken as the features. That model ships as a TF-Hub SavedModel (and as a
  TorchScript export, `i3d_torchscript.pt`, in StyleGAN-V's FVD code), neither a state-dict layout this
  package reads; an I3D in Flax plus a converter of those variables is needed before FVD numbers are
  comparable with published ones. Until then `frechet_distance_of` takes any clip feature function.

`FeatureStats` accumulates features batch by batch (float64 sums around a shift taken from the first
batch, so large feature means do not cancel catastrophically); `frechet_distance` compares two of them.
"""

from __future__ import annotations

from typing import Callable, Iterable

import numpy as np

FeatureFn = Callable[[np.ndarray], np.ndarray]


class FeatureStats:
  """Streaming mean and covariance of features `[N, D]`, in float64."""

  def __init__(self) -> None:
    self.count = 0
    self._shift: np.ndarray | None = None
    self._sum: np.ndarray | None = None
    self._outer: np.ndarray | None = None

  def update(self, features: np.ndarray) -> "FeatureStats":
    """Adds a batch `[N, D]`; returns self."""
    x = np.asarray(features, np.float64)
    if x.ndim != 2:
      raise ValueError(f"expected features [N, D], got shape {x.shape}")
    if self._shift is None:
      self._shift = x.mean(0)
      self._sum = np.zeros(x.shape[1])
      self._outer = np.zeros((x.shape[1], x.shape[1]))
    elif x.shape[1] != self._shift.shape[0]:
      raise ValueError(f"feature size {x.shape[1]} differs from earlier batches ({self._shift.shape[0]})")
    x = x - self._shift
    self.count += x.shape[0]
    self._sum += x.sum(0)
    self._outer += x.T @ x
    return self

  @property
  def mean(self) -> np.ndarray:
    """`[D]`."""
    if self.count == 0:
      raise ValueError("no features accumulated")
    return self._shift + self._sum / self.count

  @property
  def cov(self) -> np.ndarray:
    """Unbiased sample covariance `[D, D]` (divides by N - 1, like `np.cov`)."""
    if self.count < 2:
      raise ValueError(f"a covariance needs at least 2 samples, got {self.count}")
    centred_mean = self._sum / self.count
    return (self._outer - self.count * np.outer(centred_mean, centred_mean)) / (self.count - 1)


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
  """`Tr((S_1 S_2)^{1/2})` for symmetric PSD `[D, D]` matrices, in float64."""
  s1 = np.asarray(sigma1, np.float64)
  s2 = np.asarray(sigma2, np.float64)
  w1, v1 = np.linalg.eigh((s1 + s1.T) / 2)
  root1 = (v1 * np.sqrt(np.clip(w1, 0.0, None))) @ v1.T
  m = root1 @ s2 @ root1
  eig = np.linalg.eigvalsh((m + m.T) / 2)
  return float(np.sqrt(np.clip(eig, 0.0, None)).sum())


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
  """Squared Fréchet distance between N(mu1 `[D]`, sigma1 `[D, D]`) and N(mu2, sigma2)."""
  mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
  sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
  if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != mu1.shape * 2:
    raise ValueError(f"mismatched shapes: mu {mu1.shape} {mu2.shape}, sigma {sigma1.shape} {sigma2.shape}")
  diff = mu1 - mu2
  return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_sqrt_product(sigma1, sigma2))


def stats_distance(a: FeatureStats, b: FeatureStats) -> float:
  """`frechet_distance` between two accumulated feature sets."""
  return frechet_distance(a.mean, a.cov, b.mean, b.cov)


def feature_stats(batches: Iterable[np.ndarray], feature_fn: FeatureFn) -> FeatureStats:
  """Accumulates `feature_fn(batch)` `[B, D]` over `batches` (frames `[B, H, W, C]` or clips
  `[B, T, H, W, C]`, whatever `feature_fn` takes)."""
  stats = FeatureStats()
  for batch in batches:
    stats.update(np.asarray(feature_fn(batch)))
  return stats


def frechet_distance_of(real: Iterable[np.ndarray], generated: Iterable[np.ndarray], feature_fn: FeatureFn) -> float:
  """FID / FVD: the Fréchet distance between `feature_fn` features of two streams of batches."""
  return stats_distance(feature_stats(real, feature_fn), feature_stats(generated, feature_fn))
