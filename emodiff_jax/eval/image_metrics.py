"""Frame fidelity: PSNR, SSIM and landmark distance.

SSIM follows Wang et al. 2004 ("Image quality assessment: from error visibility to structural
similarity") with scikit-image's conventions for `structural_similarity(..., gaussian_weights=True,
sigma=1.5, use_sample_covariance=False, data_range=R, channel_axis=-1)`: local statistics under an 11x11
Gaussian window (sigma 1.5, truncated at 3.5 sigma, radius 5), K1 = 0.01, K2 = 0.03, the SSIM map
averaged over the pixels at least 5 from the border and over channels. Filtering with border reflection
and then cropping that margin equals a VALID convolution, which is what is computed here.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def psnr(a: jax.Array, b: jax.Array, data_range: float = 1.0) -> jax.Array:
  """Peak signal-to-noise ratio in dB per image: `[..., H, W, C]` x2 -> `[...]` (inf where equal)."""
  a, b = jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32)
  mse = jnp.mean((a - b) ** 2, axis=(-3, -2, -1))
  return 10.0 * jnp.log10(data_range**2 / mse)


def gaussian_kernel(sigma: float = 1.5, truncate: float = 3.5) -> np.ndarray:
  """Normalised 1-D Gaussian `[2r + 1]`, r = int(truncate * sigma + 0.5) (SciPy's `gaussian_filter`)."""
  radius = int(truncate * sigma + 0.5)
  x = np.arange(-radius, radius + 1, dtype=np.float64)
  k = np.exp(-0.5 * (x / sigma) ** 2)
  return (k / k.sum()).astype(np.float32)


def _blur(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """Separable VALID Gaussian filter of `[N, H, W, C]`, channel by channel."""
  n, h, w, c = x.shape
  k = kernel.shape[0]
  planes = x.transpose(0, 3, 1, 2).reshape(n * c, h, w, 1)
  planes = jax.lax.conv_general_dilated(planes, kernel.reshape(k, 1, 1, 1), (1, 1), "VALID",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))
  planes = jax.lax.conv_general_dilated(planes, kernel.reshape(1, k, 1, 1), (1, 1), "VALID",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))
  return planes.reshape(n, c, h - k + 1, w - k + 1).transpose(0, 2, 3, 1)


def ssim(a: jax.Array, b: jax.Array, data_range: float = 1.0, sigma: float = 1.5, k1: float = 0.01,
         k2: float = 0.03) -> jax.Array:
  """Mean SSIM per image: `[..., H, W, C]` x2 -> `[...]` (H, W >= 11 for the default window)."""
  a, b = jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32)
  if a.shape != b.shape or a.ndim < 3:
    raise ValueError(f"expected two images [..., H, W, C] of one shape, got {a.shape} and {b.shape}")
  kernel = jnp.asarray(gaussian_kernel(sigma))
  if min(a.shape[-3:-1]) < kernel.shape[0]:
    raise ValueError(f"images {a.shape[-3:-1]} are smaller than the {kernel.shape[0]}-pixel window")
  lead = a.shape[:-3]
  a, b = a.reshape(-1, *a.shape[-3:]), b.reshape(-1, *b.shape[-3:])
  mu_a, mu_b = _blur(a, kernel), _blur(b, kernel)
  var_a = _blur(a * a, kernel) - mu_a**2
  var_b = _blur(b * b, kernel) - mu_b**2
  cov = _blur(a * b, kernel) - mu_a * mu_b
  c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
  s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
  return s.mean(axis=(1, 2, 3)).reshape(lead)


def landmark_distance(pred: np.ndarray, target: np.ndarray, normalizer: np.ndarray | float = 1.0) -> np.ndarray:
  """Mean Euclidean distance between landmarks `[..., K, 2]` per frame `[...]`, divided by `normalizer`
  (e.g. the inter-ocular distance `[...]`, or the image size) for a scale-free number (LMD when restricted
  to the mouth landmarks)."""
  pred, target = np.asarray(pred, np.float64), np.asarray(target, np.float64)
  if pred.shape != target.shape or pred.shape[-1] != 2:
    raise ValueError(f"expected landmarks [..., K, 2] of one shape, got {pred.shape} and {target.shape}")
  return np.linalg.norm(pred - target, axis=-1).mean(-1) / np.asarray(normalizer, np.float64)
