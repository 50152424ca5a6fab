"""`eval/condition_use.py`: held-out losses with each condition removed or mismatched, on the micro model."""

import copy
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from flax import traverse_util

from emodiff_jax.eval import condition_use
from emodiff_jax.input import pipeline
from emodiff_jax.models.build import build_models, init_params
from emodiff_jax.synth.expression import EMOTION_COEFFS, INDEX
from tests.train_configs import micro_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def micro():
  config = micro_config(2, batch_size=2)
  # An epsilon model (the library's default diffusion, configs/common.py; the synthetic configs use v): the
  # x0 and loss-target tests below reason about epsilon predictions.
  config.diffusion.prediction_type, config.diffusion.rescale_zero_terminal_snr = "epsilon", False
  models = build_models(config.model)
  params = init_params(models, config.model, jax.random.key(0))
  batch = next(iter(pipeline.make_dataset(config.data, split="test")))
  losses = condition_use.ConditionLosses(models, config.diffusion, audio_margin=config.data.audio_margin, num_keys=2)
  return losses, params, batch, config, models


def _losses(micro, params):
  losses, _, batch = micro[:3]
  return losses(params, batch)


def _perturbed(params, needle, seed=0):
  flat = traverse_util.flatten_dict(params)
  keys = jax.random.split(jax.random.key(seed), len(flat))
  return traverse_util.unflatten_dict(
      {k: v + 0.3 * jax.random.normal(r, v.shape) if needle in "/".join(k) else v
       for (k, v), r in zip(flat.items(), keys)})


def test_a_fresh_backbone_ignores_audio_and_expression_but_not_the_reference(micro):
  losses = _losses(micro, micro[1])  # new condition layers are zero-initialised at their outputs
  assert set(losses) == set(condition_use.VARIANTS)
  for name in ("no_audio", "shuffled_audio", "no_expression", "shuffled_expression", "expression_without_emotion"):
    assert losses[name] == pytest.approx(losses["all"], rel=1e-6), name
  assert abs(losses["no_reference"] - losses["all"]) > 1e-4 * losses["all"]


def test_once_expression_layers_act_removing_or_shuffling_expressions_changes_the_loss(micro):
  losses = _losses(micro, _perturbed(micro[1], "attn_expr"))
  for name in ("no_expression", "shuffled_expression", "expression_without_emotion"):
    assert abs(losses[name] - losses["all"]) > 1e-4 * losses["all"], name
  for name in ("no_audio", "shuffled_audio"):
    assert losses[name] == pytest.approx(losses["all"], rel=1e-6), name
  table = condition_use.markdown_table(losses)
  assert table.count("\n") == len(losses) + 1 and "| no_expression |" in table


def test_x0_errors_at_fixed_timesteps_see_only_the_conditions_a_model_reads(micro):
  """`by_timestep` on the fresh backbone: the timestep reaches the model (errors grow with the noise level),
  zero-initialised expression layers leave every expression variant equal to 'all', the reference does not;
  once the expression layers act, removing the expression moves the error."""
  conditions, params, batch = micro[:3]
  errors = conditions.by_timestep(params, batch, [900, 100], num_keys=1)
  assert set(errors) == set(condition_use.VARIANTS)
  assert errors["all"][900] > 10 * errors["all"][100] > 0
  for name in ("no_expression", "shuffled_expression", "expression_without_emotion"):
    assert errors[name] == pytest.approx(errors["all"], rel=1e-6), name
  assert abs(errors["no_reference"][900] - errors["all"][900]) > 1e-4 * errors["all"][900]
  acting = conditions.by_timestep(_perturbed(params, "attn_expr"), batch, [900], num_keys=1)
  assert abs(acting["no_expression"][900] - acting["all"][900]) > 1e-4 * acting["all"][900]
  table = condition_use.timestep_table(errors)
  assert "| variant | t=900 | t=100 |" in table and table.count("\n") == len(errors) + 1


def test_the_objective_measures_its_loss_in_diffusion_loss_target(micro):
  _, params, batch, config, models = micro
  d = config.diffusion.copy_and_resolve_references()
  own = condition_use.denoising_loss(models, d, params, batch, audio_margin=config.data.audio_margin, num_keys=1)
  d.loss_target = "v_prediction"  # epsilon errors weighted by 1 / alpha_bar >= 1
  as_v = condition_use.denoising_loss(models, d, params, batch, audio_margin=config.data.audio_margin, num_keys=1)
  assert as_v > 1.01 * own


def test_the_objective_weights_its_loss_by_diffusion_change_weight(micro):
  """`diffusion.change_weight` reaches the training loss, and a vanishing weight gives the plain loss back."""
  _, params, batch, config, models = micro
  d = config.diffusion.copy_and_resolve_references()
  kw = dict(audio_margin=config.data.audio_margin, num_keys=1)
  own = condition_use.denoising_loss(models, d, params, batch, **kw)
  d.change_weight = 1e-6
  assert condition_use.denoising_loss(models, d, params, batch, **kw) == pytest.approx(own, rel=1e-5)
  d.change_weight = 4.0
  # A random model errs about equally everywhere, so the weighting moves the loss by little, but by 100x
  # more than the vanishing weight above may.
  assert abs(condition_use.denoising_loss(models, d, params, batch, **kw) - own) > 1e-3 * own


def test_emotion_latent_shift_is_the_mean_squared_change_of_scaled_latents(micro):
  from emodiff_jax.synth.expression import expression_vector
  from emodiff_jax.synth.identity import make_identity
  from emodiff_jax.synth.render import render_frames
  from emodiff_jax.train.objective import DiffusionObjective
  _, params, _, config, models = micro
  identities = [("mead_like", 0), ("hdtf_like", 1)]
  shift = condition_use.emotion_latent_shift(models, params["vae"], identities, resolution=16)
  assert set(shift) == set(EMOTION_COEFFS) - {"neutral"} | {"jaw_open", "latent_variance"}
  encode = DiffusionObjective(models, config.diffusion, 2).encode  # the training path's latents
  want = []
  for partition, index in identities:
    faces = np.stack([np.zeros(50, np.float32), expression_vector({"jaw_open": 1.0})])
    z = np.asarray(encode(params["vae"], render_frames(make_identity(partition, index), faces, 16) / 127.5 - 1.0, None))
    want.append(np.mean((z[1] - z[0]) ** 2))
  assert shift["jaw_open"] == pytest.approx(float(np.mean(want)), rel=1e-5) and shift["jaw_open"] > 0


def test_without_emotion_zeroes_only_emotion_coefficients():
  e = np.arange(2 * 3 * 50, dtype=np.float32).reshape(2, 3, 50) + 1.0
  out = condition_use._without_emotion(e)
  zeroed = {name for name, i in INDEX.items() if (out[..., i] == 0).all()}
  emotional = {n for coeffs in EMOTION_COEFFS.values() for n in coeffs}
  assert zeroed == emotional - {"jaw_open", "eye_close"}
  kept = [i for i in range(50) if i not in condition_use.EMOTION_ONLY]
  np.testing.assert_array_equal(out[..., kept], e[..., kept])


@pytest.mark.slow
def test_launch_condition_use_on_a_micro_bundle(tmp_path):
  from tests.inference_fixtures import write_micro_bundle
  bundle = write_micro_bundle(str(tmp_path / "bundle"))
  out = tmp_path / "report"
  run = subprocess.run([sys.executable, "-m", "launch.condition_use", f"--checkpoint={bundle}",
                        "--config=tests/train_configs.py:2", "--clips=2", "--keys=1", f"--out={out}"],
                       cwd=ROOT, check=True, capture_output=True, text=True)
  assert "| no_expression |" in run.stdout
  assert sorted(os.listdir(out)) == ["condition_use.json", "condition_use.md"]


def test_measured_clips_do_not_follow_the_training_weights():
  """`measured_data` mixes the sources by its own weights (the launcher's default: equal) without touching the
  training config, so reweighting a training config does not change which clips are measured."""
  config = micro_config(2, batch_size=16)  # as many clips as the launcher measures (the first few coincide)
  assert [s["weight"] for s in config.data.sources] == [3.0, 1.0]
  equal = condition_use.measured_data(config.data, [1, 1])
  assert [s["weight"] for s in config.data.sources] == [3.0, 1.0]
  by_hand = copy.deepcopy(config.data)
  for source in by_hand.sources:
    source["weight"] = 1.0
  clips = lambda data: next(iter(pipeline.make_dataset(data, split="test")))["expression"]
  np.testing.assert_array_equal(clips(equal), clips(by_hand))
  np.testing.assert_array_equal(clips(condition_use.measured_data(config.data)), clips(by_hand))  # default: equal
  single = copy.deepcopy(config.data)
  single.sources = single.sources[:1]
  assert [s["weight"] for s in condition_use.measured_data(single).sources] == [1.0]
  assert not np.array_equal(clips(equal), clips(config.data))
  np.testing.assert_array_equal(clips(condition_use.measured_data(config.data, [])), clips(config.data))
  with pytest.raises(ValueError, match="1 source weights for 2 data.sources"):
    condition_use.measured_data(config.data, [1])
  assert [s["weight"] for s in config.data.sources] == [3.0, 1.0]
