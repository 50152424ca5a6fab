"""Full sampling loop: one jitted `jax.lax.scan` over the steps (`sample`), and the same steps in a Python loop
(`sample_python_loop`, the reference for tests and benchmarks).

The denoiser is any `denoise_fn(x_t [B, ...], t int32[B]) -> model output [B, ...]` of `prediction_type`.
`sample` is jitted with `denoise_fn` static (hashed by identity: reuse the same function object to reuse the
compiled loop). To sample with network params, call `sample` inside your own `jax.jit` with a closure over the
traced params, e.g. `jax.jit(lambda p, x, rng: sample(lambda x, t: unet.apply(p, x, t), schedule, x, ...))`:
the inner jit is inlined and the params are not baked into the program as constants.
"""

from __future__ import annotations

import functools
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from emodiff_jax.diffusion.schedule import NoiseSchedule
from emodiff_jax.sampling.ddim import ddim_prev_timesteps, ddim_step, ddim_timesteps
from emodiff_jax.sampling.dpm_solver import dpm_alpha_sigma, dpm_timesteps, dpmpp_2m_step

Array = jax.Array
DenoiseFn = Callable[[Array, Array], Array]
SAMPLERS = ('ddim', 'dpmpp_2m')


def sampling_timesteps(sampler: str, num_train_timesteps: int, num_steps: int, timestep_spacing: str,
                       steps_offset: int) -> np.ndarray:
  """The decreasing timesteps `[num_steps]` the sampler visits (diffusers' rule for that scheduler)."""
  if sampler == 'ddim':
    return ddim_timesteps(num_train_timesteps, num_steps, timestep_spacing, steps_offset)
  if sampler == 'dpmpp_2m':
    return dpm_timesteps(num_train_timesteps, num_steps, timestep_spacing, steps_offset)
  raise ValueError(f'loop.py: sampler must be one of {SAMPLERS}, got {sampler!r}')


def _plan(schedule: NoiseSchedule, sampler: str, num_steps: int, timestep_spacing: str, steps_offset: int,
          rng: Optional[Array], eta: float) -> dict[str, Array]:
  """Per-step inputs of the loop, each with leading axis `num_steps`."""
  n_train = schedule.num_train_timesteps
  ts = sampling_timesteps(sampler, n_train, num_steps, timestep_spacing, steps_offset)
  plan = {'t': jnp.asarray(ts, jnp.int32)}
  if sampler == 'ddim':
    plan['t_prev'] = jnp.asarray(ddim_prev_timesteps(ts, n_train), jnp.int32)
    if eta > 0:
      if rng is None:
        raise ValueError('loop.py: eta > 0 needs an rng')
      plan['rng'] = jax.random.split(rng, num_steps)  # step i draws its variance noise from rng[i]
  else:
    alpha, sigma = dpm_alpha_sigma(schedule, ts)
    idx = np.arange(num_steps)
    plan.update(alpha_s=alpha[:-1], sigma_s=sigma[:-1], alpha_t=alpha[1:], sigma_t=sigma[1:],
                alpha_prev=alpha[np.maximum(idx - 1, 0)], sigma_prev=sigma[np.maximum(idx - 1, 0)],
                # first order at the first step and at the last one (which lands on sigma = 0).
                second_order=jnp.asarray((idx > 0) & (idx < num_steps - 1)))
  return plan


def _step(denoise_fn: DenoiseFn, schedule: NoiseSchedule, sampler: str, eta: float, prediction_type: str,
          set_alpha_to_one: bool, carry: tuple[Array, Array], p: dict[str, Array]) -> tuple[Array, Array]:
  """One step on `carry = (x, previous data prediction)`, shared by both loops."""
  x, prev_x0 = carry
  out = denoise_fn(x, jnp.full((x.shape[0],), p['t'], jnp.int32))
  if sampler == 'ddim':
    x = ddim_step(schedule, x, out, p['t'], p['t_prev'], eta, p.get('rng'), prediction_type,
                  set_alpha_to_one=set_alpha_to_one)
    return x, prev_x0
  return dpmpp_2m_step(x, out, prev_x0, alpha_s=p['alpha_s'], sigma_s=p['sigma_s'], alpha_t=p['alpha_t'],
                       sigma_t=p['sigma_t'], alpha_prev=p['alpha_prev'], sigma_prev=p['sigma_prev'],
                       second_order=p['second_order'], prediction_type=prediction_type)


@functools.partial(jax.jit, static_argnames=('denoise_fn', 'sampler', 'num_steps', 'eta', 'prediction_type',
                                             'timestep_spacing', 'steps_offset', 'set_alpha_to_one'))
def sample(denoise_fn: DenoiseFn, schedule: NoiseSchedule, x_T: Array, *, sampler: str = 'ddim',
           num_steps: int = 50, eta: float = 0.0, rng: Optional[Array] = None, prediction_type: str = 'epsilon',
           timestep_spacing: str = 'leading', steps_offset: int = 1, set_alpha_to_one: bool = True) -> Array:
  """Runs the sampler from the noise `x_T [B, ...]` to `x_0` in one `lax.scan`.

  Args:
    sampler: `ddim` (with `eta`: 0 deterministic, > 0 stochastic from `rng`, step i using
      `jax.random.split(rng, num_steps)[i]`) or `dpmpp_2m` (DPM-Solver++(2M); `eta` must be 0).
    timestep_spacing, steps_offset: as diffusers' schedulers; SD-1.5 uses `leading` with offset 1,
      zero-terminal-SNR schedules `trailing`.
    set_alpha_to_one: DDIM's end point (see `ddim_step`).
  Returns:
    `x_0`, same shape and dtype as `x_T`.
  """
  if sampler == 'dpmpp_2m' and eta != 0:
    raise ValueError('loop.py: dpmpp_2m is deterministic; eta must be 0')
  plan = _plan(schedule, sampler, num_steps, timestep_spacing, steps_offset, rng, eta)
  body = functools.partial(_step, denoise_fn, schedule, sampler, eta, prediction_type, set_alpha_to_one)
  (x, _), _ = jax.lax.scan(lambda c, p: (body(c, p), None), (x_T, jnp.zeros_like(x_T)), plan)
  return x


def sample_python_loop(denoise_fn: DenoiseFn, schedule: NoiseSchedule, x_T: Array, *, sampler: str = 'ddim',
                       num_steps: int = 50, eta: float = 0.0, rng: Optional[Array] = None,
                       prediction_type: str = 'epsilon', timestep_spacing: str = 'leading', steps_offset: int = 1,
                       set_alpha_to_one: bool = True, return_trajectory: bool = False) -> Array:
  """`sample` as an eager Python for-loop over the same steps.

  Returns `x_0`, or with `return_trajectory` the sample after every step stacked `[num_steps, B, ...]`.
  """
  if sampler == 'dpmpp_2m' and eta != 0:
    raise ValueError('loop.py: dpmpp_2m is deterministic; eta must be 0')
  plan = _plan(schedule, sampler, num_steps, timestep_spacing, steps_offset, rng, eta)
  carry, trajectory = (x_T, jnp.zeros_like(x_T)), []
  for i in range(num_steps):
    carry = _step(denoise_fn, schedule, sampler, eta, prediction_type, set_alpha_to_one, carry,
                  jax.tree_util.tree_map(lambda v: v[i], plan))
    trajectory.append(carry[0])
  return jnp.stack(trajectory) if return_trajectory else carry[0]
