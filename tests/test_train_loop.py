"""The training run on the synthetic world: resume reproduces a straight run (params and data order),
metrics and checkpoints are written; in `make test-slow` also: SIGTERM saves and stops, stage 2 starts
from stage 1, non-finite steps stop the run, and the loss falls on configs/synthetic_stage{1,2}.py."""

import json
import os
import signal
import subprocess
import sys
import time

import chex
import jax
import numpy as np
import pytest
from flax import traverse_util

from emodiff_jax.models.build import build_models, init_params
from emodiff_jax.train import init as init_module
from emodiff_jax.train.checkpoint import RunCheckpoints
from emodiff_jax.train.init import initial_params
from emodiff_jax.train.loop import NonFiniteError, train
from emodiff_jax.train.optimizer import make_optimizer
from emodiff_jax.train.partition import is_stage2_layer, trainable_labels
from emodiff_jax.train.state import create_state
from tests.train_configs import micro_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _metrics(workdir):
  with open(os.path.join(workdir, "tb", "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def _data_state(workdir, step):
  d = os.path.join(workdir, "checkpoints", str(step), "data")
  return {name: open(os.path.join(d, name)).read() for name in sorted(os.listdir(d)) if name.endswith(".json")}


@pytest.fixture(scope="module")
def stage1_runs(tmp_path_factory):
  """Six steps straight, and three steps then a resumed run to six."""
  config = micro_config(1)
  config.train.steps, config.train.checkpoint_every, config.train.log_every = 6, 3, 3
  straight = str(tmp_path_factory.mktemp("straight"))
  resumed = str(tmp_path_factory.mktemp("resumed"))
  final = train(config, straight)
  config.train.steps = 3
  half = train(config, resumed)
  config.train.steps = 6
  again = train(config, resumed)
  return dict(config=config, straight=straight, resumed=resumed, final=final, half=half, again=again)


def test_resume_gives_identical_params_and_data_order(stage1_runs):
  r = stage1_runs
  assert int(r["half"].step) == 3 and int(r["final"].step) == int(r["again"].step) == 6
  chex.assert_trees_all_equal(jax.device_get(r["again"].params), jax.device_get(r["final"].params))
  chex.assert_trees_all_equal(jax.device_get(r["again"].ema_params), jax.device_get(r["final"].ema_params))
  assert _data_state(r["resumed"], 6) == _data_state(r["straight"], 6)
  assert _data_state(r["resumed"], 3) != _data_state(r["resumed"], 6)
  assert sorted(os.listdir(os.path.join(r["straight"], "checkpoints"))) == ["3", "6"]


def test_run_writes_metrics_with_mfu_and_saves_its_config(stage1_runs):
  m = _metrics(stage1_runs["straight"])
  assert [x["step"] for x in m] == [3, 6]
  for x in m:
    assert np.isfinite(x["loss"]) and x["grad_norm"] > 0 and 0 < x["mfu"] < 1.5 and x["examples_per_sec"] > 0
  assert any(name.startswith("events.out.tfevents") for name in os.listdir(os.path.join(stage1_runs["straight"], "tb")))
  saved = RunCheckpoints(stage1_runs["straight"], read_only=True).config(6)
  assert saved.stage == 1 and saved.model.resolution == 16


def test_stage2_initial_params_are_the_stage1_runs_ema_and_vae(stage1_runs):
  """`init.stage1_checkpoint` alone (no training): ReferenceNet, the backbone's 2D layers and the VAE from the
  stage-1 run (EMA); stage 2's layers keep the fresh init, so stage 2 may change their layout."""
  config = micro_config(2, batch_size=2, num_frames=4)
  config.init.stage1_checkpoint = stage1_runs["straight"]
  models = build_models(config.model)
  fresh = jax.device_get(init_params(models, config.model, jax.random.key(0)))
  params = jax.device_get(initial_params(config, models, jax.random.key(0)))
  stage1 = jax.device_get(stage1_runs["final"])
  chex.assert_trees_all_equal(params["reference_net"], stage1.ema_params["reference_net"])
  chex.assert_trees_all_equal(params["vae"], stage1.params["vae"])
  flat = lambda t: traverse_util.flatten_dict(t["backbone"])
  got, ema, new = flat(params), flat(stage1.ema_params), flat(fresh)
  stage2 = [k for k in got if is_stage2_layer(("backbone",) + k)]
  assert stage2 and len(stage2) < len(got)
  for k in got:
    np.testing.assert_array_equal(got[k], new[k] if k in stage2 else ema[k], err_msg=str(k))

  config.model.expression.injection = "add_to_audio"  # another stage-2 layout on the same stage-1 run
  models = build_models(config.model)
  other = jax.device_get(initial_params(config, models, jax.random.key(0)))
  chex.assert_trees_all_equal(other["reference_net"], stage1.ema_params["reference_net"])
  assert other["backbone"]["expression_proj"]["out"]["kernel"].shape != \
      params["backbone"]["expression_proj"]["out"]["kernel"].shape


def test_reading_the_wrong_run_names_it(stage1_runs, tmp_path):
  """`train.checkpoint.read_latest` through its users: an empty workdir and a run of the wrong stage."""
  from emodiff_jax.sampling.bundle import BundleError, export_bundle

  empty = str(tmp_path / "empty")
  with pytest.raises(BundleError, match=f"{empty}: no checkpoint .* nothing to export"):
    export_bundle(empty, empty, str(tmp_path / "out"))
  with pytest.raises(BundleError, match="a stage-1 run; bundles are made from stage-2 runs"):
    export_bundle(stage1_runs["straight"], empty, str(tmp_path / "out"))
  assert not os.path.exists(tmp_path / "out")
  config = micro_config(2, batch_size=2, num_frames=4)
  config.init.stage1_checkpoint = empty
  with pytest.raises(FileNotFoundError, match=f"init.stage1_checkpoint: {empty}: no checkpoint"):
    initial_params(config, build_models(config.model), jax.random.key(0))
  config.init.stage1_checkpoint = stage1_runs["straight"]
  config.diffusion.prediction_type = "epsilon"  # the stage-1 run predicted v
  with pytest.raises(ValueError, match="was trained with diffusion prediction_type='v_prediction' .this config: "
                                       "'epsilon'."):
    initial_params(config, build_models(config.model), jax.random.key(0))


def _saved_stage2_run(workdir, config):
  """A stage-2 run's checkpoint without training: a fresh state whose EMA differs from its params."""
  models = build_models(config.model)
  params = init_params(models, config.model, jax.random.key(3))
  labels = trainable_labels(params, 2)
  tx, _ = make_optimizer(config.optim, labels, config.train.steps)
  state = create_state(params, tx, labels, jax.random.key(4), config.optim.ema_decay)
  state = state.replace(ema_params=jax.tree.map(lambda x: x + 1.0, state.ema_params))
  ckpt = RunCheckpoints(workdir, save_every=1, async_save=False)
  ckpt.finish(7, state, None, config)
  return jax.device_get(state)


def test_stage2_checkpoint_warm_starts_every_network(stage1_runs, tmp_path, monkeypatch):
  """`init.stage2_checkpoint`: backbone and audio projection from the run's EMA, the other networks from its
  params, with no random init run (only traced for shapes); a stage-1 run, another prediction type or a
  second init entry are refused by name."""
  config = micro_config(2, batch_size=2, num_frames=4)
  saved = _saved_stage2_run(str(tmp_path / "s2"), config)
  config.init.stage2_checkpoint = str(tmp_path / "s2")
  concrete_inits = []

  def counting_init(models, model_config, rng):
    concrete_inits.append(not isinstance(rng, jax.core.Tracer))
    return init_params(models, model_config, rng)

  monkeypatch.setattr(init_module, "init_params", counting_init)
  params = jax.device_get(initial_params(config, build_models(config.model), jax.random.key(0)))
  assert concrete_inits == [False]
  for name in ("backbone", "audio_proj"):
    chex.assert_trees_all_equal(params[name], saved.ema_params[name])
  for name in ("vae", "reference_net", "wav2vec2"):
    chex.assert_trees_all_equal(params[name], saved.params[name])

  config.diffusion.prediction_type = "epsilon"  # the run predicted v
  with pytest.raises(ValueError, match="init.stage2_checkpoint .* was trained with diffusion prediction_type"):
    initial_params(config, build_models(config.model), jax.random.key(0))
  config.init.stage2_checkpoint = stage1_runs["straight"]
  with pytest.raises(ValueError, match="is a stage-1 run, not stage 2"):
    initial_params(config, build_models(config.model), jax.random.key(0))
  config.init.stage1_checkpoint = stage1_runs["straight"]
  with pytest.raises(ValueError, match="init.stage2_checkpoint sets every network: leave init.stage1_checkpoint"):
    initial_params(config, build_models(config.model), jax.random.key(0))


def test_bundle_warm_starts_every_network(tmp_path):
  """`init.bundle`: every network from an inference bundle's weights as stored (float16); another prediction
  type, another model layout or a second init entry are refused by name."""
  from emodiff_jax.sampling.bundle import load_bundle
  from tests.inference_fixtures import write_micro_bundle

  path = write_micro_bundle(str(tmp_path / "bundle"))
  config = micro_config(2, batch_size=2, num_frames=4)
  config.init.bundle = path
  params = jax.device_get(initial_params(config, build_models(config.model), jax.random.key(0)))
  chex.assert_trees_all_equal(params, load_bundle(path).params)

  config.diffusion.prediction_type = "epsilon"  # the bundle's model predicts v
  with pytest.raises(ValueError, match="init.bundle .* was trained with diffusion prediction_type"):
    initial_params(config, build_models(config.model), jax.random.key(0))
  config.diffusion.prediction_type = "v_prediction"
  config.model.expression.tokens = 3  # the bundle's expression projection makes 2 tokens
  with pytest.raises(ValueError, match="backbone params do not match config.model"):
    initial_params(config, build_models(config.model), jax.random.key(0))
  config.init.stage2_checkpoint = str(tmp_path / "s2")
  with pytest.raises(ValueError, match="init.stage2_checkpoint sets every network: leave init.bundle"):
    initial_params(config, build_models(config.model), jax.random.key(0))


def test_export_bundle_takes_the_runs_ema_and_sampling_defaults_from_the_command_line(tmp_path):
  """`launch.export_bundle`: the stage-2 run's EMA weights (float16) and the GAN's generator go into the bundle,
  `--cfg.` items become its sampling defaults; a bad item is a usage error and nothing is written."""
  from configs import expr_gan_synthetic
  from emodiff_jax.emotion import gan_loop
  from emodiff_jax.sampling.bundle import load_bundle
  from launch import export_bundle

  config = micro_config(2, batch_size=2, num_frames=4)
  saved = _saved_stage2_run(str(tmp_path / "s2"), config)
  gan = expr_gan_synthetic.get_config()
  gan.model.update(noise_dim=4, embed_dim=4, hidden_size=8, num_layers=1, disc_channels=8, disc_layers=2)
  gan.data.update(clips_per_condition=1, num_frames=8)
  gan.train.update(steps=1, batch_size=8, log_every=1, checkpoint_every=1)
  g_state = gan_loop.train_expression_gan(gan, str(tmp_path / "gan"))
  args = [f"--stage2={tmp_path / 's2'}", f"--gan={tmp_path / 'gan'}", f"--out={tmp_path / 'bundle'}"]

  with pytest.raises(SystemExit) as exit_info:
    export_bundle.main(args + ["--cfg.guidance.emotion_t_min=2000"])
  assert exit_info.value.code == 2 and not os.path.exists(tmp_path / "bundle")
  assert export_bundle.main(args + ["--cfg.guidance.emotion=3", "--cfg.guidance.emotion_t_min=500"]) == 0
  bundle = load_bundle(str(tmp_path / "bundle"))
  assert (bundle.config.sampling.guidance.emotion, bundle.config.sampling.guidance.emotion_t_min) == (3.0, 500)
  assert bundle.config.sampling.window == 4 and bundle.config.source.stage2_step == 7
  chex.assert_trees_all_close(bundle.params["backbone"], saved.ema_params["backbone"], atol=2e-3, rtol=2e-3)
  chex.assert_trees_all_close(bundle.g_params, jax.device_get(g_state.g_ema), atol=2e-3, rtol=2e-3)
  # `--gan=<bundle>` keeps that bundle's generator (and its GAN config) as stored.
  assert export_bundle.main(args[:1] + [f"--gan={tmp_path / 'bundle'}", f"--out={tmp_path / 'bundle2'}"]) == 0
  again = load_bundle(str(tmp_path / "bundle2"))
  chex.assert_trees_all_equal(again.g_params, bundle.g_params)
  assert again.config.gan == bundle.config.gan and again.config.source.gan == str(tmp_path / "bundle")
  # `--bundle` rewrites a bundle (here with new sampling defaults); it does not mix with the runs.
  assert export_bundle.main([f"--bundle={tmp_path / 'bundle'}", f"--out={tmp_path / 'bundle3'}",
                             "--cfg.guidance.emotion=2"]) == 0
  third = load_bundle(str(tmp_path / "bundle3"))
  chex.assert_trees_all_equal(third.params, bundle.params)
  assert third.config.sampling.guidance.emotion == 2.0 and third.config.model == bundle.config.model
  for bad in ([f"--bundle={tmp_path / 'bundle'}"] + args[:1], args[1:2]):
    with pytest.raises(SystemExit) as exit_info:
      export_bundle.main(bad + [f"--out={tmp_path / 'bundle4'}"])
    assert exit_info.value.code == 2 and not os.path.exists(tmp_path / "bundle4")


@pytest.mark.slow  # compiles the stage-2 step (~2.5 min on 2 cores)
def test_stage2_starts_from_the_stage1_checkpoint_and_keeps_it_frozen(stage1_runs, tmp_path):
  config = micro_config(2, batch_size=2, num_frames=4)
  config.train.steps = 2
  config.init.stage1_checkpoint = stage1_runs["straight"]
  state = train(config, str(tmp_path))
  stage1 = jax.device_get(stage1_runs["final"])
  params = jax.device_get(state.params)
  chex.assert_trees_all_equal(params["reference_net"], stage1.ema_params["reference_net"])
  chex.assert_trees_all_equal(params["vae"], stage1.params["vae"])
  down = lambda p: p["backbone"]["unet"]["down_blocks_0"]["resnets_0"]
  chex.assert_trees_all_equal(down(params), down(stage1.ema_params))
  motion = lambda p: p["backbone"]["unet"]["down_blocks_0"]["motion_modules_0"]
  assert not all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(motion(params)),
                                                       jax.tree.leaves(motion(stage1.ema_params))))


def test_stage_and_data_mismatch_is_a_clear_error(tmp_path):
  config = micro_config(1)
  config.data.stage = "clip"
  with pytest.raises(ValueError, match="data.stage"):
    train(config, str(tmp_path))


@pytest.mark.slow  # a fresh process (~1 min even with the compilation cache)
def test_sigterm_saves_a_checkpoint_and_exits_cleanly(stage1_runs, tmp_path):
  """`python -m launch.train` preempted by SIGTERM after its first checkpoint: exit 0, a checkpoint at
  the step it stopped at, and a rerun resumes from there."""
  workdir = str(tmp_path / "run")
  cmd = [sys.executable, "-m", "launch.train", "--config=tests/train_configs.py:1", f"--workdir={workdir}",
         "--config.train.steps=1000", "--config.train.checkpoint_every=2"]
  env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=jax.config.jax_compilation_cache_dir,
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
  proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  ckpts = os.path.join(workdir, "checkpoints")
  deadline = time.time() + 400
  while not (os.path.isdir(ckpts) and any(n.isdigit() for n in os.listdir(ckpts))):
    assert proc.poll() is None, proc.stdout.read()[-3000:]
    assert time.time() < deadline, "no checkpoint within 400 s"
    time.sleep(1)
  proc.send_signal(signal.SIGTERM)
  out, _ = proc.communicate(timeout=300)
  assert proc.returncode == 0, out[-3000:]
  steps = sorted(int(n) for n in os.listdir(ckpts) if n.isdigit())
  last = steps[-1]
  assert 2 <= last < 1000 and "SIGTERM: saving step" in out
  assert f"SIGTERM: saving step {last}" in out


@pytest.mark.slow  # another compile (the NaN learning rate is a constant of the program)
def test_non_finite_steps_stop_the_run_and_keep_the_last_good_checkpoint(tmp_path):
  config = micro_config(1)
  config.optim.learning_rate = float("nan")  # every update is NaN: every step is skipped
  config.train.max_bad_steps, config.train.steps = 2, 10
  with pytest.raises(NonFiniteError, match="2 consecutive steps"):
    train(config, str(tmp_path))
  assert not os.path.isdir(os.path.join(tmp_path, "checkpoints")) or not os.listdir(os.path.join(tmp_path, "checkpoints"))


@pytest.mark.slow
@pytest.mark.parametrize("stage", [1, 2])
def test_loss_falls_on_the_synthetic_configs(stage, tmp_path):
  """configs/synthetic_stage{stage}.py as shipped (tiny model, 64x64), 300 steps: the mean loss of the
  last 50 steps is at most 70% (stage 1) / 90% (stage 2: only the new layers train) of the first 50's."""
  from configs import synthetic_stage1, synthetic_stage2

  config = (synthetic_stage1 if stage == 1 else synthetic_stage2).get_config()
  config.train.preview_every, config.train.log_every, config.train.steps = 0, 10, 300
  train(config, str(tmp_path))
  losses = [x["loss"] for x in _metrics(str(tmp_path))]
  first, last = np.mean(losses[:5]), np.mean(losses[-5:])
  print(f"stage {stage}: loss first 50 steps {first:.4f}, last 50 steps {last:.4f}, ratio {last / first:.3f}")
  assert last <= (0.7 if stage == 1 else 0.9) * first
