"""`launch.infer` end to end on a micro bundle: the mp4 (frame count, fps, audio duration), the sidecar,
identical frames on a rerun, resume after an interrupted render, the jobs file, and one-line user errors."""

import json
import math
import os
import shutil
import subprocess
import sys
import wave

import numpy as np
import pytest

from emodiff_jax.input.media import load_audio, read_video
from emodiff_jax.sampling import provenance, render
from emodiff_jax.sampling.cli import main
from emodiff_jax.sampling.video_out import probe_mp4
from tests.inference_fixtures import write_micro_bundle

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PORTRAIT = os.path.join(REPO, "data", "examples", "portrait.png")
SECONDS = 1.3


def _write_wav(path, samples, rate=16000):
  with wave.open(str(path), "wb") as f:
    f.setnchannels(1)
    f.setsampwidth(2)
    f.setframerate(rate)
    f.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
  return str(path)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
  d = tmp_path_factory.mktemp("infer")
  speech = load_audio(os.path.join(REPO, "data", "examples", "speech.wav"))
  return dict(bundle=write_micro_bundle(str(d / "bundle")), dir=d,
              audio=_write_wav(d / "speech.wav", speech[:int(SECONDS * 16000)]),
              silent=_write_wav(d / "silent.wav", np.zeros(16000)))


def _args(files, out, *extra):
  return [f"--checkpoint={files['bundle']}", f"--image={PORTRAIT}", f"--audio={files['audio']}",
          f"--out={out}", "--emotion=happy", "--intensity=0.7", *extra]


@pytest.fixture(scope="module")
def first_render(files):
  out = str(files["dir"] / "a.mp4")
  assert main(_args(files, out)) == 0
  return out


def test_mp4_matches_the_audio_and_has_a_sidecar(files, first_render, capsys):
  info = probe_mp4(first_render)
  assert info["fps"] == 25.0
  assert info["num_frames"] == math.ceil(SECONDS * 25)
  assert abs(info["audio_seconds"] - SECONDS) < 0.03
  assert abs(info["video_seconds"] - info["audio_seconds"]) <= 1 / 25 + 1e-6
  sidecar = json.load(open(first_render + ".json"))
  assert sidecar["seed"] == 0 and sidecar["config"]["job"]["emotion"] == "happy"
  assert set(sidecar["inputs"]) == {"image", "audio"}
  assert main(_args(files, first_render)) == 0  # finished outputs are skipped
  assert "skipped" in capsys.readouterr().out


def test_rerun_gives_identical_frames(files, first_render):
  again = str(files["dir"] / "again.mp4")
  assert main(_args(files, again)) == 0
  np.testing.assert_array_equal(read_video(again)[0], read_video(first_render)[0])
  other_seed = str(files["dir"] / "seed1.mp4")
  assert main(_args(files, other_seed, "--seed=1")) == 0
  assert np.abs(read_video(other_seed)[0].astype(int) - read_video(first_render)[0]).max() > 0


def test_interrupted_render_resumes_from_its_last_window(files, first_render, monkeypatch):
  out = str(files["dir"] / "resumed.mp4")
  real = render.Renderer.render_batch

  def interrupted(self, batch, progress=None):
    def stop_after_three(n):
      stop_after_three.done += n
      if stop_after_three.done >= 3:
        raise KeyboardInterrupt
    stop_after_three.done = 0
    return real(self, batch, stop_after_three)

  monkeypatch.setattr(render.Renderer, "render_batch", interrupted)
  with pytest.raises(KeyboardInterrupt):
    main(_args(files, out))
  parts = out + ".parts"
  assert len([f for f in os.listdir(parts) if f.startswith("segment_")]) == 3 and not os.path.exists(out)
  monkeypatch.setattr(render.Renderer, "render_batch", real)
  assert main(_args(files, out)) == 0
  np.testing.assert_array_equal(read_video(out)[0], read_video(first_render)[0])
  assert not os.path.exists(parts)


def test_outputs_and_parts_of_another_render_are_not_reused(files, first_render, monkeypatch, capsys):
  """Finished and partial outputs count only for the same checkpoint, settings and inputs (`render_key`)."""
  out = str(files["dir"] / "stale.mp4")
  for suffix in ("", ".json"):  # a finished output of the default settings ...
    shutil.copy(first_render + suffix, out + suffix)
  assert main(_args(files, out, "--steps=2")) == 0  # ... is not the output of 2 sampling steps
  assert f"wrote {out}" in capsys.readouterr().out
  assert np.abs(read_video(out)[0].astype(int) - read_video(first_render)[0]).max() > 0
  assert main(_args(files, out, "--steps=2")) == 0 and "skipped" in capsys.readouterr().out
  assert main(_args(files, out)) == 0  # back to the default settings: rendered again, equal to the first
  np.testing.assert_array_equal(read_video(out)[0], read_video(first_render)[0])

  # Segments of an interrupted 2-step render are dropped, not mixed into the default render.
  partial = str(files["dir"] / "partial.mp4")
  real = render.Renderer.render_batch

  def interrupted(self, batch, progress=None):
    def stop(n):
      raise KeyboardInterrupt
    return real(self, batch, stop)

  monkeypatch.setattr(render.Renderer, "render_batch", interrupted)
  with pytest.raises(KeyboardInterrupt):
    main(_args(files, partial, "--steps=2"))
  assert [f for f in os.listdir(partial + ".parts") if f.startswith("segment_")]
  monkeypatch.setattr(render.Renderer, "render_batch", real)
  assert main(_args(files, partial)) == 0
  np.testing.assert_array_equal(read_video(partial)[0], read_video(first_render)[0])


def test_a_render_hashes_the_bundle_and_each_input_once(files, first_render, monkeypatch):
  calls = []
  for module in (render, provenance):
    for name in ("file_sha256", "folder_sha256"):
      real = getattr(provenance, name)
      monkeypatch.setattr(module, name, lambda path, real=real: calls.append(os.path.abspath(path)) or real(path))
  out = str(files["dir"] / "hashed.mp4")
  assert main(_args(files, out, "--steps=3")) == 0
  assert sorted(calls) == sorted(os.path.abspath(p) for p in (files["bundle"], PORTRAIT, files["audio"]))
  sidecar = json.load(open(out + ".json"))  # the hashes taken for the render key are the ones recorded
  assert sidecar["checkpoint"]["sha256"] == provenance.folder_sha256(files["bundle"])
  assert sidecar["inputs"]["image"]["sha256"] == provenance.file_sha256(PORTRAIT)
  assert sidecar["inputs"]["audio"]["sha256"] == provenance.file_sha256(files["audio"])


def test_jobs_file_renders_good_jobs_and_reports_the_bad_one(files, capsys):
  d = files["dir"]
  jobs = [dict(image=PORTRAIT, audio=files["audio"], out=str(d / "j_sad.mp4"), emotion="sad", seed=3),
          dict(image=PORTRAIT, audio=files["audio"], out=str(d / "j_bad.mp4"), emotion="bored"),
          dict(image=PORTRAIT, audio=files["audio"], out=str(d / "j_mix.mp4"), mix="happy:0.5,surprised:0.5",
               intensity="0s:0.0,1s:1.0")]
  path = d / "jobs.jsonl"
  path.write_text("\n".join(json.dumps(j) for j in jobs) + "\n")
  assert main([f"--checkpoint={files['bundle']}", f"--jobs={path}", "--batch-size=2"]) == 2
  captured = capsys.readouterr()
  assert "j_bad.mp4" in captured.err and "bored" in captured.err
  for name in ("j_sad.mp4", "j_mix.mp4"):
    assert probe_mp4(str(d / name))["num_frames"] == math.ceil(SECONDS * 25)
  assert not os.path.exists(d / "j_bad.mp4")
  assert main([f"--checkpoint={files['bundle']}", f"--jobs={path}", "--batch-size=2"]) == 2
  assert capsys.readouterr().out.count("skipped") == 2


@pytest.mark.parametrize("extra,needle", [
    (["--emotion=bored"], "unknown emotion 'bored'"),
    (["--intensity=abc"], "not a number"),
    (["--intensity=-0.5"], ">= 0"),
    (["--intensity-curve=0s:0.0,zz"], "malformed keyframe"),
    (["--checkpoint=/nonexistent/ckpt"], "/nonexistent/ckpt"),
    (["--image=/nonexistent/face.png"], "/nonexistent/face.png"),
    (["--audio=SILENT"], "silent"),
    (["--cfg.num_stepz=3"], "no field 'num_stepz'"),
    (["--cfg.guidance.rescale=1.5"], "rescale must be in [0, 1]"),
])
def test_user_errors_are_one_line(files, tmp_path, capsys, extra, needle):
  extra = [e.replace("SILENT", files["silent"]) for e in extra]
  assert main(_args(files, str(tmp_path / "x.mp4")) + extra) == 2
  err = capsys.readouterr().err
  assert err.startswith("error: ") and err.count("\n") == 1 and needle in err, err
  assert not os.path.exists(tmp_path / "x.mp4")


def test_user_error_from_the_command_line_has_no_traceback(files, tmp_path):
  run = subprocess.run([sys.executable, "-m", "launch.infer", *_args(files, str(tmp_path / "x.mp4")),
                        "--emotion=bored"], capture_output=True, text=True, cwd=REPO)
  assert run.returncode == 2
  assert "Traceback" not in run.stderr and run.stderr.strip().splitlines()[-1].startswith("error: "), run.stderr


def test_demo_writes_an_mp4_per_emotion_and_a_contact_sheet(files):
  from PIL import Image

  from emodiff_jax.sampling.bundle import load_bundle
  from emodiff_jax.sampling.demo import CELL, run_demo
  from emodiff_jax.synth.expression import EMOTIONS

  out = files["dir"] / "demo"
  report = run_demo(load_bundle(files["bundle"]), PORTRAIT, files["audio"], str(out), seconds=0.5,
                    intensities=(0.5, 1.0))
  assert not report.failed and len(report.written) == 16
  for emotion in EMOTIONS:
    info = probe_mp4(str(out / f"{emotion}.mp4"))
    assert info["num_frames"] == math.ceil(0.5 * 25) and abs(info["audio_seconds"] - 0.5) < 0.03
  sheet = np.asarray(Image.open(out / "contact_sheet.png"))
  assert sheet.shape == (8 * CELL, 2 * 3 * CELL, 3)


def test_jobs_are_sharded_over_devices_and_match_the_single_device_render(files, first_render, tmp_path):
  """Two jobs as one batch over 2 simulated devices (`data` axis, one example each): the seed-0 job gives the
  frames of the single-device render of the same job, the seed-1 job other frames."""
  jobs = tmp_path / "jobs.jsonl"
  outs = [str(tmp_path / f"d{i}.mp4") for i in range(2)]
  jobs.write_text("".join(json.dumps(dict(image=PORTRAIT, audio=files["audio"], out=o, emotion="happy",
                                          intensity=0.7, seed=i)) + "\n" for i, o in enumerate(outs)))
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
  code = ("import jax, sys; from emodiff_jax.sampling.cli import main; assert jax.device_count() == 2; "
          "sys.exit(main(sys.argv[1:]))")
  run = subprocess.run([sys.executable, "-c", code, f"--checkpoint={files['bundle']}", f"--jobs={jobs}",
                        "--batch-size=2"], capture_output=True, text=True, cwd=REPO, env=env)
  assert run.returncode == 0, run.stderr[-3000:]
  single = read_video(first_render)[0].astype(int)
  same, other = (np.abs(read_video(o)[0].astype(int) - single) for o in outs)
  assert same.mean() < 0.5 and same.max() <= 8, (same.mean(), same.max())
  assert other.mean() > 2, other.mean()


def test_emotion_guidance_renders_the_intensity_0_trajectory_beside_the_request(files, first_render):
  """At intensity 0 the emotion edit is empty, so emotion guidance renders what the unguided sampler does (the
  intensity-0 pass gets the job's own speech, blinks and pose); at 0.7 it changes the frames."""
  def frames(name, intensity, *extra):
    out = str(files["dir"] / f"{name}.mp4")
    assert main([a for a in _args(files, out, *extra) if not a.startswith("--intensity")] +
                [f"--intensity={intensity}"]) == 0
    return read_video(out)[0].astype(np.float64)

  guided_0 = frames("guided0", 0.0, "--cfg.guidance.emotion=3")
  plain_0 = frames("plain0", 0.0)
  guided_7 = frames("guided7", 0.7, "--cfg.guidance.emotion=3")
  still = np.abs(guided_0 - plain_0).mean()
  moved = np.abs(guided_7 - read_video(first_render)[0]).mean()
  assert still < 0.05 and moved > 10 * max(still, 0.01), (still, moved)
