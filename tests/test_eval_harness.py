"""The evaluation harness (`emodiff_jax/eval/harness.py`), `launch.evaluate` and the ablation configs.

The harness is checked on the synthetic world with a probe that is exact by construction (frames looked
up by their bytes), so the oracle must score the upper bound and the baselines must fail where they should.
"""

import importlib
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

from configs import synthetic_stage2
from emodiff_jax.eval import ablate, harness
from emodiff_jax.models.build import abstract_params, build_models
from emodiff_jax.synth import world
from tests.train_configs import micro_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SETTINGS = dict(intensities=(0.0, 0.5, 1.0), clips_per_cell=1, seconds=1.2, seed=0, classifier_clips=2)


def pooled_pixels(frames: np.ndarray) -> np.ndarray:
  """uint8 frames `[T, 64, 64, 3]` mean-pooled to 8x8 cells, in [0, 1]: `[T, 192]`."""
  return frames.reshape(len(frames), 8, 8, 8, 8, 3).mean((2, 4)).reshape(len(frames), -1) / 255.0


@pytest.fixture(scope="module")
def baseline_results():
  """The oracle and both baselines, measured by a probe exact on the world by construction: every frame the
  harness renders is recorded with its expression, and the probe looks frames up by their bytes. The FID
  features stand in for a network that sees both the expression and the face: the exact 18 coefficients
  beside `pooled_pixels`."""
  seen = {}
  render = harness.render_frames

  def recording(identity, expressions, resolution=64):
    frames = render(identity, expressions, resolution)
    for f, e in zip(frames, expressions):
      seen[f.tobytes()] = np.asarray(e, np.float32)
    return frames

  exact_probe = lambda frames: np.stack([seen[f.tobytes()] for f in frames])
  fns = {"oracle": harness.oracle_video_fn(), "reference_repeated": harness.reference_repeated_fn,
         "random_identity": harness.random_identity_fn()}
  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(harness, "render_frames", recording)  # clips
    mp.setattr(world, "render_frames", recording)  # portraits (`world.neutral_portrait`, cached)
    world.neutral_portrait.cache_clear()
    features = lambda frames: np.concatenate([exact_probe(frames)[:, :18], pooled_pixels(frames)], axis=1)
    return harness.evaluate(fns, exact_probe, feature_fn=features, **SETTINGS)


def test_oracle_with_exact_probe_reaches_the_upper_bound(baseline_results):
  oracle = baseline_results["methods"]["oracle"]["overall"]
  assert oracle["accuracy"] == 1.0
  confusion = np.asarray(oracle["confusion"])
  np.testing.assert_array_equal(confusion, np.diag(confusion.diagonal()))  # every clip on its own emotion
  assert confusion.sum() == len(harness.EMOTIONS) * SETTINGS["clips_per_cell"]
  assert oracle["spearman_min"] >= 0.95
  assert oracle["sync_correlation"] >= 0.6 and abs(oracle["sync_offset"]) <= 1
  assert oracle["expression_l2"] < 1e-5
  assert oracle["identity_similarity"] > 0.9


def test_baselines_fail_where_they_should(baseline_results):
  methods = baseline_results["methods"]
  oracle, repeated, swapped = (methods[k]["overall"] for k in ("oracle", "reference_repeated", "random_identity"))
  assert abs(repeated["sync_correlation"]) < 0.2
  confusion = np.asarray(repeated["confusion"])  # the neutral portrait, whatever was asked
  assert confusion[:, harness.EMOTIONS.index("neutral")].sum() == confusion.sum() > 0
  assert not (repeated["spearman"] or 0.0) >= oracle["spearman"] - 0.5  # constant: undefined or low
  assert repeated["fd_probe"] > oracle["fd_probe"] and swapped["fd_face"] > oracle["fd_face"]
  # Features that see the face as well as the expression: both baselines are far from the real clips, while
  # the identity-blind coefficients cannot tell another face's real clip from the right one's.
  assert repeated["fid_probe"] > 2 * oracle["fid_probe"] and swapped["fid_probe"] > 2 * oracle["fid_probe"]
  assert swapped["fd_probe"] < 3 * oracle["fd_probe"] + 0.05
  assert swapped["identity_similarity"] < oracle["identity_similarity"]
  assert swapped["sync_correlation"] < oracle["sync_correlation"] - 0.3  # its own audio, not the request's


def test_slope_is_the_emotion_drawn_per_unit_of_intensity(baseline_results):
  """With the exact probe the oracle's slope is the world's edit `(e_1 - e_0) . d / |d|^2` itself; the still
  portrait draws no emotion at any intensity."""
  t = round(SETTINGS["seconds"] * harness.FPS)
  requests = [r for r in harness.make_requests("test", harness.EMOTIONS, (0.0, 1.0), SETTINGS["clips_per_cell"],
                                               SETTINGS["seed"]) if r.intensity == 1.0 and r.emotion != "neutral"]
  methods = baseline_results["methods"]
  for e in (e for e in harness.EMOTIONS if e != "neutral"):
    d = harness.emotion_direction(e)
    edits = [(harness.world_expression(e, 1.0, a, t, r.seed) - harness.world_expression(e, 0.0, a, t, r.seed)) @ d
             for r in requests if r.emotion == e for a in [harness.world_audio(r.seed, t)]]
    expected = np.mean([x.mean() for x in edits]) / (d @ d)
    assert expected > 0.3
    np.testing.assert_allclose(methods["oracle"]["per_emotion"][e]["slope"], expected, rtol=1e-5)
    assert methods["reference_repeated"]["per_emotion"][e]["slope"] == pytest.approx(0.0, abs=1e-9)
  per_emotion = [methods["oracle"]["per_emotion"][e]["slope"] for e in harness.EMOTIONS if e != "neutral"]
  assert methods["oracle"]["overall"]["slope"] == pytest.approx(np.mean(per_emotion))
  assert methods["oracle"]["per_emotion"]["neutral"]["slope"] is None


def test_identity_offset_gives_every_emotion_other_faces_with_the_same_seeds():
  pool = harness.identity_pool("test")
  base = harness.make_requests("test", harness.EMOTIONS, (0.0, 1.0), 2, seed=0)
  moved = harness.make_requests("test", harness.EMOTIONS, (0.0, 1.0), 2, seed=0, identity_offset=16)
  assert [(r.emotion, r.intensity, r.seed) for r in moved] == [(r.emotion, r.intensity, r.seed) for r in base]
  for r, m in zip(base, moved):
    assert pool[(pool.index((r.partition, r.identity)) + 16) % len(pool)] == (m.partition, m.identity)
  faces = lambda rs, e: {(r.partition, r.identity) for r in rs if r.emotion == e}
  assert all(not faces(base, e) & faces(moved, e) for e in harness.EMOTIONS)


def test_report_files_are_written_and_parse(baseline_results, tmp_path):
  paths = harness.write_report(baseline_results, str(tmp_path))
  with open(paths["metrics.json"]) as f:
    data = json.load(f)
  assert set(data["methods"]) == {"oracle", "reference_repeated", "random_identity"}
  table = open(paths["metrics.md"]).read().splitlines()
  assert table[0].startswith("| method | emotion |")
  assert sum(row.startswith("| oracle |") for row in table) == len(harness.EMOTIONS) + 1
  assert any(row.startswith("| random_identity | overall |") for row in table)
  column = [c.strip() for c in table[0].split("|")].index("FID probe")
  assert all(row.split("|")[column].strip() not in ("", "n/a") for row in table[2:4])
  assert "- oracle: neutral -> neutral" in "\n".join(table)
  image = np.asarray(Image.open(paths["intensity.png"]))
  assert image.ndim == 3 and image.std() > 0


def test_vae_roundtrip_is_the_oracle_through_the_shipped_vae():
  from emodiff_jax.eval.image_metrics import psnr
  from emodiff_jax.sampling.bundle import load_bundle
  roundtrip = harness.vae_roundtrip_fn(load_bundle(os.path.join(ROOT, "data", "checkpoints", "synthetic")))
  partition, identity = harness.identity_pool("test")[0]
  args = (harness.portrait(partition, identity), harness.world_audio(3, 8), "happy", 1.0, 3)
  oracle, frames = harness.oracle_video_fn()(*args), roundtrip(*args)
  assert frames.shape == oracle.shape and frames.dtype == np.uint8
  # Lossy (the shipped VAE's held-out PSNR is 26.1 dB; here 26.2 dB, the still portrait 22.4 dB: background and
  # face barely move), but the same clip: far closer than another identity's clip of the same request.
  score = lambda x: float(np.mean(psnr(x / 255.0, oracle / 255.0)))  # mean over frames
  print(f"roundtrip PSNR {score(frames):.1f} dB, still portrait {score(harness.reference_repeated_fn(*args)):.1f} dB")
  assert 15.0 < score(frames) < 40.0
  assert score(frames) > score(harness.random_identity_fn()(*args)) + 3.0


@pytest.mark.slow
def test_launch_evaluate_on_micro_bundle_writes_the_report(tmp_path):
  from emodiff_jax.emotion import probe
  from tests.inference_fixtures import write_micro_bundle
  bundle = write_micro_bundle(str(tmp_path / "bundle"))
  params = probe.ExpressionProbe().init(jax.random.PRNGKey(0), np.zeros((1, 64, 64, 3), np.float32))["params"]
  probe.save_probe(probe.ProbeState(params, np.zeros(18, np.float32), np.ones(18, np.float32)),
                   str(tmp_path / "probe.msgpack"))
  out = tmp_path / "report"
  subprocess.run([sys.executable, "-m", "launch.evaluate", f"--checkpoint={bundle}", "--dataset=synthetic_talk",
                  "--split=test", f"--probe={tmp_path / 'probe.msgpack'}", f"--out={out}", "--clips-per-cell=1",
                  "--seconds=0.4", "--steps=2", "--emotions=neutral,happy", "--intensities=0,1",
                  "--cfg.guidance.expression=2"], cwd=ROOT, check=True)
  assert sorted(os.listdir(out)) == ["intensity.png", "metrics.json", "metrics.md"]
  report = json.load(open(out / "metrics.json"))
  assert {"model", "vae_roundtrip"} <= set(report["methods"])
  assert report["methods"]["model"]["overall"]["fid_probe"] >= 0.0  # the probe's features reach the report
  sampling = report["settings"]["sampling"]  # the settings the model row was sampled with
  assert sampling["num_steps"] == 2 and sampling["guidance"]["expression"] == 2.0
  subprocess.run([sys.executable, "-m", "launch.evaluate", f"--checkpoint={bundle}", "--roundtrip-only",
                  f"--probe={tmp_path / 'probe.msgpack'}", f"--out={tmp_path / 'roundtrip'}", "--clips-per-cell=1",
                  "--seconds=0.4", "--emotions=happy", "--intensities=1", "--no-baselines", "--identity-offset=5"],
                 cwd=ROOT, check=True)
  report = json.load(open(tmp_path / "roundtrip" / "metrics.json"))
  assert sorted(report["methods"]) == ["oracle", "vae_roundtrip"] and "sampling" not in report["settings"]
  assert report["settings"]["identity_offset"] == 5
  assert "identities of mead_like, hdtf_like from position 5" in open(tmp_path / "roundtrip" / "metrics.md").read()


@pytest.mark.parametrize("argv, message", [
    (["--cfg.guidance.nope=2"], "no field 'nope'"),
    (["--cfg.guidance.expression=strong"], "not a float"),
    (["--cfg.guidance.emotion_t_min=700", "--cfg.guidance.emotion_t_max=600"], "emotion_t_min 700 > emotion_t_max 600"),
    (["--oracle", "--cfg.guidance.expression=2"], "apply to a checkpoint"),
    (["--roundtrip-only", "--cfg.guidance.expression=2"], "samples nothing"),
])
def test_launch_evaluate_rejects_bad_sampling_overrides(argv, message, tmp_path, capsys):
  from launch import evaluate
  with pytest.raises(SystemExit) as exit_info:
    evaluate.main([f"--probe={tmp_path / 'unused.msgpack'}", f"--out={tmp_path / 'report'}", *argv])
  assert exit_info.value.code == 2 and message in capsys.readouterr().err
  assert not os.path.exists(tmp_path / "report")


@pytest.mark.parametrize("name", ablate.ABLATIONS)
def test_ablation_config_builds_and_changes_only_its_field(name):
  config = importlib.import_module(f"configs.ablations.{name}").get_config()
  base = synthetic_stage2.get_config()
  assert ablate.config_diff(base, config) == ablate.CHANGES[name]
  assert ablate.config_diff(ablate.ablated(base, name), config) == {}
  params = abstract_params(build_models(config.model), config.model, config.num_frames)
  assert params["backbone"]


def test_ablation_changes_follow_command_line_overrides_of_the_base():
  base = synthetic_stage2.get_config()
  base.train.steps = 7
  config = ablate.ablated(base, "no_temporal")
  assert config.train.steps == 7 and config.model.motion is None and base.model.motion is not None


@pytest.mark.slow
def test_no_temporal_ablation_trains_and_scores_a_heldout_loss(tmp_path):
  base = micro_config(2, batch_size=2)
  base.train.steps = 2
  base.train.log_every = 1
  rows = ablate.run_ablations(base, ["no_temporal"], str(tmp_path))
  row = rows["no_temporal"]
  assert row["steps"] == 2 and np.isfinite(row["train_loss"]) and np.isfinite(row["heldout_loss"])
  paths = ablate.write_table(rows, str(tmp_path))
  assert "| no_temporal |" in open(paths["ablations.md"]).read()
