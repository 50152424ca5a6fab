"""DDIM and DPM-Solver++(2M) against diffusers' schedulers, step for step, with an analytic denoiser."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

from emodiff_jax.diffusion.schedule import make_schedule
from emodiff_jax.sampling.ddim import ddim_timesteps
from emodiff_jax.sampling.dpm_solver import dpm_timesteps
from emodiff_jax.sampling.loop import sample, sample_python_loop
from tests.parity import rel_err

SHAPE = (2, 4, 4, 3)
PATTERN = np.random.default_rng(0).standard_normal(SHAPE[1:]).astype(np.float32)
SD = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule='scaled_linear')


def denoise_jax(x, t):
  """A fixed analytic denoiser: linear in x with t-dependent coefficients."""
  t = t.astype(jnp.float32)[:, None, None, None]
  return x * (0.8 - 0.3 * t / 1000) + 0.1 * jnp.cos(t / 300) * PATTERN


def denoise_torch(x, t):
  t = torch.tensor(float(t))
  return x * (0.8 - 0.3 * t / 1000) + 0.1 * torch.cos(t / 300) * torch.from_numpy(PATTERN)


def _reference_trajectory(scheduler, x_T, num_steps, noises=None, eta=0.0):
  scheduler.set_timesteps(num_steps)
  x, out = torch.from_numpy(np.array(x_T)), []
  for i, t in enumerate(scheduler.timesteps):
    kw = dict(eta=eta, variance_noise=torch.from_numpy(noises[i])) if noises is not None else {}
    x = scheduler.step(denoise_torch(x, t), t, x, **kw).prev_sample
    out.append(x.numpy())
  return np.stack(out)


@pytest.fixture(scope='module')
def x_T():
  return jax.random.normal(jax.random.PRNGKey(0), SHAPE)


def _check(ours_kw, schedule, reference, x_T):
  traj = sample_python_loop(denoise_jax, schedule, x_T, return_trajectory=True, **ours_kw)
  for i in range(len(reference)):
    assert rel_err(traj[i], reference[i]) <= 1e-5, f'step {i}: {rel_err(traj[i], reference[i])}'
  scanned = sample(denoise_jax, schedule, x_T, **ours_kw)
  assert rel_err(scanned, traj[-1]) <= 1e-6
  assert np.abs(np.asarray(scanned) - np.asarray(x_T)).max() > 0.1  # the loop did move the sample


DDIM_CASES = [  # (prediction_type, eta, spacing, set_alpha_to_one, zero_snr)
    ('epsilon', 0.0, 'leading', True, False), ('v_prediction', 0.0, 'leading', True, False),
    ('epsilon', 0.7, 'leading', False, False), ('v_prediction', 1.0, 'linspace', True, False),
    ('v_prediction', 0.0, 'trailing', True, True), ('v_prediction', 0.5, 'trailing', True, True)]


@pytest.mark.parametrize('pred,eta,spacing,alpha_one,zero_snr', DDIM_CASES)
def test_ddim_matches_diffusers(x_T, pred, eta, spacing, alpha_one, zero_snr):
  n, rng = 10, jax.random.PRNGKey(5)
  schedule = make_schedule(**SD, rescale_zero_terminal_snr=zero_snr)
  ref = DDIMScheduler(**SD, clip_sample=False, set_alpha_to_one=alpha_one, steps_offset=1, prediction_type=pred,
                      timestep_spacing=spacing, rescale_betas_zero_snr=zero_snr)
  noises = None
  if eta > 0:  # the loop's documented noise: step i draws from split(rng, n)[i]
    noises = [np.array(jax.random.normal(k, SHAPE)) for k in jax.random.split(rng, n)]
  reference = _reference_trajectory(ref, x_T, n, noises, eta)
  _check(dict(sampler='ddim', num_steps=n, eta=eta, rng=rng, prediction_type=pred, timestep_spacing=spacing,
              steps_offset=1, set_alpha_to_one=alpha_one), schedule, reference, x_T)


@pytest.mark.parametrize('pred,spacing,n,zero_snr', [
    ('epsilon', 'linspace', 10, False), ('v_prediction', 'linspace', 10, False), ('epsilon', 'leading', 20, False),
    ('v_prediction', 'trailing', 8, True)])
def test_dpmpp_2m_matches_diffusers(x_T, pred, spacing, n, zero_snr):
  schedule = make_schedule(**SD, rescale_zero_terminal_snr=zero_snr)
  ref = DPMSolverMultistepScheduler(**SD, algorithm_type='dpmsolver++', solver_order=2, prediction_type=pred,
                                    timestep_spacing=spacing, steps_offset=1, rescale_betas_zero_snr=zero_snr)
  reference = _reference_trajectory(ref, x_T, n)
  _check(dict(sampler='dpmpp_2m', num_steps=n, prediction_type=pred, timestep_spacing=spacing, steps_offset=1),
         schedule, reference, x_T)


@pytest.mark.parametrize('spacing', ['leading', 'trailing', 'linspace'])
def test_timesteps_match_diffusers(spacing):
  for n in (1, 7, 10, 25, 50, 999, 1000):
    ddim = DDIMScheduler(**SD, steps_offset=1, timestep_spacing=spacing)
    ddim.set_timesteps(n)
    np.testing.assert_array_equal(ddim_timesteps(1000, n, spacing, 1), ddim.timesteps.numpy(), err_msg=str(n))
    if n < 1000:
      dpm = DPMSolverMultistepScheduler(**SD, steps_offset=1, timestep_spacing=spacing)
      dpm.set_timesteps(n)
      np.testing.assert_array_equal(dpm_timesteps(1000, n, spacing, 1), dpm.timesteps.numpy(), err_msg=str(n))


def test_bad_arguments_raise(x_T):
  schedule = make_schedule()
  with pytest.raises(ValueError, match='timestep_spacing'):
    ddim_timesteps(1000, 10, 'uniform')
  with pytest.raises(ValueError, match='num_steps'):
    ddim_timesteps(1000, 1001)
  with pytest.raises(ValueError, match='sampler'):
    sample_python_loop(denoise_jax, schedule, x_T, sampler='euler', num_steps=4)
  with pytest.raises(ValueError, match='rng'):
    sample_python_loop(denoise_jax, schedule, x_T, num_steps=4, eta=1.0)
  with pytest.raises(ValueError, match='eta'):
    sample_python_loop(denoise_jax, schedule, x_T, sampler='dpmpp_2m', num_steps=4, eta=1.0)
