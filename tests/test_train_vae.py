"""The VAE's training run (`train/vae_loop.py`) on a micro VAE and 16x16 synthetic frames: the loss
falls, resume reproduces a straight run, metrics and previews are written, and `init.vae_checkpoint`
puts the trained VAE into a stage-1 start."""

import json
import os
import shutil

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import synthetic_vae
from emodiff_jax.models.build import build_models
from emodiff_jax.train import init
from emodiff_jax.train.init import uses_loaded_weights
from emodiff_jax.train.vae_loop import (
  change_weights,
  image_gradient_l1,
  init_vae_params,
  psnr,
  train_vae,
  vae_loss,
  weighted_mean,
)
from tests.train_configs import micro_config, micro_model


def micro_vae_config():
  """configs/synthetic_vae.py with the micro model's VAE, 16x16 frames and short intervals."""
  config = synthetic_vae.get_config()
  config.model = micro_model()
  config.data.resolution = 16
  for s in config.data.sources:
    s["clip_frames"] = 4
  config.optim.learning_rate = 3e-3
  config.optim.warmup_steps = 0
  config.optim.schedule = "constant"  # the resumed test run changes train.steps
  config.train.update(steps=12, log_every=3, checkpoint_every=6, async_checkpoints=False, eval_every=6,
                      eval_batches=1, preview_every=6, preview_examples=2)
  return config


def _metrics(workdir):
  with open(os.path.join(workdir, "tb", "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def vae_runs(tmp_path_factory):
  """Twelve steps straight (checkpoints at 6 and 12), and a run resumed from its step-6 checkpoint."""
  config = micro_vae_config()
  straight = str(tmp_path_factory.mktemp("vae_straight"))
  final = train_vae(config, straight)
  resumed = str(tmp_path_factory.mktemp("vae_resumed"))
  shutil.copytree(os.path.join(straight, "checkpoints"), os.path.join(resumed, "checkpoints"))
  shutil.rmtree(os.path.join(resumed, "checkpoints", "12"))
  again = train_vae(config, resumed)
  return dict(config=config, straight=straight, resumed=resumed, final=final, again=again)


def test_a_vae_run_replaces_a_bundles_vae(vae_runs, tmp_path):
  """`harness.with_vae_run` (`launch.evaluate --vae-run`): the run's VAE config and EMA params, the rest kept,
  and its roundtrip differs from the bundle's own."""
  from emodiff_jax.eval import harness
  from emodiff_jax.sampling.bundle import load_bundle
  from emodiff_jax.train.vae_loop import load_vae
  from tests.inference_fixtures import write_micro_bundle
  bundle = load_bundle(write_micro_bundle(str(tmp_path / "bundle")))
  swapped = harness.with_vae_run(bundle, vae_runs["straight"])
  run_config, run_vae = load_vae(vae_runs["straight"])
  chex.assert_trees_all_equal(swapped.params["vae"], run_vae)
  chex.assert_trees_all_equal({k: v for k, v in swapped.params.items() if k != "vae"},
                              {k: v for k, v in bundle.params.items() if k != "vae"})
  assert swapped.config.model.vae == run_config.model.vae and swapped.config.sampling == bundle.config.sampling
  assert not np.array_equal(jax.tree.leaves(swapped.params["vae"])[0], jax.tree.leaves(bundle.params["vae"])[0])
  partition, identity = harness.identity_pool("test")[0]
  args = (harness.portrait(partition, identity), harness.world_audio(3, 8), "happy", 1.0, 3)
  ours, theirs = harness.vae_roundtrip_fn(swapped)(*args), harness.vae_roundtrip_fn(bundle)(*args)
  assert ours.shape == theirs.shape and np.abs(ours.astype(int) - theirs).max() > 0


def test_loss_falls_and_metrics_and_previews_are_written(vae_runs):
  m = _metrics(vae_runs["straight"])
  assert [r["step"] for r in m] == [3, 6, 9, 12]
  assert m[-1]["loss"] < 0.8 * m[0]["loss"]
  assert m[-1]["batch_psnr"] > m[0]["batch_psnr"]
  assert all(np.isfinite(r["heldout_psnr"]) for r in m if r["step"] in (6, 12))
  assert sorted(os.listdir(os.path.join(vae_runs["straight"], "previews"))) == ["step_0000006.png",
                                                                                 "step_0000012.png"]


def test_resume_gives_identical_params(vae_runs):
  r = vae_runs
  assert int(r["final"].step) == int(r["again"].step) == 12
  assert [m["step"] for m in _metrics(r["resumed"])] == [9, 12]
  chex.assert_trees_all_equal(jax.device_get(r["again"].params), jax.device_get(r["final"].params))
  chex.assert_trees_all_equal(jax.device_get(r["again"].ema_params), jax.device_get(r["final"].ema_params))


def test_vae_checkpoint_sets_the_stage1_vae_to_the_runs_ema_params(vae_runs, monkeypatch):
  config = micro_config(1)
  config.init.vae_checkpoint = vae_runs["straight"]
  assert uses_loaded_weights(config.init)
  # Random init of the VAE only: the other networks are not touched by init.vae_checkpoint.
  monkeypatch.setattr(init, "init_params", lambda models, model, rng: {
      "vae": jax.jit(lambda k: init_vae_params(models.vae, model.resolution, k))(rng), "backbone": {"w": jnp.ones(2)}})
  params = init.initial_params(config, build_models(config.model), jax.random.PRNGKey(1))
  chex.assert_trees_all_equal(params["vae"], jax.device_get(vae_runs["final"].ema_params["vae"]))
  chex.assert_trees_all_equal(params["backbone"], {"w": jnp.ones(2)})

  config.init.vae = "/some/diffusers/vae"
  with pytest.raises(ValueError, match="vae_checkpoint"):
    init.initial_params(config, build_models(config.model), jax.random.PRNGKey(1))
  config.init.vae = ""
  config.model.vae.block_out_channels = (8, 16)
  with pytest.raises(ValueError, match="do not match config.model"):
    init.initial_params(config, build_models(config.model), jax.random.PRNGKey(1))


def test_psnr_and_gradient_term():
  x = jnp.zeros((2, 4, 4, 3))
  chex.assert_trees_all_close(psnr(x, x + 0.2), jnp.full((2,), 10 * np.log10(4 / 0.04)), rtol=1e-5)
  chex.assert_trees_all_close(psnr(x, x + 5.0), psnr(x, x + 1.0))  # reconstructions are clipped to [-1, 1]
  chex.assert_trees_all_close(image_gradient_l1(x, x + 0.3), 0.0)
  ramp = jnp.broadcast_to(jnp.arange(4.0)[None, None, :, None], x.shape)
  chex.assert_trees_all_close(image_gradient_l1(x, ramp), 1.0)


def test_change_weights_mark_where_a_pair_differs():
  """A pair differing at one pixel: weight 1 + c * |diff| / 2 in the 5x5 window around it, for both frames of
  the pair, 1 elsewhere and for an identical pair; the weighted mean of a constant is that constant."""
  target = np.zeros((2, 12, 12, 3), np.float32)
  target[0, 6, 3] = 1.0  # pair 0 differs at (6, 3) by 1 in every channel: m = 0.5 there
  images = jnp.asarray(np.concatenate([target, np.zeros_like(target)]))  # references: all zero
  w = np.asarray(change_weights(images, 4.0))
  chex.assert_shape(w, (4, 12, 12, 1))
  expected = np.ones((12, 12))
  expected[4:9, 1:6] = 1.0 + 4.0 * 0.5
  np.testing.assert_allclose(w[0, ..., 0], expected)
  np.testing.assert_allclose(w[2, ..., 0], expected)  # pair 0's reference
  np.testing.assert_allclose(w[[1, 3]], 1.0)
  chex.assert_trees_all_close(weighted_mean(jnp.full((4, 12, 12, 3), 0.7), jnp.asarray(w)), 0.7, rtol=1e-4)


def test_change_weight_weights_the_reconstruction_towards_where_frames_differ():
  """With `change_weight` the L1 term is the weight-averaged error (errors where target and reference differ
  count more); at 0 it is the plain mean."""
  config = micro_vae_config()
  vae = build_models(config.model).vae
  params = init_vae_params(vae, 16, jax.random.PRNGKey(0))
  rng = np.random.default_rng(0)
  target = rng.uniform(-1, 1, (2, 16, 16, 3)).astype(np.float32)
  reference = target.copy()
  reference[:, 4:10, 4:10] = rng.uniform(-1, 1, (2, 6, 6, 3))  # the pairs differ in one square
  images = jnp.asarray(np.concatenate([target, reference]))
  key = jax.random.PRNGKey(1)
  plain, plain_terms = vae_loss(vae, config.loss, params, images, key)
  config.loss.change_weight = 8.0
  weighted, terms = vae_loss(vae, config.loss, params, images, key)
  assert np.isfinite(float(weighted)) and float(weighted) != float(plain)
  # The weighted L1 is the weight-averaged error of the same reconstruction, pulled from the plain mean
  # towards the error inside the square.
  recon = np.asarray(vae.apply({"params": params}, images, key)[0])
  err = np.abs(recon - np.asarray(images)).mean(-1)
  inside, overall = err[:, 4:10, 4:10].mean(), err.mean()
  w = np.asarray(change_weights(images, 8.0))[..., 0]
  np.testing.assert_allclose(float(terms["l1"]), (w * err).sum() / w.sum(), rtol=1e-5)
  np.testing.assert_allclose(float(plain_terms["l1"]), overall, rtol=1e-5)
  assert (float(terms["l1"]) - overall) * (inside - overall) > 0


def test_decoder_fine_tune_keeps_the_bundles_latent_space_and_goes_back_into_the_bundle(vae_runs, tmp_path, capsys):
  """`train.decoder_only` from `init.bundle`: the encoder side stays the bundle's bit for bit, the decoder moves
  from the bundle's weights (not a random init), and `launch.export_bundle --bundle --vae` puts it in; a VAE
  trained whole is refused there (its latents are not the ones the diffusion model knows)."""
  from emodiff_jax.sampling.bundle import load_bundle
  from emodiff_jax.train.vae_loop import LATENT_MODULES, load_vae
  from launch import export_bundle
  from tests.inference_fixtures import write_micro_bundle
  path = write_micro_bundle(str(tmp_path / "bundle"))
  bundle = load_bundle(path)
  config = micro_vae_config()
  config.init.bundle = path
  config.train.update(decoder_only=True, steps=6, eval_every=0, preview_every=0)
  state = train_vae(config, str(tmp_path / "decoder"))
  old, new = bundle.params["vae"], jax.device_get(state.params["vae"])
  for name in LATENT_MODULES:
    chex.assert_trees_all_equal(new[name], old[name])
  moved = [float(np.abs(a - b).max()) for a, b in zip(jax.tree.leaves(new["decoder"]), jax.tree.leaves(old["decoder"]))]
  assert max(moved) > 0 and max(moved) < 2 * 6 * config.optim.learning_rate  # six Adam steps from the bundle's

  out = str(tmp_path / "bundle_ft")
  assert export_bundle.main([f"--bundle={path}", f"--vae={tmp_path / 'decoder'}", f"--out={out}"]) == 0
  rewritten, (_, run_vae) = load_bundle(out), load_vae(str(tmp_path / "decoder"))
  half = lambda tree: jax.tree.map(lambda x: np.asarray(x, np.float16).astype(np.float32), tree)
  chex.assert_trees_all_equal(rewritten.params["vae"], half(run_vae))
  chex.assert_trees_all_equal({k: v for k, v in rewritten.params.items() if k != "vae"},
                              {k: v for k, v in bundle.params.items() if k != "vae"})
  chex.assert_trees_all_equal(rewritten.g_params, bundle.g_params)

  with pytest.raises(SystemExit) as e:
    export_bundle.main([f"--bundle={path}", f"--vae={vae_runs['straight']}", f"--out={tmp_path / 'no'}"])
  assert e.value.code == 2 and "encodes differently" in capsys.readouterr().err
  assert not os.path.exists(tmp_path / "no")
  config.init.bundle = ""
  with pytest.raises(ValueError, match="init.bundle"):
    train_vae(config, str(tmp_path / "no_bundle"))
  config.init.bundle = path
  config.model.vae.block_out_channels = (8, 16)
  with pytest.raises(ValueError, match=r"bundle: vae params do not match config.model"):
    train_vae(config, str(tmp_path / "other_vae"))
