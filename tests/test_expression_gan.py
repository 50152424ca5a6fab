"""Expression GAN: the modules, its data, a short training run and (slow) training to the targets."""

import dataclasses
import json
import time

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import expr_gan_synthetic
from emodiff_jax.emotion import gan_eval, gan_train
from emodiff_jax.emotion.expression_data import record_trajectories, synthetic_trajectories
from emodiff_jax.models.expression_gan import (
  ExpressionDiscriminator,
  ExpressionGANConfig,
  ExpressionGenerator,
  discriminator_adversarial_loss,
  generator_adversarial_loss,
  init_params,
)
from emodiff_jax.synth.expression import EMOTIONS, EXPRESSION_DIM
from emodiff_jax.synth.world import generate_clip, list_clips

SMALL = ExpressionGANConfig(noise_dim=4, audio_dim=1, embed_dim=4, hidden_size=16, num_layers=2, disc_channels=16,
                            disc_layers=2, disc_kernel=3)


def small_config():
  config = expr_gan_synthetic.get_config()
  config.model.update(noise_dim=8, hidden_size=32, disc_channels=32, disc_layers=2)
  config.optimizer.update(g_lr=1e-3, d_lr=1e-3)
  config.train.batch_size = 16
  return config


@pytest.fixture(scope="module")
def small_data():
  return synthetic_trajectories("train", clips_per_condition=1, num_frames=16)


def test_generator_output_depends_on_emotion_alpha_noise_and_audio():
  g_params, _ = init_params(SMALL, jax.random.key(0))
  apply = jax.jit(ExpressionGenerator(SMALL).apply)
  b, t = 2, 6
  rng = np.random.default_rng(0)
  noise, audio = rng.standard_normal((b, t, 4), np.float32), rng.uniform(size=(b, t, 1)).astype(np.float32)
  run = lambda emotion, alpha, z=noise, a=audio: np.asarray(apply({"params": g_params}, jnp.full((b,), emotion),
                                                                  jnp.full((b,), alpha), z, a))
  happy = run(EMOTIONS.index("happy"), 1.0)
  assert happy.shape == (b, t, EXPRESSION_DIM)
  assert np.abs(happy - run(EMOTIONS.index("sad"), 1.0)).max() > 1e-4
  assert np.abs(happy - run(EMOTIONS.index("happy"), 0.5)).max() > 1e-4
  assert np.abs(happy - run(EMOTIONS.index("happy"), 1.0, z=noise[::-1])).max() > 1e-4
  assert np.abs(happy - run(EMOTIONS.index("happy"), 1.0, a=audio[::-1])).max() > 1e-4
  # The editing rule: alpha = 0 is the neutral trajectory, which alpha does not change.
  neutral = run(0, 0.0)
  np.testing.assert_allclose(run(EMOTIONS.index("happy"), 0.0), neutral, atol=1e-6)
  np.testing.assert_allclose(run(0, 1.0), neutral, atol=1e-6)
  np.testing.assert_allclose(run(EMOTIONS.index("happy"), 0.5), 0.5 * (neutral + happy), atol=1e-5)


def test_discriminator_gives_a_logit_and_emotion_logits_per_trajectory():
  _, d_params = init_params(SMALL, jax.random.key(0))
  x = jnp.asarray(np.random.default_rng(0).standard_normal((3, 6, EXPRESSION_DIM)), jnp.float32)
  audio = jnp.ones((3, 6, 1))
  apply = jax.jit(ExpressionDiscriminator(SMALL).apply)
  logits, cls = apply({"params": d_params}, x, jnp.zeros(3, jnp.int32), audio)
  assert logits.shape == (3,) and cls.shape == (3, len(EMOTIONS))
  other, _ = apply({"params": d_params}, x, jnp.ones(3, jnp.int32), audio)
  assert np.abs(np.asarray(logits - other)).max() > 1e-6  # Projection term on the emotion.


def test_bad_config_and_missing_audio_raise():
  with pytest.raises(ValueError, match="gan_loss"):
    ExpressionGANConfig(gan_loss="wasserstein")
  g_params, _ = init_params(SMALL, jax.random.key(0))
  with pytest.raises(ValueError, match="audio_dim=1"):
    ExpressionGenerator(SMALL).apply({"params": g_params}, jnp.zeros(1, jnp.int32), jnp.ones(1), jnp.zeros((1, 6, 4)))


@pytest.mark.parametrize("kind,expected_d,expected_g", [("non_saturating", 2 * np.log(2), np.log(2)),
                                                        ("hinge", 2.0, 0.0)])
def test_adversarial_losses_at_an_undecided_discriminator(kind, expected_d, expected_g):
  zeros = jnp.zeros(4)
  np.testing.assert_allclose(discriminator_adversarial_loss(zeros, zeros, kind), expected_d, rtol=1e-6)
  np.testing.assert_allclose(generator_adversarial_loss(zeros, kind), expected_g, atol=1e-6)
  # A discriminator that separates real from fake has a lower loss; G's loss rises.
  assert discriminator_adversarial_loss(zeros + 3, zeros - 3, kind) < expected_d
  assert generator_adversarial_loss(zeros - 3, kind) > expected_g


def test_synthetic_trajectories_are_the_world_clips_ground_truth_and_deterministic(small_data):
  specs = list_clips("train", "mead_like", 1)
  assert small_data.expression.shape == (len(specs), 16, EXPRESSION_DIM)
  assert small_data.audio.shape == (len(specs), 16, 1)
  assert set(small_data.emotion) == set(range(len(EMOTIONS))) and set(small_data.level) == {1, 2, 3}
  for i in (0, 5):
    np.testing.assert_array_equal(small_data.expression[i], generate_clip(specs[i], 16, resolution=16).expression)
    assert EMOTIONS[small_data.emotion[i]] == specs[i].emotion and small_data.level[i] == specs[i].level
  again = synthetic_trajectories("train", clips_per_condition=1, num_frames=16)
  np.testing.assert_array_equal(again.expression, small_data.expression)
  other = synthetic_trajectories("test", clips_per_condition=1, num_frames=16, seed=1)
  assert np.abs(other.expression[0] - small_data.expression[0]).max() > 0


def test_balanced_batches_give_every_emotion_the_same_share(small_data):
  """`train.balance_emotions`: neutral (one level) is drawn as often as each emotion (three levels); the
  draw depends on (seed, step) only."""
  assert small_data.sampling_weights(False) is None
  p = small_data.sampling_weights(True)
  per_emotion = np.bincount(small_data.emotion, weights=p, minlength=len(EMOTIONS))
  np.testing.assert_allclose(per_emotion, 1 / len(EMOTIONS))
  neutral = small_data.emotion == EMOTIONS.index("neutral")
  balanced = neutral[gan_train.batch_indices(0, 5, len(small_data), 8000, p)].mean()
  uniform = neutral[gan_train.batch_indices(0, 5, len(small_data), 8000)].mean()
  assert abs(balanced - 1 / 8) < 0.015 and abs(uniform - neutral.mean()) < 0.015 and neutral.mean() < 0.06
  np.testing.assert_array_equal(gan_train.batch_indices(0, 5, len(small_data), 32, p),
                                gan_train.batch_indices(0, 5, len(small_data), 32, p))
  assert not np.array_equal(gan_train.batch_indices(0, 5, len(small_data), 32, p),
                            gan_train.batch_indices(0, 6, len(small_data), 32, p))


def test_record_trajectories_cut_windows_with_labels_and_loudness():
  rng = np.random.default_rng(0)
  expression = rng.standard_normal((40, EXPRESSION_DIM)).astype(np.float32)
  audio = (rng.uniform(-0.5, 0.5, 40 * 640) * 32767).astype(np.int16)
  records = [{"expression": expression, "audio": audio, "emotion": 5, "level": 2, "has_expression": True},
             {"expression": expression, "audio": audio, "emotion": 1, "level": 3, "has_expression": False},
             {"expression": expression[:10], "audio": audio[:6400], "emotion": 2, "level": 1}]
  data = record_trajectories(records, num_frames=16)
  assert data.expression.shape == (2, 16, EXPRESSION_DIM) and data.audio.shape == (2, 16, 1)
  np.testing.assert_array_equal(data.expression[1], expression[16:32])
  assert list(data.emotion) == [5, 5] and list(data.level) == [2, 2]
  assert 0.0 <= data.audio.min() and data.audio.max() == pytest.approx(1.0)
  with pytest.raises(ValueError, match="64 frames"):
    record_trajectories(records, num_frames=64)


def test_short_training_raises_generator_classification_accuracy(small_data):
  _, history = gan_train.train_gan(small_config(), small_data, steps=150)
  assert all(np.isfinite(v).all() for v in history.values())
  first, last = slice(0, 20), slice(-20, None)
  assert history["g_cls_acc"][first].mean() < 0.5 < 0.9 < history["g_cls_acc"][last].mean()
  assert history["d_real_cls_acc"][last].mean() > 0.9
  assert history["g_rec"][last].mean() < 0.85 * history["g_rec"][first].mean()
  # Neither player wins outright: D's adversarial loss stays near 2 log 2, its logits near 0.
  assert 0.8 < history["d_adv"][last].mean() < 1.6
  assert abs(history["d_real_logit"][last].mean() - history["d_fake_logit"][last].mean()) < 1.0


@pytest.mark.slow
def test_trains_to_emotion_intensity_and_neutral_targets():
  config = expr_gan_synthetic.get_config()
  start = time.time()
  train, test = gan_eval.evaluation_data(config)
  state, _ = gan_train.train_gan(config, train, config.train.steps)
  trained = time.time()
  result = gan_eval.evaluate_generator(config, state.g_ema, train, test)
  print(f"\ndata + {config.train.steps} GAN steps: {trained - start:.0f} s, evaluation: {time.time() - trained:.0f} s")
  print(gan_eval.markdown_report(result))
  assert result["accuracy"]["real_accuracy"] >= 0.95
  assert all(t["met"] for t in result["targets"].values()), result["targets"]


def test_an_untrained_generator_misses_the_targets_and_the_report_says_so(small_data, tmp_path):
  config = small_config()
  config.classifier.steps, config.eval.num_alphas, config.eval.num_samples = 100, 3, 4
  g_params = init_params(gan_train.model_config(config), jax.random.key(0))[0]
  result = gan_eval.evaluate_generator(config, g_params, small_data, small_data)
  assert result["accuracy"]["real_accuracy"] > 0.5  # the classifier itself works on real trajectories
  assert result["accuracy"]["accuracy"] < 0.5 and not result["targets"]["accuracy"]["met"]
  assert sorted(result["intensity"]) == sorted(EMOTIONS[1:])
  for r in result["intensity"].values():  # strength: the edit at alpha 1 over the real emotion's span
    np.testing.assert_allclose(r["strength"], (r["projection"][-1] - r["projection"][0]) / r["span"])
  assert not result["targets"]["strength"]["met"]  # an untrained LSTM's edit is far from any emotion's span
  paths = gan_eval.write_report(result, str(tmp_path))
  assert json.loads(open(paths["json"]).read())["targets"]["accuracy"]["met"] is False
  assert "| accuracy |" in open(paths["markdown"]).read() and "| NO |" in open(paths["markdown"]).read()


def test_eval_expr_reports_a_missing_checkpoint_in_one_line(tmp_path, capsys):
  from launch import eval_expr
  assert eval_expr.main(["--checkpoint", str(tmp_path / "nope"), "--out", str(tmp_path / "out")]) == 2
  err = capsys.readouterr().err.strip()
  assert err.count("\n") == 0 and "nope" in err


@pytest.mark.slow
def test_the_shipped_checkpoints_generator_meets_every_target(tmp_path):
  """The generator inside `data/checkpoints/synthetic` (README, GAN section), scored from the bundle alone."""
  from launch import eval_expr
  assert eval_expr.main(["--out", str(tmp_path)]) == 0
  targets = json.loads((tmp_path / "metrics.json").read_text())["targets"]
  assert set(targets) == {"accuracy", "spearman", "neutral", "strength", "neutral_drift"}
  assert all(t["met"] for t in targets.values()), targets


def test_kept_coefficients_follow_the_neutral_trajectory_at_every_alpha():
  from emodiff_jax.synth.expression import POSE_INDICES
  pose = list(POSE_INDICES)
  free = ExpressionGANConfig(expression_dim=20, hidden_size=8, num_layers=1, audio_dim=1)
  kept = dataclasses.replace(free, keep_neutral=pose)
  params = init_params(free, jax.random.key(0))[0]  # same params: keep_neutral adds none
  rng = np.random.default_rng(0)
  noise = rng.standard_normal((4, 6, free.noise_dim)).astype(np.float32)
  audio = rng.uniform(size=(4, 6, 1)).astype(np.float32)
  emotion = np.asarray([1, 3, 5, 0])
  run = lambda cfg, alpha: np.asarray(ExpressionGenerator(cfg).apply({"params": params}, emotion,
                                                                     np.full(4, alpha, np.float32), noise, audio))
  neutral = run(free, 0.0)
  np.testing.assert_array_equal(run(kept, 0.0), neutral)
  others = [i for i in range(20) if i not in pose]
  for alpha in (0.4, 1.0):
    assert np.abs(run(free, alpha)[..., pose] - neutral[..., pose]).max() > 1e-3  # a free edit moves pose
    np.testing.assert_allclose(run(kept, alpha)[..., pose], neutral[..., pose], rtol=0, atol=1e-6)
    np.testing.assert_allclose(run(kept, alpha)[..., others], run(free, alpha)[..., others], rtol=0, atol=1e-6)
  with pytest.raises(ValueError, match=r"keep_neutral=\[15, 20\]: indices \[20\] outside the 20-d"):
    ExpressionGANConfig(expression_dim=20, keep_neutral=(15, 20))


@pytest.mark.filterwarnings("ignore::scipy.stats.ConstantInputWarning")  # a constant generator
def test_neutral_drift_is_the_generated_neutral_mean_off_the_real_one_in_real_spreads(small_data):
  config = small_config()
  params = init_params(gan_train.model_config(config), jax.random.key(0))[0]
  real = small_data.where(small_data.emotion == 0).expression
  mean, std = real.mean((0, 1)), np.maximum(real.std((0, 1)), 0.05)
  roll = gan_eval.COEFFICIENTS.index("head_roll")
  for offset in (0.0, 3.0):
    bias = mean.copy()
    bias[roll] += offset * std[roll]  # a generator whose output is `bias` at every frame
    params["proj_out"] = {"kernel": np.zeros_like(params["proj_out"]["kernel"]), "bias": bias}
    drift = gan_train.neutral_drift(config, params, small_data, num_samples=4)
    expected = np.zeros_like(mean)
    expected[roll] = offset
    np.testing.assert_allclose(drift, expected, rtol=0, atol=1e-4)
  config.classifier.steps, config.eval.num_alphas, config.eval.num_samples = 20, 3, 4
  target = gan_eval.evaluate_generator(config, params, small_data, small_data)["targets"]["neutral_drift"]
  assert not target["met"] and target["value"] == "3.00 (head_roll)", target


def test_generator_ema_follows_the_raw_weights_at_the_configured_decay(small_data):
  config = small_config()
  batch = small_data.batch(np.arange(8))
  for decay in (0.0, 0.5):
    config.train.ema_decay = decay
    state = gan_train.create_gan_state(config, jax.random.key(0))
    step, expected = gan_train.make_gan_step(config), state.g_params
    for _ in range(3):
      state, _ = step(state, batch)
      expected = jax.tree.map(lambda e, p: decay * e + (1 - decay) * p, expected, state.g_params)
    chex.assert_trees_all_close(state.g_ema, expected, rtol=1e-6, atol=1e-7)
    if decay == 0.0:
      chex.assert_trees_all_equal(state.g_ema, state.g_params)
    else:  # the average lags the moving weights
      assert max(float(np.abs(a - b).max()) for a, b in zip(jax.tree.leaves(state.g_ema),
                                                             jax.tree.leaves(state.g_params))) > 1e-4
