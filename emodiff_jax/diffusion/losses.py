"""Diffusion training objective: targets, Min-SNR-gamma weights (Hang et al. 2023), the loss in another
prediction space, weights on the latent cells that change against the reference, and offset noise."""

from __future__ import annotations

from typing import Optional, Sequence

import jax
import jax.numpy as jnp

from emodiff_jax.diffusion.schedule import NoiseSchedule, check_prediction_type, convert_prediction, snr, velocity

Array = jax.Array


def training_target(schedule: NoiseSchedule, x0: Array, noise: Array, t: Array, prediction_type: str) -> Array:
  """Regression target for the denoiser: `noise` (epsilon), `v` (v_prediction) or `x0` (sample)."""
  check_prediction_type(prediction_type)
  if prediction_type == 'epsilon':
    return noise
  if prediction_type == 'v_prediction':
    return velocity(schedule, x0, noise, t)
  return x0


def loss_weights(schedule: NoiseSchedule, t: Array, prediction_type: str,
                 min_snr_gamma: Optional[float] = None) -> Array:
  """Per-example loss weights `[B]` (ones when `min_snr_gamma` is None).

  Min-SNR-gamma (Hang et al. 2023) weights the x0-space loss by `min(SNR, gamma)`; expressed on the
  predicted quantity: epsilon `min(SNR, gamma) / SNR`, v_prediction `min(SNR, gamma) / (SNR + 1)`, sample
  `min(SNR, gamma)`. At zero SNR (rescaled schedules, last step) the epsilon weight takes its limit, 1.
  """
  check_prediction_type(prediction_type)
  s = snr(schedule, t)
  if min_snr_gamma is None:
    return jnp.ones_like(s)
  if min_snr_gamma <= 0:
    raise ValueError(f'losses.py: min_snr_gamma must be > 0, got {min_snr_gamma}')
  clipped = jnp.minimum(s, min_snr_gamma)
  if prediction_type == 'epsilon':
    return jnp.where(s > 0, clipped / jnp.where(s > 0, s, 1.0), 1.0)
  if prediction_type == 'v_prediction':
    return clipped / (s + 1.0)
  return clipped


def change_weights(x0: Array, reference: Array, strength: float) -> Array:
  """Per-cell loss weights `[B, T, h, w, 1]` stressing where each clean frame `x0 [B, T, h, w, C]` differs
  from the reference latent `[B, h, w, C]`: `1 + strength * d / max(d)`, with `d` the channel-mean absolute
  difference and the max over each frame's cells.

  In talking-head clips the reference is the same face, so `d` is large only where the frame moves away from
  it (mouth, brows, the emotion's marks) and the background and hair, identical in both, keep weight 1: a
  mask-free form of the face-region loss weighting of Hallo (Xu et al. 2024, lip / expression masks).
  """
  if strength < 0:
    raise ValueError(f'losses.py: change weight strength must be >= 0, got {strength}')
  d = jnp.mean(jnp.abs(x0.astype(jnp.float32) - reference[:, None].astype(jnp.float32)), axis=-1, keepdims=True)
  peak = jnp.max(d, axis=(2, 3), keepdims=True)
  return jax.lax.stop_gradient(1.0 + strength * d / jnp.maximum(peak, 1e-6))


def diffusion_loss(pred: Array, target: Array, *, weights: Optional[Array] = None,
                   cell_weights: Optional[Array] = None) -> Array:
  """Scalar loss: per-example mean squared error over all non-batch axes of `[B, ...]` (weighted by
  `cell_weights`, broadcastable to `pred`, when given: `sum(w * err) / sum(w)`), then the batch mean
  weighted by `weights [B]`.

  Computed in float32 whatever the prediction dtype.
  """
  if pred.shape != target.shape:
    raise ValueError(f'losses.py: pred {pred.shape} and target {target.shape} differ in shape')
  err = jnp.square(pred.astype(jnp.float32) - target.astype(jnp.float32))
  if cell_weights is None:
    per_example = err.reshape(err.shape[0], -1).mean(axis=1)
  else:
    w = jnp.broadcast_to(cell_weights.astype(jnp.float32), err.shape).reshape(err.shape[0], -1)
    per_example = jnp.sum(err.reshape(err.shape[0], -1) * w, axis=1) / jnp.sum(w, axis=1)
  if weights is not None:
    per_example = per_example * weights.astype(jnp.float32)
  return per_example.mean()


def prediction_loss(schedule: NoiseSchedule, x_t: Array, pred: Array, x0: Array, noise: Array, t: Array,
                    prediction_type: str, loss_target: str = "", min_snr_gamma: Optional[float] = None,
                    cell_weights: Optional[Array] = None) -> Array:
  """Scalar loss of the model output `pred` (a `prediction_type` prediction at `x_t [B, ...]`, `t int[B]`) for
  the clean sample `x0` and `noise`, measured as `loss_target` ('' = `prediction_type`): the output is
  converted to that space and regressed on its target, with its Min-SNR-gamma weights (and `cell_weights`,
  see `diffusion_loss`). An epsilon model measured as 'v_prediction' has its squared error weighted by
  `1 / alpha_bar_t = 1 + 1 / SNR`."""
  space = loss_target or prediction_type
  if space != prediction_type:
    pred = convert_prediction(schedule, x_t, pred, t, prediction_type, space)
  target = training_target(schedule, x0, noise, t, space)
  return diffusion_loss(pred, target, weights=loss_weights(schedule, t, space, min_snr_gamma),
                        cell_weights=cell_weights)


def offset_noise(rng: Array, shape: Sequence[int], strength: float) -> Array:
  """Standard normal noise plus a per-sample per-channel constant ("noise offset", Guttenberg 2023).

  `shape` is `[B, H, W, C]` or, for clips, `[B, T, H, W, C]`: the offset `strength * N(0, 1)` has shape
  `[B, 1, 1, C]` / `[B, 1, 1, 1, C]`, i.e. one value per sample and channel, shared by all pixels and by all
  frames of a clip (the brightness shift of a clip is coherent in time). `strength=0` gives plain noise.
  """
  if len(shape) not in (4, 5):
    raise ValueError(f'losses.py: offset_noise expects [B, H, W, C] or [B, T, H, W, C], got shape {tuple(shape)}')
  k_base, k_off = jax.random.split(rng)
  noise = jax.random.normal(k_base, tuple(shape), jnp.float32)
  offset_shape = (shape[0],) + (1,) * (len(shape) - 2) + (shape[-1],)
  return noise + strength * jax.random.normal(k_off, offset_shape, jnp.float32)
