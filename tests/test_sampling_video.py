"""Video sampling: guidance weights and rescale, window plans, the jitted window sampler (scan vs Python
loop, guidance scale 1 vs the conditional pass, batched vs separate guidance passes, conditions and motion
frames change the output) and the bundle format."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from emodiff_jax.sampling.bundle import BundleError, load_bundle
from emodiff_jax.sampling.guidance import Guidance, combine, rescale_guidance
from emodiff_jax.sampling.loop import sample, sample_python_loop
from emodiff_jax.sampling.video import VideoSampler, WindowPlan, window_audio, window_expression
from tests.inference_fixtures import write_micro_bundle


def test_guidance_passes_and_weights():
  assert Guidance().passes() == (((True, True, True, True), 1.0),)
  assert not Guidance(expression=3.0).needs_neutral
  passes = Guidance(reference=2.0, audio=3.0, expression=1.5).passes()
  assert [p for p, _ in passes] == [(False, False, False, False), (True, False, False, False),
                                    (True, True, False, False), (True, True, True, True)]
  weights = [w for _, w in passes]
  np.testing.assert_allclose(weights, [-1.0, -1.0, 1.5, 1.5])
  assert sum(weights) == pytest.approx(1.0)
  assert [p for p, _ in Guidance(reference=1.0, audio=2.0, expression=2.0).passes()] == [
      (True, False, False, False), (True, True, True, True)]
  # out = e0 + s_r (e1 - e0) + s_a (e2 - e1) + s_e (e3 - e2), written out.
  e = jax.random.normal(jax.random.key(0), (4, 3, 5))
  s_r, s_a, s_e = 2.0, 3.0, 1.5
  expected = e[0] + s_r * (e[1] - e[0]) + s_a * (e[2] - e[1]) + s_e * (e[3] - e[2])
  chex.assert_trees_all_close(combine(e, tuple(weights)), expected, atol=1e-5)


def test_emotion_guidance_weights():
  # Emotion alone: the intensity-0 pass e_n and the full one e_3, out = e_n + s_m (e_3 - e_n).
  g = Guidance(emotion=4.0)
  assert g.needs_neutral
  assert g.passes() == (((True, True, True, False), -3.0), ((True, True, True, True), 4.0))
  # With every scale: the form above plus (s_m - 1) (e_3 - e_n).
  passes = Guidance(reference=2.0, audio=3.0, expression=1.5, emotion=2.5).passes()
  assert [p for p, _ in passes] == [(False, False, False, False), (True, False, False, False),
                                    (True, True, False, False), (True, True, True, False), (True, True, True, True)]
  weights = tuple(w for _, w in passes)
  assert sum(weights) == pytest.approx(1.0)
  e = jax.random.normal(jax.random.key(1), (5, 3, 5))  # e0, e1, e2, e_n, e3
  expected = e[0] + 2.0 * (e[1] - e[0]) + 3.0 * (e[2] - e[1]) + 1.5 * (e[4] - e[2]) + 1.5 * (e[4] - e[3])
  chex.assert_trees_all_close(combine(e, weights), expected, atol=1e-5)


def test_emotion_guidance_interval_weights():
  """Inside `[emotion_t_min, emotion_t_max]` the emotion scale applies, outside it the weights are those of
  `emotion=1` (the intensity-0 pass weighs 0); the default interval holds every training timestep."""
  g = Guidance(audio=2.0, emotion=3.0, emotion_t_min=400, emotion_t_max=800)
  flags = [f for f, _ in g.passes()]
  w = g.weights_at(jnp.asarray([0, 399, 400, 800, 801, 999]))
  chex.assert_shape(w, (4, 6))
  inside = [w_ for _, w_ in g.passes()]
  outside = [w_ for _, w_ in Guidance(audio=2.0).passes()]
  assert flags == [(True, False, False, False), (True, True, False, False), (True, True, True, False),
                   (True, True, True, True)]
  for col, on in enumerate([False, False, True, True, False, False]):
    expected = inside if on else [outside[0], outside[1], 0.0, outside[2]]
    np.testing.assert_allclose(w[:, col], expected)
    assert float(w[:, col].sum()) == pytest.approx(1.0)
  np.testing.assert_allclose(Guidance(emotion=3.0).weights_at(jnp.arange(0, 1000, 37)),
                             np.repeat([[-2.0], [3.0]], len(range(0, 1000, 37)), axis=1))
  with pytest.raises(ValueError, match="emotion_t_min"):
    Guidance(emotion_t_min=600, emotion_t_max=500)


def test_guidance_rescale_is_lin_et_al_per_frame():
  """Lin et al. 2024 Sec. 3.4 written out per frame in numpy: phi = 1 gives each frame the positive output's
  standard deviation, phi = 0 changes nothing; the rescale keeps the all-conditions pass even at weight 0."""
  rng = np.random.default_rng(0)
  guided = rng.normal(0, 3.0, (2, 3, 4, 4, 4)).astype(np.float32)
  positive = rng.normal(0, 1.0, (2, 3, 4, 4, 4)).astype(np.float32)
  std = lambda a: a.reshape(2, 3, -1).std(-1)[..., None, None, None]
  for phi in (0.0, 0.7, 1.0):
    expected = phi * guided * std(positive) / std(guided) + (1 - phi) * guided
    out = rescale_guidance(jnp.asarray(guided), jnp.asarray(positive), phi)
    chex.assert_trees_all_close(out, expected, rtol=1e-5)
  out = np.asarray(rescale_guidance(jnp.asarray(guided), jnp.asarray(positive), 1.0))
  np.testing.assert_allclose(out.reshape(2, 3, -1).std(-1), positive.reshape(2, 3, -1).std(-1), rtol=1e-5)
  g = Guidance(expression=0.0, rescale=0.7)  # e_3 weighs 0 (s_e + s_m - 1 = 0) but the rescale reads it
  assert g.passes() == (((True, True, False, False), 1.0), ((True, True, True, True), 0.0))
  assert g.outside_passes() == (0, 1)
  with pytest.raises(ValueError, match="rescale"):
    Guidance(rescale=1.5)


@pytest.mark.parametrize("n,t,o", [(1, 8, 2), (8, 8, 2), (9, 8, 2), (50, 8, 2), (31, 4, 1), (17, 6, 0)])
def test_window_plan_emits_every_frame_once(n, t, o):
  plan = WindowPlan(n, t, o)
  emitted = np.concatenate([np.arange(*plan.emitted(w)) for w in range(plan.num_windows)])
  np.testing.assert_array_equal(emitted, np.arange(n))
  assert plan.start(plan.num_windows - 1) < n  # no window made only of padding
  for w in range(1, plan.num_windows):  # the motion frames of window w are the last frames of w-1
    assert plan.start(w) == plan.start(w - 1) + t - o


def test_window_inputs():
  audio = np.arange(1, 3 * 640 + 1, dtype=np.float32)
  out = window_audio(audio, start=0, window=2, margin=1)
  assert out.shape == (4 * 640,)
  np.testing.assert_array_equal(out[:640], 0.0)  # margin before the start
  np.testing.assert_array_equal(out[640:], audio)
  expr = np.arange(6, dtype=np.float32).reshape(3, 2)
  np.testing.assert_array_equal(window_expression(expr, 2, 3), expr[[2, 2, 2]])


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
  return load_bundle(write_micro_bundle(str(tmp_path_factory.mktemp("bundle") / "micro")))


def _inputs(bundle, b=2, seed=0):
  cfg = bundle.config
  t, m, r = cfg.sampling.window, cfg.audio_margin, cfg.model.resolution
  rng = np.random.default_rng(seed)
  return dict(images=rng.uniform(-1, 1, (b, r, r, 3)).astype(np.float32),
              audio=rng.normal(0, 0.3, (b, (t + 2 * m) * 640)).astype(np.float32),
              expression=rng.normal(0, 0.5, (b, t, 50)).astype(np.float32),
              keys=jax.vmap(jax.random.key)(jnp.arange(b, dtype=jnp.uint32)))


def _sampler(bundle, **guidance):
  cfg = bundle.config.sampling.copy_and_resolve_references()
  cfg.guidance.update(guidance)
  return VideoSampler(bundle.models(), bundle.config.diffusion, cfg, bundle.config.audio_margin)


def _window(sampler, bundle, x, motion=None, has_motion=False, w=0):
  ref = sampler.reference(bundle.params, x["images"])
  b, t = x["expression"].shape[:2]
  if motion is None:
    motion = jnp.zeros((b, sampler.cfg.overlap) + ref["latent"].shape[1:])
  return sampler.window(bundle.params, ref, x["audio"], x["expression"], motion, jnp.asarray(has_motion), x["keys"],
                        jnp.asarray(w, jnp.int32))


def test_bundle_round_trip(bundle, tmp_path):
  again = load_bundle(write_micro_bundle(str(tmp_path / "b")))
  chex.assert_trees_all_equal(again.params, bundle.params)  # same seed, same float16 round trip
  assert again.config.sampling.window == 4
  with pytest.raises(BundleError, match="not found"):
    load_bundle(str(tmp_path / "missing"))
  (tmp_path / "empty").mkdir()
  with pytest.raises(BundleError, match="config.json missing"):
    load_bundle(str(tmp_path / "empty"))


def test_scan_equals_python_loop_and_scale_one_equals_conditional(bundle):
  sampler = _sampler(bundle)
  x = _inputs(bundle)
  ref = sampler.reference(bundle.params, x["images"])
  conds = sampler.conditions(bundle.params, ref, x["audio"], x["expression"])
  assert len(conds) == 1  # all scales 1: the conditional pass alone
  denoise = jax.jit(sampler.denoiser(bundle.params, conds))
  shape = (2, 4) + ref["latent"].shape[1:]
  x_T = jax.random.normal(jax.random.key(3), shape)
  t = jnp.full((2,), 500, jnp.int32)
  models = bundle.models()
  ctx = jnp.zeros((2, 1, models.backbone.config.unet.cross_attention_dim))
  direct = jax.jit(models.backbone.apply)({"params": bundle.params["backbone"]}, x_T, t, ctx, **conds[0])
  chex.assert_trees_all_close(denoise(x_T, t), direct, atol=1e-5)
  scan = sample(denoise, sampler.objective.schedule, x_T, **sampler.sample_kwargs)
  loop = sample_python_loop(denoise, sampler.objective.schedule, x_T, **sampler.sample_kwargs)
  chex.assert_trees_all_close(scan, loop, atol=1e-5, rtol=1e-5)


SCALES = dict(reference=2.0, audio=3.0, expression=1.5)


@pytest.fixture(scope="module")
def guided(bundle):
  """The window sampler with 4 guidance passes, and its output on the base inputs."""
  sampler = _sampler(bundle, **SCALES)
  x = _inputs(bundle)
  return sampler, x, _window(sampler, bundle, x)


def test_batched_guidance_equals_separate_passes(bundle, guided):
  _, x, batched = guided
  separate = _sampler(bundle, **SCALES)
  separate.cfg.batch_passes = False
  chex.assert_trees_all_close(_window(separate, bundle, x), batched, atol=1e-4, rtol=1e-4)


def test_conditions_and_motion_frames_change_the_window(bundle, guided):
  sampler, x, base = guided
  other = _inputs(bundle, seed=1)
  for name in ("audio", "expression", "images"):
    changed = _window(sampler, bundle, {**x, name: other[name]})
    assert float(jnp.abs(changed - base).max()) > 1e-4, name
  motion = jax.random.normal(jax.random.key(5), (2, sampler.cfg.overlap) + base.shape[2:])
  chex.assert_trees_all_equal(_window(sampler, bundle, x, motion, has_motion=False), base)
  with_motion = _window(sampler, bundle, x, motion, has_motion=True)
  assert float(jnp.abs(with_motion - base).max()) > 1e-4
  # Each example's noise comes from its own key: swapping the examples swaps the outputs.
  swapped = _window(sampler, bundle, jax.tree.map(lambda v: v[::-1], x))
  chex.assert_trees_all_close(swapped[::-1], base, atol=1e-5)


def test_emotion_guidance_follows_the_edit(bundle):
  """Emotion guidance equals `f(e_n) + s (f(e) - f(e_n))` from direct backbone calls; with e_n = e it is the
  unguided output, and without e_n it refuses to run."""
  x = _inputs(bundle)
  neutral = x["expression"] + np.random.default_rng(7).normal(0, 0.5, x["expression"].shape).astype(np.float32)
  sampler = _sampler(bundle, emotion=3.0)
  ref = sampler.reference(bundle.params, x["images"])
  models = bundle.models()
  ctx = jnp.zeros((2, 1, models.backbone.config.unet.cross_attention_dim))
  x_t = jax.random.normal(jax.random.key(4), (2, 4) + ref["latent"].shape[1:])
  t = jnp.full((2,), 500, jnp.int32)
  apply = jax.jit(models.backbone.apply)
  plain = sampler.conditions(bundle.params, ref, x["audio"], x["expression"], neutral)[-1]
  f_full = apply({"params": bundle.params["backbone"]}, x_t, t, ctx, **plain)
  f_neutral = apply({"params": bundle.params["backbone"]}, x_t, t, ctx, **{**plain, "expression": jnp.asarray(neutral)})
  assert float(jnp.abs(f_full - f_neutral).max()) > 1e-4  # the expression layers read the difference
  guided = sampler.denoiser(bundle.params, sampler.conditions(bundle.params, ref, x["audio"], x["expression"], neutral))
  chex.assert_trees_all_close(guided(x_t, t), f_neutral + 3.0 * (f_full - f_neutral), atol=1e-4, rtol=1e-4)
  same = sampler.denoiser(bundle.params, sampler.conditions(bundle.params, ref, x["audio"], x["expression"],
                                                            x["expression"]))
  chex.assert_trees_all_close(same(x_t, t), f_full, atol=1e-4, rtol=1e-4)
  with pytest.raises(ValueError, match="intensity-0"):
    sampler.conditions(bundle.params, ref, x["audio"], x["expression"])
  # Limited to an interval, emotion guidance is that output inside it and the unguided one outside it.
  limited = _sampler(bundle, emotion=3.0, emotion_t_min=400, emotion_t_max=600)
  denoise = limited.denoiser(bundle.params, limited.conditions(bundle.params, ref, x["audio"], x["expression"],
                                                               neutral))
  chex.assert_trees_all_close(denoise(x_t, t), f_neutral + 3.0 * (f_full - f_neutral), atol=1e-4, rtol=1e-4)
  chex.assert_trees_all_close(denoise(x_t, jnp.asarray([700, 300])), apply(
      {"params": bundle.params["backbone"]}, x_t, jnp.asarray([700, 300]), ctx, **plain), atol=1e-4, rtol=1e-4)
  assert [limited.guidance.passes()[i][0] for i in limited.guidance.outside_passes()] == [(True, True, True, True)]
  # With guidance rescale: each frame of the guided output at the full pass's standard deviation inside the
  # interval (phi = 1), and the unguided output (nothing to rescale) outside it.
  rescaled = _sampler(bundle, emotion=3.0, emotion_t_min=400, emotion_t_max=600, rescale=1.0)
  denoise_r = rescaled.denoiser(bundle.params, rescaled.conditions(bundle.params, ref, x["audio"], x["expression"],
                                                                   neutral))
  f_guided = f_neutral + 3.0 * (f_full - f_neutral)
  std = lambda a: jnp.std(a, axis=(2, 3, 4), keepdims=True)
  chex.assert_trees_all_close(denoise_r(x_t, t), f_guided * std(f_full) / std(f_guided), atol=1e-4, rtol=1e-4)
  chex.assert_trees_all_close(denoise_r(x_t, jnp.asarray([700, 300])), denoise(x_t, jnp.asarray([700, 300])),
                              atol=1e-4, rtol=1e-4)
  mixed = jnp.asarray([500, 700])  # one example inside the interval: all passes run, weighed per example
  f_mixed = apply({"params": bundle.params["backbone"]}, x_t, mixed, ctx, **plain)
  chex.assert_trees_all_close(denoise(x_t, mixed)[1], f_mixed[1], atol=1e-4, rtol=1e-4)
  f_mixed_neutral = apply({"params": bundle.params["backbone"]}, x_t, mixed, ctx,
                          **{**plain, "expression": jnp.asarray(neutral)})
  chex.assert_trees_all_close(denoise(x_t, mixed)[0], (f_mixed_neutral + 3.0 * (f_mixed - f_mixed_neutral))[0],
                              atol=1e-4, rtol=1e-4)
