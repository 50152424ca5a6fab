"""DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++", Alg. 2: data prediction, multistep, second order), as
`diffusers.DPMSolverMultistepScheduler(algorithm_type='dpmsolver++', solver_order=2, solver_type='midpoint',
final_sigmas_type='zero')`: first order at the first step and at the last (which lands on sigma = 0).

With `alpha_t = sqrt(a_t)`, `sigma_t = sqrt(1 - a_t)`, `lambda_t = log(alpha_t / sigma_t)`, `h = lambda_t -
lambda_s`: `x_t = sigma_t / sigma_s x_s + alpha_t (1 - e^-h) D`, with `D = x0_s` (first order) or
`x0_s + (x0_s - x0_prev) h / (2 h_prev)` (second order).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from emodiff_jax.diffusion.schedule import NoiseSchedule, split_prediction
from emodiff_jax.sampling.ddim import check_num_steps

Array = jax.Array
MIN_ALPHA_CUMPROD = 2.0 ** -24  # diffusers' clamp of a zero-terminal-SNR schedule's last step


def dpm_timesteps(num_train_timesteps: int, num_steps: int, timestep_spacing: str = 'linspace',
                  steps_offset: int = 0) -> np.ndarray:
  """Decreasing int64 timesteps `[num_steps]`, equal to `DPMSolverMultistepScheduler.set_timesteps`.

  Unlike DDIM, `linspace` and `leading` space `num_steps + 1` points and drop the last one.
  """
  check_num_steps(num_train_timesteps, num_steps, timestep_spacing)
  n, big_n = num_steps, num_train_timesteps
  if timestep_spacing == 'linspace':
    ts = np.linspace(0, big_n - 1, n + 1).round()[::-1][:-1]
  elif timestep_spacing == 'leading':
    ts = (np.arange(n + 1) * (big_n // (n + 1))).round()[::-1][:-1] + steps_offset
  else:
    ts = np.arange(big_n, 0, -big_n / n).round() - 1
  return ts.astype(np.int64)


def dpm_alpha_sigma(schedule: NoiseSchedule, timesteps: Array) -> tuple[Array, Array]:
  """`(alpha, sigma)`, each `[n + 1]`: the values at `timesteps` followed by the end point `(1, 0)`.

  `alphas_cumprod` is clamped to >= 2^-24 so a zero-terminal-SNR schedule has a finite first step.
  """
  a = jnp.maximum(schedule.alphas_cumprod[jnp.asarray(timesteps)], MIN_ALPHA_CUMPROD)
  alpha = jnp.concatenate([jnp.sqrt(a), jnp.ones((1,), jnp.float32)])
  sigma = jnp.concatenate([jnp.sqrt(1.0 - a), jnp.zeros((1,), jnp.float32)])
  return alpha, sigma


def dpmpp_2m_step(x: Array, model_out: Array, prev_x0: Array, *, alpha_s: Array, sigma_s: Array, alpha_t: Array,
                  sigma_t: Array, alpha_prev: Array, sigma_prev: Array, second_order: Array,
                  prediction_type: str = 'epsilon') -> tuple[Array, Array]:
  """One DPM-Solver++(2M) update from `s` to `t` (`prev` is the step before `s`); scalars may be traced.

  Args:
    x, model_out, prev_x0: `[B, ...]`; `prev_x0` is the data prediction of the previous step (ignored where
      `second_order` is False, e.g. zeros at the first step).
    second_order: bool scalar; False gives the first-order (DDIM-equivalent) update.
  Returns:
    `(x_t, x0_s)`: the new sample and this step's data prediction (the next step's `prev_x0`).
  """
  x0, _ = split_prediction(x, model_out, alpha_s, sigma_s, prediction_type)
  exp_neg_h = (sigma_t * alpha_s) / (alpha_t * sigma_s)  # e^-h, finite also when sigma_t = 0
  first = (sigma_t / sigma_s) * x + alpha_t * (1.0 - exp_neg_h) * x0
  lam = lambda a, s: jnp.log(a) - jnp.log(s)
  h = jnp.where(second_order, lam(alpha_t, sigma_t) - lam(alpha_s, sigma_s), 1.0)
  h_prev = jnp.where(second_order, lam(alpha_s, sigma_s) - lam(alpha_prev, sigma_prev), 1.0)
  d1 = (x0 - prev_x0) * (h / h_prev)
  second = first + 0.5 * alpha_t * (1.0 - exp_neg_h) * d1
  return jnp.where(second_order, second, first).astype(x.dtype), x0
