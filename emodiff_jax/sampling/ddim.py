"""DDIM (Song et al. 2021) timesteps and single step, as `diffusers.DDIMScheduler` (no sample clipping)."""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from emodiff_jax.diffusion.schedule import NoiseSchedule, split_prediction

Array = jax.Array
SPACINGS = ('leading', 'trailing', 'linspace')


def check_num_steps(num_train_timesteps: int, num_steps: int, timestep_spacing: str) -> None:
  """Raises a ValueError for a step count outside `[1, num_train_timesteps]` or an unknown spacing."""
  if not 1 <= num_steps <= num_train_timesteps:
    raise ValueError(f'sampling: num_steps must be in [1, {num_train_timesteps}], got {num_steps}')
  if timestep_spacing not in SPACINGS:
    raise ValueError(f'sampling: timestep_spacing must be one of {SPACINGS}, got {timestep_spacing!r}')


def ddim_timesteps(num_train_timesteps: int, num_steps: int, timestep_spacing: str = 'leading',
                   steps_offset: int = 1) -> np.ndarray:
  """Decreasing int64 timesteps `[num_steps]`, equal to `DDIMScheduler.set_timesteps`.

  `leading`: `arange(n) * (N // n) + steps_offset` (SD-1.5 uses offset 1); `trailing`: `round(arange(N, 0,
  -N / n)) - 1` (starts at N - 1, Lin et al. 2023 Table 2); `linspace`: `round(linspace(0, N - 1, n))`.
  """
  check_num_steps(num_train_timesteps, num_steps, timestep_spacing)
  n, big_n = num_steps, num_train_timesteps
  if timestep_spacing == 'linspace':
    ts = np.linspace(0, big_n - 1, n).round()[::-1]
  elif timestep_spacing == 'leading':
    ts = (np.arange(n) * (big_n // n)).round()[::-1] + steps_offset
  else:
    ts = np.round(np.arange(big_n, 0, -big_n / n)) - 1
  return ts.astype(np.int64)


def ddim_prev_timesteps(timesteps: np.ndarray, num_train_timesteps: int) -> np.ndarray:
  """Target timestep of each step, `t - N // n` as diffusers (negative: the final, clean step)."""
  return timesteps - num_train_timesteps // len(timesteps)


def ddim_step(schedule: NoiseSchedule, x_t: Array, model_out: Array, t: Array, t_prev: Array, eta: float = 0.0,
              rng: Optional[Array] = None, prediction_type: str = 'epsilon', *,
              set_alpha_to_one: bool = True) -> Array:
  """One DDIM update `x_t -> x_{t_prev}` (Song et al. 2021, Eq. 12).

  Args:
    x_t, model_out: `[B, ...]` float32.
    t, t_prev: scalar int timesteps (may be traced); `t_prev < 0` means the clean end point, whose
      `alphas_cumprod` is 1 if `set_alpha_to_one` else `alphas_cumprod[0]` (SD-1.5's config says False).
    eta: 0 is deterministic DDIM, 1 the DDPM posterior variance; `rng` draws the variance noise when > 0.
  Returns:
    `x_{t_prev}`, same shape and dtype as `x_t`.
  """
  ac = schedule.alphas_cumprod
  a_t = ac[t]
  final = jnp.float32(1.0) if set_alpha_to_one else ac[0]
  a_prev = jnp.where(t_prev >= 0, ac[jnp.maximum(t_prev, 0)], final)
  x0, eps = split_prediction(x_t, model_out, jnp.sqrt(a_t), jnp.sqrt(1.0 - a_t), prediction_type)
  variance = (1.0 - a_prev) / (1.0 - a_t) * (1.0 - a_t / a_prev)
  std = eta * jnp.sqrt(variance)
  x_prev = jnp.sqrt(a_prev) * x0 + jnp.sqrt(1.0 - a_prev - std ** 2) * eps
  if eta > 0:
    if rng is None:
      raise ValueError('ddim.py: eta > 0 needs an rng for the variance noise')
    x_prev = x_prev + std * jax.random.normal(rng, x_t.shape, jnp.float32)
  return x_prev.astype(x_t.dtype)
