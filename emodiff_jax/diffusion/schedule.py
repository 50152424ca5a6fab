"""DDPM noise schedule and the conversions between the model parametrisations (Ho et al. 2020).

Notation: `a_t = alphas_cumprod[t]`, `x_t = sqrt(a_t) x0 + sqrt(1 - a_t) eps`. The denoiser predicts one of
`epsilon` (eps), `v_prediction` (`v = sqrt(a_t) eps - sqrt(1 - a_t) x0`, Salimans & Ho 2022) or `sample` (x0).
Matches `diffusers.DDPMScheduler` (betas, alphas_cumprod, `add_noise`, `get_velocity`).
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
PREDICTION_TYPES = ('epsilon', 'v_prediction', 'sample')


@flax.struct.dataclass
class NoiseSchedule:
  """Discrete schedule over `num_train_timesteps` steps (a pytree of float32 arrays `[N]`)."""
  betas: Array
  alphas_cumprod: Array

  @property
  def num_train_timesteps(self) -> int:
    return self.betas.shape[0]


def zero_terminal_snr_betas(betas: np.ndarray) -> np.ndarray:
  """Lin et al. 2023 ("Common Diffusion Noise Schedules and Sample Steps are Flawed"), Alg. 1: shifts and
  scales `sqrt(alphas_cumprod)` so the last step has zero SNR and the first keeps its value."""
  abar_sqrt = np.sqrt(np.cumprod(1.0 - betas))
  first, last = abar_sqrt[0], abar_sqrt[-1]
  abar_sqrt = (abar_sqrt - last) * first / (first - last)
  abar = abar_sqrt ** 2
  alphas = np.concatenate([abar[:1], abar[1:] / abar[:-1]])
  return 1.0 - alphas


def make_schedule(num_train_timesteps: int = 1000, beta_start: float = 0.00085, beta_end: float = 0.012,
                  beta_schedule: str = 'scaled_linear', rescale_zero_terminal_snr: bool = False) -> NoiseSchedule:
  """Builds the schedule (defaults: SD-1.5). Computed in float64, stored as float32.

  `scaled_linear`: betas linear in sqrt (latent diffusion); `linear`: betas linear (DDPM).
  """
  if beta_schedule == 'scaled_linear':
    betas = np.linspace(beta_start ** 0.5, beta_end ** 0.5, num_train_timesteps, dtype=np.float64) ** 2
  elif beta_schedule == 'linear':
    betas = np.linspace(beta_start, beta_end, num_train_timesteps, dtype=np.float64)
  else:
    raise ValueError(f'schedule.py: beta_schedule must be "scaled_linear" or "linear", got {beta_schedule!r}')
  if rescale_zero_terminal_snr:
    betas = zero_terminal_snr_betas(betas)
  alphas_cumprod = np.cumprod(1.0 - betas)
  return NoiseSchedule(betas=jnp.asarray(betas, jnp.float32), alphas_cumprod=jnp.asarray(alphas_cumprod, jnp.float32))


def _bcast(v: Array, ndim: int) -> Array:
  """Per-example coefficients `[B]` (or a scalar) -> broadcastable against `[B, ...]` of rank `ndim`."""
  v = jnp.asarray(v, jnp.float32)
  return v.reshape(v.shape + (1,) * (ndim - v.ndim))


def alpha_sigma(schedule: NoiseSchedule, t: Array, ndim: int) -> tuple[Array, Array]:
  """`(sqrt(a_t), sqrt(1 - a_t))` for integer timesteps `t` (`[B]` or scalar), broadcast to rank `ndim`."""
  a = schedule.alphas_cumprod[jnp.asarray(t)]
  return _bcast(jnp.sqrt(a), ndim), _bcast(jnp.sqrt(1.0 - a), ndim)


def add_noise(schedule: NoiseSchedule, x0: Array, noise: Array, t: Array) -> Array:
  """Forward process `q(x_t | x0)`: `sqrt(a_t) x0 + sqrt(1 - a_t) noise`; `x0, noise [B, ...]`, `t int[B]`."""
  alpha, sigma = alpha_sigma(schedule, t, x0.ndim)
  return alpha * x0 + sigma * noise


def velocity(schedule: NoiseSchedule, x0: Array, noise: Array, t: Array) -> Array:
  """v-prediction target `sqrt(a_t) noise - sqrt(1 - a_t) x0`."""
  alpha, sigma = alpha_sigma(schedule, t, x0.ndim)
  return alpha * noise - sigma * x0


def snr(schedule: NoiseSchedule, t: Array) -> Array:
  """Signal-to-noise ratio `a_t / (1 - a_t)` at integer timesteps `t`."""
  a = schedule.alphas_cumprod[jnp.asarray(t)]
  return a / (1.0 - a)


def check_prediction_type(prediction_type: str) -> None:
  """Raises a ValueError naming the allowed types."""
  if prediction_type not in PREDICTION_TYPES:
    raise ValueError(f'schedule.py: prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}')


def split_prediction(x_t: Array, model_out: Array, alpha: Array, sigma: Array,
                     prediction_type: str) -> tuple[Array, Array]:
  """Model output -> `(x0, eps)` given broadcastable `alpha = sqrt(a_t)`, `sigma = sqrt(1 - a_t)`."""
  check_prediction_type(prediction_type)
  if prediction_type == 'epsilon':
    return (x_t - sigma * model_out) / alpha, model_out
  if prediction_type == 'v_prediction':
    return alpha * x_t - sigma * model_out, alpha * model_out + sigma * x_t
  return model_out, (x_t - alpha * model_out) / sigma


def convert_prediction(schedule: NoiseSchedule, x_t: Array, model_out: Array, t: Array, from_type: str,
                       to_type: str) -> Array:
  """Re-expresses a prediction of `from_type` as `to_type` (`epsilon` <-> `v_prediction` <-> `sample`)."""
  check_prediction_type(to_type)
  alpha, sigma = alpha_sigma(schedule, t, x_t.ndim)
  x0, eps = split_prediction(x_t, model_out, alpha, sigma, from_type)
  if to_type == 'epsilon':
    return eps
  if to_type == 'sample':
    return x0
  return alpha * eps - sigma * x0


def predict_x0(schedule: NoiseSchedule, x_t: Array, model_out: Array, t: Array, prediction_type: str) -> Array:
  """Clean-sample estimate from a model output of `prediction_type`; `x_t [B, ...]`, `t int[B]`."""
  return convert_prediction(schedule, x_t, model_out, t, prediction_type, 'sample')


def predict_eps(schedule: NoiseSchedule, x_t: Array, model_out: Array, t: Array, prediction_type: str) -> Array:
  """Noise estimate from a model output of `prediction_type`."""
  return convert_prediction(schedule, x_t, model_out, t, prediction_type, 'epsilon')
