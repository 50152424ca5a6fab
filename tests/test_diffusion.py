"""Noise schedule, training losses and condition dropout against diffusers' DDPMScheduler and float64 numpy."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler

from emodiff_jax.diffusion import cond_dropout, losses, schedule as sch
from tests.parity import rel_err

SCHEDULES = [dict(beta_schedule='scaled_linear'), dict(beta_schedule='linear'),
             dict(beta_schedule='scaled_linear', rescale_zero_terminal_snr=True)]


def _ddpm(kw):
  return DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                       beta_schedule=kw['beta_schedule'],
                       rescale_betas_zero_snr=kw.get('rescale_zero_terminal_snr', False))


@pytest.mark.parametrize('kw', SCHEDULES, ids=['scaled_linear', 'linear', 'zero_snr'])
def test_schedule_matches_diffusers_ddpm(kw):
  ours, ref = sch.make_schedule(**kw), _ddpm(kw)
  if kw.get('rescale_zero_terminal_snr'):
    # diffusers rescales in float32, which moves betas by ~7e-6 relative (beta_0 = 8.50022e-4 instead of
    # 8.5e-4); we rescale in float64: compare the betas with diffusers' own rescale run in float64.
    from diffusers.schedulers.scheduling_ddpm import rescale_zero_terminal_snr
    b64 = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
    assert rel_err(ours.betas, rescale_zero_terminal_snr(b64).numpy()) <= 1e-6
  else:
    assert rel_err(ours.betas, ref.betas.numpy()) <= 1e-6
  assert rel_err(ours.alphas_cumprod, ref.alphas_cumprod.numpy()) <= 1e-6
  rng = np.random.default_rng(0)
  x0, noise = rng.standard_normal((2, 6, 4, 4, 3), dtype=np.float32)
  t = np.array([0, 999, 500, 17, 998, 250])
  want = ref.add_noise(torch.from_numpy(x0), torch.from_numpy(noise), torch.from_numpy(t)).numpy()
  assert rel_err(sch.add_noise(ours, x0, noise, t), want) <= 1e-6
  want_v = ref.get_velocity(torch.from_numpy(x0), torch.from_numpy(noise), torch.from_numpy(t)).numpy()
  assert rel_err(sch.velocity(ours, x0, noise, t), want_v) <= 1e-6
  if kw.get('rescale_zero_terminal_snr'):
    assert float(ours.alphas_cumprod[-1]) == 0.0 and float(sch.snr(ours, 999)) == 0.0
    np.testing.assert_allclose(ours.alphas_cumprod[0], _ddpm(SCHEDULES[0]).alphas_cumprod[0], rtol=1e-6)


def test_bad_schedule_name_raises():
  with pytest.raises(ValueError, match='schedule.py.*cosine'):
    sch.make_schedule(beta_schedule='cosine')
  with pytest.raises(ValueError, match='prediction_type'):
    sch.predict_x0(sch.make_schedule(), jnp.zeros((1, 2)), jnp.zeros((1, 2)), jnp.array([3]), 'eps')


@pytest.fixture(scope='module')
def noisy():
  s = sch.make_schedule()
  k1, k2 = jax.random.split(jax.random.PRNGKey(0))
  x0 = jax.random.normal(k1, (5, 4, 4, 2))
  noise = jax.random.normal(k2, x0.shape)
  t = jnp.array([0, 10, 400, 800, 999])
  return s, x0, noise, t, sch.add_noise(s, x0, noise, t)


def test_v_target_and_conversions_roundtrip(noisy):
  s, x0, noise, t, x_t = noisy
  a = np.asarray(s.alphas_cumprod, np.float64)[np.asarray(t)][:, None, None, None]
  v = losses.training_target(s, x0, noise, t, 'v_prediction')
  want = np.sqrt(a) * np.asarray(noise, np.float64) - np.sqrt(1 - a) * np.asarray(x0, np.float64)
  assert rel_err(v, want) <= 1e-6
  chex.assert_trees_all_close(losses.training_target(s, x0, noise, t, 'epsilon'), noise)
  chex.assert_trees_all_close(losses.training_target(s, x0, noise, t, 'sample'), x0)
  # Exact predictions of each type recover x0 and eps, and convert into each other.
  exact = {'epsilon': noise, 'v_prediction': v, 'sample': x0}
  for src, out in exact.items():
    assert rel_err(sch.predict_x0(s, x_t, out, t, src), x0) <= 2e-5, src
    assert rel_err(sch.predict_eps(s, x_t, out, t, src), noise) <= 1e-4, src
    for dst, want in exact.items():
      assert rel_err(sch.convert_prediction(s, x_t, out, t, src, dst), want) <= 1e-4, (src, dst)


@pytest.mark.parametrize('kw', [SCHEDULES[0], SCHEDULES[2]], ids=['sd', 'zero_snr'])
@pytest.mark.parametrize('pred', ['epsilon', 'v_prediction', 'sample'])
def test_min_snr_weights_match_float64(kw, pred):
  s = sch.make_schedule(**kw)
  t = np.array([0, 1, 50, 200, 500, 700, 900, 999])
  a = np.asarray(s.alphas_cumprod, np.float64)[t]
  snr = a / (1 - a)
  gamma = 5.0
  clipped = np.minimum(snr, gamma)
  with np.errstate(divide='ignore', invalid='ignore'):
    want = {'epsilon': np.where(snr > 0, clipped / snr, 1.0), 'v_prediction': clipped / (snr + 1),
            'sample': clipped}[pred]
  w = losses.loss_weights(s, t, pred, min_snr_gamma=gamma)
  np.testing.assert_allclose(np.asarray(w), want, rtol=1e-5)
  assert np.all(np.isfinite(w)) and np.any(np.asarray(w) < 1)
  np.testing.assert_array_equal(losses.loss_weights(s, t, pred), np.ones(len(t)))


def test_diffusion_loss_weighted_mean():
  rng = np.random.default_rng(1)
  pred, target = rng.standard_normal((2, 3, 4, 5, 2), dtype=np.float32)
  w = np.array([0.5, 1.0, 2.0], np.float32)
  per = ((pred.astype(np.float64) - target) ** 2).reshape(3, -1).mean(1)
  np.testing.assert_allclose(losses.diffusion_loss(jnp.asarray(pred), jnp.asarray(target)), per.mean(), rtol=1e-6)
  np.testing.assert_allclose(losses.diffusion_loss(jnp.asarray(pred), jnp.asarray(target), weights=jnp.asarray(w)),
                             (per * w).mean(), rtol=1e-6)
  with pytest.raises(ValueError, match='losses.py'):
    losses.diffusion_loss(jnp.zeros((2, 3)), jnp.zeros((2, 4)))


def test_change_weights_stress_the_cells_that_differ_from_the_reference():
  rng = np.random.default_rng(2)
  ref = rng.standard_normal((2, 4, 4, 3)).astype(np.float32)
  x0 = np.repeat(ref[:, None], 3, axis=1)
  x0[0, 1, 2, 3] += 2.0  # frame 1 of example 0: one cell moved by 2, another by 1 (channel means)
  x0[0, 1, 0, 0, 0] += 3.0
  w = np.asarray(losses.change_weights(jnp.asarray(x0), jnp.asarray(ref), 4.0))
  chex.assert_shape(w, (2, 3, 4, 4, 1))
  want = np.ones_like(w)
  want[0, 1, 2, 3], want[0, 1, 0, 0] = 5.0, 3.0
  np.testing.assert_allclose(w, want, rtol=1e-6)  # unchanged frames (peak 0) weigh every cell 1
  np.testing.assert_array_equal(losses.change_weights(jnp.asarray(x0), jnp.asarray(ref), 0.0), np.ones_like(w))
  with pytest.raises(ValueError, match='losses.py: change weight'):
    losses.change_weights(jnp.asarray(x0), jnp.asarray(ref), -1.0)


def test_diffusion_loss_with_cell_weights_is_each_examples_weighted_mean():
  rng = np.random.default_rng(3)
  pred, target = rng.standard_normal((2, 3, 2, 4, 4, 2), dtype=np.float32)
  cells = rng.uniform(1, 5, (3, 2, 4, 4, 1)).astype(np.float32)
  err = (pred.astype(np.float64) - target) ** 2
  w = np.broadcast_to(cells, err.shape)
  per = (err * w).reshape(3, -1).sum(1) / w.reshape(3, -1).sum(1)
  got = losses.diffusion_loss(jnp.asarray(pred), jnp.asarray(target), cell_weights=jnp.asarray(cells))
  np.testing.assert_allclose(got, per.mean(), rtol=1e-6)
  assert abs(float(got) - err.mean()) > 1e-3  # the weights move it off the plain mean
  np.testing.assert_allclose(
      losses.diffusion_loss(jnp.asarray(pred), jnp.asarray(target), cell_weights=jnp.full_like(cells, 3.0)),
      err.mean(), rtol=1e-6)


def test_an_epsilon_model_measured_in_v_space_weights_its_error_by_one_over_alpha_bar(noisy):
  s, x0, noise, t, x_t = noisy
  delta = 0.1 * jax.random.normal(jax.random.PRNGKey(3), x0.shape)
  a = np.asarray(s.alphas_cumprod, np.float64)[np.asarray(t)]
  per = (np.asarray(delta, np.float64) ** 2).reshape(len(t), -1).mean(1)
  own = losses.prediction_loss(s, x_t, noise + delta, x0, noise, t, 'epsilon')
  np.testing.assert_allclose(own, per.mean(), rtol=1e-5)
  as_v = losses.prediction_loss(s, x_t, noise + delta, x0, noise, t, 'epsilon', 'v_prediction')
  np.testing.assert_allclose(as_v, (per / a).mean(), rtol=1e-4)
  assert as_v > 10 * own  # t = 999: 1 / alpha_bar ~ 213
  # A v model measured in its own space is the plain v loss.
  v = losses.training_target(s, x0, noise, t, 'v_prediction')
  np.testing.assert_allclose(losses.prediction_loss(s, x_t, v + delta, x0, noise, t, 'v_prediction', 'v_prediction'),
                             per.mean(), rtol=1e-5)


def test_offset_noise_statistics():
  rng, strength = jax.random.PRNGKey(3), 0.3
  shape = (64, 3, 8, 8, 4)
  noise = np.asarray(losses.offset_noise(rng, shape, strength), np.float64)
  offset = noise - np.asarray(losses.offset_noise(rng, shape, 0.0), np.float64)
  # The offset is one constant per (sample, channel), shared by all pixels and all frames.
  np.testing.assert_allclose(offset, np.broadcast_to(offset[:, :1, :1, :1, :], shape), atol=1e-6)
  assert abs(offset[:, 0, 0, 0, :].std() - strength) < 0.05
  assert abs(noise.var() - (1 + strength ** 2)) < 0.05
  # Means over a sample's pixels and frames spread like the offset (plus the base noise's 1/N).
  per_channel_mean = noise.mean(axis=(1, 2, 3))
  assert abs(per_channel_mean.var() - (strength ** 2 + 1 / (3 * 8 * 8))) < 0.03
  img = np.asarray(losses.offset_noise(rng, (8, 16, 16, 4), strength))
  assert img.shape == (8, 16, 16, 4)
  with pytest.raises(ValueError, match='losses.py'):
    losses.offset_noise(rng, (16, 16, 4), strength)


RATES = {'reference': 0.05, 'audio': 0.3, 'expression': 0.5}


def test_drop_rates_independence_and_determinism():
  n = 200_000
  masks = {k: np.asarray(v) for k, v in cond_dropout.drop_mask(jax.random.PRNGKey(0), n, RATES).items()}
  tol = lambda p: 5 * np.sqrt(p * (1 - p) / n)
  for name, p in RATES.items():
    assert masks[name].dtype == bool and abs(masks[name].mean() - p) < tol(p), name
  for a, b in [('reference', 'audio'), ('audio', 'expression'), ('reference', 'expression')]:
    p = RATES[a] * RATES[b]
    assert abs((masks[a] & masks[b]).mean() - p) < tol(p), (a, b)
  p_all = RATES['reference'] * RATES['audio'] * RATES['expression']
  assert abs((masks['reference'] & masks['audio'] & masks['expression']).mean() - p_all) < tol(p_all)
  again = cond_dropout.drop_mask(jax.random.PRNGKey(0), n, RATES)
  alone = cond_dropout.drop_mask(jax.random.PRNGKey(0), n, {'audio': 0.3})
  other = cond_dropout.drop_mask(jax.random.PRNGKey(1), n, RATES)
  np.testing.assert_array_equal(again['audio'], masks['audio'])
  np.testing.assert_array_equal(alone['audio'], masks['audio'])
  assert (np.asarray(other['audio']) != masks['audio']).any()


def test_drop_rate_zero_one_exact_and_apply():
  masks = cond_dropout.drop_mask(jax.random.PRNGKey(2), 10_000, {'audio': 0.0, 'expression': 1.0})
  assert not np.asarray(masks['audio']).any() and np.asarray(masks['expression']).all()
  with pytest.raises(ValueError, match='cond_dropout.py.*audio'):
    cond_dropout.drop_mask(jax.random.PRNGKey(2), 4, {'audio': 1.5})
  x = jax.random.normal(jax.random.PRNGKey(3), (4, 3, 5))
  dropped = jnp.array([True, False, True, False])
  out = cond_dropout.apply_drop(x, dropped, cond_dropout.NULL_VALUE['audio'])
  np.testing.assert_array_equal(out[::2], np.zeros((2, 3, 5)))
  np.testing.assert_array_equal(out[1::2], x[1::2])
  null = jnp.arange(15.0).reshape(3, 5)
  out = cond_dropout.apply_drop(x, dropped, null)
  np.testing.assert_array_equal(out[2], null)
  np.testing.assert_array_equal(out[1], x[1])
  with pytest.raises(ValueError, match='cond_dropout.py'):
    cond_dropout.apply_drop(x, jnp.array([True, False]), 0.0)
