"""Audio projection: frame alignment, windowing, locality and dependence on the audio."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from emodiff_jax.models.audio_projection import AudioProjection, AudioProjectionConfig, frame_aligned_features

CFG = AudioProjectionConfig(window=2, num_tokens=4, context_dim=8, hidden_dim=16, layers=(0, 2))


@pytest.fixture(scope="module")
def model():
  module = AudioProjection(CFG)
  hidden = jnp.asarray(np.random.default_rng(0).standard_normal((2, 40, 3, 5)), jnp.float32)
  params = module.init(jax.random.PRNGKey(0), hidden, 20)["params"]
  return jax.jit(lambda p, h: module.apply({"params": p}, h, 20)), params, hidden


def test_window_gathering_is_exact_with_edge_padding():
  # At 50 fps video on 50 Hz audio the resampling is the identity, so the windows can be checked alone.
  hidden = jnp.asarray(np.random.default_rng(1).standard_normal((2, 10, 3, 4)), jnp.float32)
  out = np.asarray(frame_aligned_features(hidden, 10, fps=50.0, window=2))
  assert out.shape == (2, 10, 5, 3, 4)
  for t in range(10):
    for j, offset in enumerate(range(-2, 3)):
      np.testing.assert_array_equal(out[:, t, j], np.asarray(hidden)[:, min(max(t + offset, 0), 9)])


def test_linear_ramp_is_resampled_exactly():
  na, t = 50, 24
  slope = np.arange(1, 7, dtype=np.float32).reshape(1, 1, 2, 3)
  hidden = jnp.asarray(np.arange(na, dtype=np.float32)[None, :, None, None] * slope + 7.0)
  out = np.asarray(frame_aligned_features(hidden, t, fps=25.0, sample_rate=16000, window=0))[:, :, 0]
  pos = 2.0 * np.arange(t) + 0.5  # centre of video frame t in 50 Hz audio-frame units.
  np.testing.assert_allclose(out, pos[None, :, None, None] * slope + 7.0, rtol=1e-6)


def test_far_audio_does_not_change_frame_tokens(model):
  fn, params, hidden = model
  base = fn(params, hidden)
  chex.assert_shape(base, (2, 20, CFG.num_tokens, CFG.context_dim))
  # Frame 5 sees resampled frames 3..7, i.e. audio frames up to 2 * 7 + 1 = 15; perturb from 20 on.
  changed = fn(params, hidden.at[:, 20:].add(3.0))
  np.testing.assert_array_equal(np.asarray(changed[:, :6]), np.asarray(base[:, :6]))
  assert np.all(np.abs(np.asarray(changed[:, 12:] - base[:, 12:])).max(axis=(2, 3)) > 1e-3)


def test_output_depends_on_selected_layers_only(model):
  fn, params, hidden = model
  base = fn(params, hidden)
  other = fn(params, hidden.at[:, :, 1].add(5.0))  # Layer 1 is not in CFG.layers.
  np.testing.assert_array_equal(np.asarray(other), np.asarray(base))
  used = fn(params, hidden.at[:, :, 2].add(0.5))
  assert np.all(np.abs(np.asarray(used - base)).max(axis=(2, 3)) > 1e-3)


def test_final_layer_norm_normalises_tokens(model):
  fn, params, hidden = model
  out = np.asarray(fn(params, hidden))
  np.testing.assert_allclose(out.mean(-1), 0.0, atol=1e-5)
  np.testing.assert_allclose(out.std(-1), 1.0, atol=1e-2)


def test_bad_window_and_layers_raise():
  module = AudioProjection(CFG)
  with pytest.raises(ValueError, match="window=2 needs 5"):
    module.init(jax.random.PRNGKey(0), jnp.zeros((1, 4, 3, 2, 5)), method=AudioProjection.project)
  with pytest.raises(ValueError, match="out of range"):
    module.init(jax.random.PRNGKey(0), jnp.zeros((1, 40, 2, 5)), 20)
