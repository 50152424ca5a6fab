"""Emotion editing: the paper's intensity rule, mixing, keyframe curves, and their errors."""

import numpy as np
import pytest

from emodiff_jax.emotion import editing
from emodiff_jax.synth.expression import EMOTIONS, emotion_direction

T, D = 12, 50


@pytest.fixture
def neutral():
  return np.random.default_rng(0).standard_normal((T, D)).astype(np.float32)


@pytest.fixture
def directions():
  return {e: emotion_direction(e) for e in EMOTIONS}


def test_interpolate_is_the_papers_rule(neutral):
  emotional = neutral + np.random.default_rng(1).standard_normal((T, D)).astype(np.float32)
  for alpha in (0.0, 0.3, 1.0):
    np.testing.assert_allclose(editing.interpolate(neutral, emotional, alpha),
                               neutral + alpha * (emotional - neutral), rtol=0, atol=1e-6)
  np.testing.assert_array_equal(editing.interpolate(neutral, emotional, 0.0), neutral)
  np.testing.assert_allclose(editing.interpolate(neutral, emotional, 1.0), emotional, atol=1e-6)
  per_frame = np.linspace(0, 1, T)
  out = editing.interpolate(neutral, emotional, per_frame)
  np.testing.assert_allclose(out, neutral + per_frame[:, None] * (emotional - neutral), atol=1e-6)
  assert editing.interpolate(neutral[0], emotional[0], 0.5).shape == (D,)


def test_extrapolation_needs_opt_in(neutral):
  with pytest.raises(ValueError, match="allow_extrapolation"):
    editing.interpolate(neutral, neutral + 1, 1.5)
  np.testing.assert_allclose(editing.interpolate(neutral, neutral + 1, 1.5, allow_extrapolation=True),
                             neutral + 1.5, atol=1e-6)


@pytest.mark.parametrize("alpha, message", [(float("nan"), "NaN"), (-0.1, ">= 0"), (np.array([0.2, -1.0]), ">= 0")])
def test_bad_intensity_raises(neutral, alpha, message):
  with pytest.raises(ValueError, match=message):
    editing.interpolate(neutral[:2], neutral[:2], alpha)


def test_mixing_is_the_weighted_sum_of_directions(directions):
  mixed = editing.mix_directions({"happy": 0.7, "surprised": 0.3}, directions)
  np.testing.assert_allclose(mixed, 0.7 * directions["happy"] + 0.3 * directions["surprised"], atol=1e-7)


def test_mixing_rejects_negative_weights_and_unknown_emotions(directions):
  with pytest.raises(ValueError, match="'sad'.*>= 0"):
    editing.mix_directions({"happy": 1.0, "sad": -0.2}, directions)
  with pytest.raises(ValueError, match="unknown emotion 'joyful'; expected one of neutral, angry"):
    editing.mix_directions({"joyful": 1.0}, directions)
  with pytest.raises(ValueError, match="no direction for emotion 'sad'"):
    editing.mix_directions({"sad": 1.0}, {"happy": directions["happy"]})


def test_curve_is_exact_at_keyframes_and_constant_outside():
  fps = 25.0
  alphas = editing.intensity_curve("0.4s:0.0, 2s:1.0, 4s:0.3", num_frames=150, fps=fps)
  assert alphas.shape == (150,) and alphas.dtype == np.float32
  for time, value in ((0.4, 0.0), (2.0, 1.0), (4.0, 0.3)):
    assert alphas[int(round(time * fps))] == pytest.approx(value, abs=1e-7)
  assert np.all(alphas[:10] == 0.0) and np.all(alphas[100:] == pytest.approx(0.3))
  assert alphas[30] == pytest.approx((30 / fps - 0.4) / 1.6, abs=1e-6)  # linear in between


def test_curve_is_monotone_between_monotone_keyframes():
  alphas = editing.intensity_curve("0s:0.1,1s:0.5,3s:0.9", num_frames=100, fps=25.0)
  assert np.all(np.diff(alphas[:76]) > 0)
  alphas = editing.intensity_curve("0s:1.0,2s:0.0", num_frames=50, fps=25.0)
  assert np.all(np.diff(alphas) < 0)


@pytest.mark.parametrize("spec, message", [
    ("", "empty intensity curve"),
    ("0s:0.0;2s:1.0", "malformed keyframe"),
    ("0s:0.0,two:1.0", "malformed keyframe 'two:1.0'"),
    ("0s:0.0,2s", "malformed keyframe '2s'"),
    ("2s:0.0,1s:1.0", "times must increase: 1s after 2s"),
    ("0s:0.0,0s:1.0", "times must increase"),
    ("-1s:0.0,1s:1.0", "time -1s < 0"),
    ("0s:-0.5", ">= 0"),
    ("0s:nan", "NaN"),
    ("0s:0,1s:1.2", "allow_extrapolation"),
])
def test_malformed_curve_says_what_is_wrong_and_the_format(spec, message):
  with pytest.raises(ValueError, match=message) as info:
    editing.parse_intensity_curve(spec)
  assert "0s:0.0,2s:1.0,4s:0.3" in str(info.value)


def test_expression_sequence_combines_trajectory_directions_and_curve(neutral, directions):
  out = editing.expression_sequence(neutral, directions, "happy", "0s:0.0,0.44s:1.0", fps=25.0)
  assert out.shape == (T, D) and out.dtype == np.float32
  np.testing.assert_array_equal(out[0], neutral[0])
  np.testing.assert_allclose(out[11], neutral[11] + directions["happy"], atol=1e-6)
  mixed = editing.expression_sequence(neutral, directions, {"happy": 0.7, "surprised": 0.3}, 0.5)
  np.testing.assert_allclose(mixed, neutral + 0.5 * (0.7 * directions["happy"] + 0.3 * directions["surprised"]),
                             atol=1e-6)
  per_frame = np.linspace(0, 1, T, dtype=np.float32)
  out = editing.expression_sequence(neutral, directions, "sad", per_frame)
  np.testing.assert_allclose(out, neutral + per_frame[:, None] * directions["sad"], atol=1e-6)


def test_expression_sequence_errors(neutral, directions):
  with pytest.raises(ValueError, match="unknown emotion 'hapy'"):
    editing.expression_sequence(neutral, directions, "hapy", 0.5)
  with pytest.raises(ValueError, match="3 intensities for 12 frames"):
    editing.expression_sequence(neutral, directions, "happy", np.zeros(3))
  with pytest.raises(ValueError, match="NaN"):
    editing.expression_sequence(neutral, directions, "happy", float("nan"))


def _random_generator(keep_neutral=None):
  """A small random-weight expression generator (its edits move every coefficient, pose included), with
  the config's `model.keep_neutral` unless one is given."""
  import jax

  from configs import expr_gan_synthetic
  from emodiff_jax.emotion.gan_train import model_config
  from emodiff_jax.models.expression_gan import init_params

  gan = expr_gan_synthetic.get_config()
  gan.model.hidden_size = 16
  gan.model.num_layers = 1
  if keep_neutral is not None:
    gan.model.keep_neutral = keep_neutral
  return gan, init_params(model_config(gan), jax.random.key(3))[0]


def test_generated_edit_leaves_the_kept_coefficients_at_the_neutral_trajectory():
  from emodiff_jax.emotion.condition import generated_expressions
  from emodiff_jax.synth.expression import POSE_INDICES

  pose = list(POSE_INDICES)
  audio = np.random.default_rng(0).standard_normal(16000).astype(np.float32)
  free = _random_generator(())
  kept = _random_generator()
  assert list(kept[0].model.keep_neutral) == pose, "the synthetic config keeps the head pose out of the edit"
  others = [i for i in range(D) if i not in pose]
  for emotion, intensity in (("angry", 1.0), ("happy", 0.4), ({"sad": 0.5, "fear": 0.5}, "0:0,1:1")):
    e_free, n_free = generated_expressions(*free, emotion, intensity, audio, T, seed=1)
    e_kept, n_kept = generated_expressions(*kept, emotion, intensity, audio, T, seed=1)
    np.testing.assert_array_equal(n_kept, n_free)
    assert np.abs(e_free[:, pose] - n_free[:, pose]).max() > 1e-3, "the random generator's edit moves pose"
    np.testing.assert_array_equal(e_kept[:, pose], n_kept[:, pose])
    np.testing.assert_allclose(e_kept[:, others], e_free[:, others], rtol=0, atol=1e-6)
