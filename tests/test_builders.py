"""Tests of the TFDS clip builders on tiny trees written with real codecs (H.264, AAC).

Faces for the MEAD/HDTF trees are simple OpenCV-drawn cartoon faces (the Haar detector, the default,
fires on them; it does not fire on `synth.world` renders), pasted off-centre so the crop must find them.
"""

import os
import shutil
import subprocess

import cv2
import numpy as np
import pytest
import tensorflow_datasets as tfds

import data  # registers the builders
from emodiff_jax.input import clip_builder
from emodiff_jax.input import media
from emodiff_jax.input import records

FACE = 96  # rendered face frame side
FRAME = (128, 160)  # H, W of the source videos
OFFSET = (20, 50)  # top-left (y, x) of the face frame inside the source frame
DIM = records.EXPRESSION_DIM


def _face_video(seconds: float, fps: float, seed: int) -> np.ndarray:
  """Cartoon talking face (OpenCV drawing), `[T, 128, 160, 3]`, face frame pasted at OFFSET."""
  t_total, r, c0 = int(round(seconds * fps)), int(FACE * 0.3), FACE // 2
  out = np.full((t_total,) + FRAME + (3,), 100, np.uint8)
  for t in range(t_total):
    img = np.full((FACE, FACE, 3), 90 + 10 * seed, np.uint8)
    c = (c0 + int(2 * np.sin(t / 3)), c0)
    cv2.ellipse(img, c, (int(r * 0.8), r), 0, 0, 360, (220, 180, 150), -1)
    for dx in (-1, 1):
      cv2.ellipse(img, (c[0] + dx * int(r * 0.35), c[1] - int(r * 0.2)),
                  (int(r * 0.15), int(r * 0.08)), 0, 0, 360, (40, 30, 30), -1)
      cv2.line(img, (c[0] + dx * int(r * 0.2), c[1] - int(r * 0.42)),
               (c[0] + dx * int(r * 0.55), c[1] - int(r * 0.42)), (60, 40, 30), 2)
    cv2.ellipse(img, (c[0], c[1] + int(r * 0.45)), (int(r * 0.3), int(r * (0.05 + 0.05 * (t % 3)))),
                0, 0, 360, (120, 40, 40), -1)
    out[t, OFFSET[0]:OFFSET[0] + FACE, OFFSET[1]:OFFSET[1] + FACE] = cv2.GaussianBlur(img, (5, 5), 1.5)
  return out


def _tone(seconds: float, rate: int, hz: float = 220.0) -> np.ndarray:
  return (0.4 * np.sin(2 * np.pi * hz * np.arange(int(seconds * rate)) / rate)).astype(np.float32)


def _write_m4a(path: str, wav: np.ndarray, rate: int) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  pcm = (np.clip(wav, -1, 1) * 32767).astype(np.int16).tobytes()
  subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "s16le", "-ar", str(rate), "-ac", "1",
                  "-i", "-", "-c:a", "aac", path], input=pcm, check=True)


def _mead_clip(root, ident, emotion, level, fps=25.0, rate=16000, seconds=1.2, audio_seconds=None,
               frames=None, expression_rows=None, expression_dim=DIM, audio=True):
  video = os.path.join(root, ident, "video", "front", emotion, f"level_{level}", "001.mp4")
  frames = _face_video(seconds, fps, seed=level) if frames is None else frames
  media.write_video(video, frames, fps)
  if audio:
    m4a = os.path.join(root, ident, "audio", emotion, f"level_{level}", "001.m4a")
    _write_m4a(m4a, _tone(audio_seconds or seconds + 0.05, rate), rate)
  if expression_rows is not None:
    npy = os.path.join(root, "expressions", os.path.relpath(video, root)[:-4] + ".npy")
    os.makedirs(os.path.dirname(npy), exist_ok=True)
    codes = np.arange(expression_rows * expression_dim, dtype=np.float32)
    np.save(npy, codes.reshape(expression_rows, expression_dim))
  return video


@pytest.fixture(scope="module")
def mead_tree(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("mead_src"))
  _mead_clip(root, "M001", "happy", 2, fps=30.0, rate=44100, expression_rows=36)  # 36 frames @30
  _mead_clip(root, "M001", "neutral", 1)
  _mead_clip(root, "M002", "angry", 3)
  bad = _mead_clip(root, "M001", "sad", 1)
  with open(bad, "r+b") as f:
    f.truncate(os.path.getsize(bad) // 2)
  _mead_clip(root, "M001", "sad", 2, audio_seconds=0.5)
  _mead_clip(root, "M001", "fear", 1, frames=np.full((30,) + FRAME + (3,), 100, np.uint8))
  _mead_clip(root, "M001", "surprised", 1, audio=False)
  _mead_clip(root, "M001", "disgusted", 1, expression_rows=30, expression_dim=7)
  return root


@pytest.fixture(scope="module")
def mead_build(mead_tree, tmp_path_factory):
  """An interrupted build (extractor raising mid-way), then a clean rerun with an extractor."""
  data_dir = str(tmp_path_factory.mktemp("tfds"))
  config = tfds.download.DownloadConfig(manual_dir=mead_tree)
  calls = []

  def failing(frames):
    calls.append(len(frames))
    if len(calls) == 2:
      raise RuntimeError("extractor crashed mid-build")
    return np.zeros((len(frames), DIM), np.float32)

  records.set_expression_extractor(failing)
  try:
    with pytest.raises(RuntimeError, match="crashed mid-build"):
      data.mead.Builder(data_dir=data_dir).download_and_prepare(
          file_format="array_record", download_config=config)
    leftovers = sorted(os.listdir(os.path.join(data_dir, "mead", "64px")))
    records.set_expression_extractor(lambda f: np.repeat(f.mean((1, 2, 3))[:, None], DIM, 1))
    builder = data.mead.Builder(data_dir=data_dir)
    builder.download_and_prepare(file_format="array_record", download_config=config)
  finally:
    records.set_expression_extractor(None)
  return builder, data_dir, leftovers


def _by_id(reader):
  return {r["clip_id"].decode(): r for r in (reader[i] for i in range(len(reader)))}


def test_interrupted_build_leaves_nothing_and_rerun_succeeds(mead_build):
  builder, data_dir, leftovers = mead_build
  assert leftovers == []  # no version dir, no incomplete.* dir after the crash
  assert os.listdir(os.path.join(data_dir, "mead", "64px")) == [str(clip_builder.ClipDatasetBuilder.VERSION)]
  assert builder.info.splits["train"].num_examples == 2
  assert builder.info.splits["test"].num_examples == 1


def test_mead_records(mead_build):
  _, data_dir, _ = mead_build
  source = tfds.data_source("mead", data_dir=data_dir)
  train = _by_id(source["train"])
  assert set(train) == {"mead/M001/happy/level_2/001", "mead/M001/neutral/level_1/001"}
  assert [r["identity"] for r in _by_id(source["test"]).values()] == [b"mead/M002"]
  happy = train["mead/M001/happy/level_2/001"]
  assert records.emotion_name(happy) == "happy" and happy["level"] == 2
  frames = records.decode_frames(happy)
  assert frames.shape == (30, 64, 64, 3) and happy["num_frames"] == 30  # 36 @ 30 fps -> 30 @ 25
  assert happy["fps"] == 25.0 and happy["audio"].shape == (30 * 640,)
  wav = records.audio_float(happy)  # 44.1 kHz tone resampled to 16 kHz keeps its pitch
  spectrum = np.abs(np.fft.rfft(wav[1600:17600]))
  assert np.fft.rfftfreq(16000, 1 / 16000)[np.argmax(spectrum)] == pytest.approx(220, abs=2)
  codes = np.arange(36 * DIM, dtype=np.float32).reshape(36, DIM)
  assert happy["has_expression"]
  np.testing.assert_array_equal(happy["expression"], codes[media.resample_indices(36, 30, 25)])
  neutral = train["mead/M001/neutral/level_1/001"]  # no .npy: the registered extractor ran
  assert neutral["has_expression"]
  np.testing.assert_allclose(neutral["expression"][:, 0],
                             records.decode_frames(neutral).mean((1, 2, 3)), rtol=1e-6)


def test_mead_neutral_reference_is_the_speakers_neutral_face(mead_build):
  """Every M001 record (happy lists before neutral on disk) carries the middle frame of M001's neutral
  clip; M002 has no neutral clip, so its record has none and the build counts it."""
  builder, data_dir, _ = mead_build
  source = tfds.data_source("mead", data_dir=data_dir)
  train = _by_id(source["train"])
  neutral_frames = records.decode_frames(train["mead/M001/neutral/level_1/001"])
  for record in train.values():
    np.testing.assert_array_equal(records.decode_neutral_reference(record), neutral_frames[len(neutral_frames) // 2])
  (angry,) = _by_id(source["test"]).values()
  with pytest.raises(ValueError, match="mead/M002/angry/level_3/001.*no neutral_reference"):
    records.decode_neutral_reference(angry)
  assert builder.skip_stats["test"].flagged["missing_neutral_reference"] == 1
  assert builder.skip_stats["train"].flagged["missing_neutral_reference"] == 0


def test_face_crop_is_centred_on_the_face(mead_tree):
  frames, _ = media.read_video(os.path.join(mead_tree, "M002/video/front/angry/level_3/001.mp4"))
  from emodiff_jax.input import face_crop
  x0, y0, x1, y1 = face_crop.clip_face_box(frames, face_crop.HaarFaceDetector())
  face_cx, face_cy = OFFSET[1] + FACE / 2, OFFSET[0] + FACE / 2
  assert abs((x0 + x1) / 2 - face_cx) < 0.1 * FACE and abs((y0 + y1) / 2 - face_cy) < 0.15 * FACE
  assert x1 - x0 == y1 - y0 and 0 <= x0 and x1 <= FRAME[1] and 0 <= y0 and y1 <= FRAME[0]


def test_bad_mead_clips_are_skipped_with_reasons(mead_build, mead_tree):
  builder, _, _ = mead_build
  stats = builder.skip_stats["train"]
  assert dict(stats.skipped) == {"bad_video": 1, "audio_too_short": 1, "no_face": 1,
                                 "bad_audio": 1, "bad_expression": 1}
  messages = "\n".join(m for ms in stats.examples.values() for m in ms)
  assert "sad/level_1/001.mp4: bad_video: unreadable or truncated" in messages
  assert "sad/level_2/001.m4a: audio_too_short" in messages
  assert "fear/level_1/001.mp4: no_face" in messages
  assert "surprised/level_1/001.m4a: bad_audio: no such file" in messages
  assert "disgusted/level_1/001.npy: bad_expression: shape (30, 7)" in messages
  assert "skipped 5" in stats.summary()


def test_required_rate_and_required_expression(mead_tree):
  sources = {s.clip_id: s for s in data.mead.Builder(data_dir="/unused").list_sources(mead_tree)}
  happy = sources["mead/M001/happy/level_2/001"]
  with pytest.raises(clip_builder.ClipError, match=r"001\.m4a: wrong_sample_rate: wrong sample rate"
                                                   r" 44100 Hz, 16000 Hz required"):
    clip_builder.build_record(happy, clip_builder.ClipOptions(required_sample_rate=16000), None)
  stats = clip_builder.SkipStats()
  opts = clip_builder.ClipOptions(require_expression=True)
  kept = list(clip_builder.generate_records([sources["mead/M002/angry/level_3/001"]], opts, stats))
  assert kept == [] and dict(stats.skipped) == {"missing_expression": 1}


def test_corrupt_shard_error_names_the_shard(mead_build, tmp_path):
  _, data_dir, _ = mead_build
  copy = str(tmp_path / "tfds")
  shutil.copytree(data_dir, copy)
  version_dir = os.path.join(copy, "mead", "64px", str(clip_builder.ClipDatasetBuilder.VERSION))
  shard = [f for f in os.listdir(version_dir) if f.startswith("mead-train.array_record")][0]
  with open(os.path.join(version_dir, shard), "r+b") as f:
    f.truncate(1000)
  reader = records.RecordReader("mead", "train", copy)
  with pytest.raises(records.ShardError, match=rf"{shard}: corrupt ArrayRecord shard \(record 0"):
    reader[0]


def test_hdtf_build(tmp_path):
  root = tmp_path / "hdtf"
  media.write_video(str(root / "WRA_Alice_000.mp4"), _face_video(1.0, 30.0, seed=1), 30.0,
                    _tone(1.0, 44100), 44100)
  media.write_video(str(root / "WRA_Alice_001.mp4"), _face_video(0.8, 25.0, seed=2), 25.0,
                    _tone(0.8, 16000), 16000)
  media.write_video(str(root / "WRA_Bob_000.mp4"), _face_video(0.8, 25.0, seed=3), 25.0,
                    _tone(0.8, 16000), 16000)
  media.write_video(str(root / "WRA_Bob_001.mp4"), _face_video(0.8, 25.0, seed=4), 25.0)
  builder = data.hdtf.Builder(data_dir=str(tmp_path / "tfds"))
  builder.download_and_prepare(file_format="array_record",
                               download_config=tfds.download.DownloadConfig(manual_dir=str(root)))
  assert dict(builder.skip_stats["test"].skipped) == {"bad_audio": 1}
  assert "WRA_Bob_001.mp4: bad_audio: no audio stream" in builder.skip_stats["test"].examples[
      "bad_audio"][0]
  assert builder.skip_stats["train"].flagged["missing_expression"] == 2
  train = _by_id(tfds.data_source("hdtf", data_dir=str(tmp_path / "tfds"))["train"])
  first = train["hdtf/WRA_Alice_000"]
  assert first["identity"] == b"hdtf/WRA_Alice" and first["level"] == 0
  assert first["num_frames"] == 25 and first["audio"].shape == (25 * 640,)
  assert not first["has_expression"] and not first["expression"].any()
  assert train["hdtf/WRA_Alice_001"]["num_frames"] == 20


@pytest.fixture(scope="module")
def synthetic_tiny(tmp_path_factory):
  """`synthetic_talk/tiny` built to ArrayRecord: (builder, data_dir)."""
  data_dir = str(tmp_path_factory.mktemp("synthetic_tfds"))
  builder = data.synthetic_talk.Builder(data_dir=data_dir, config="tiny")
  builder.download_and_prepare(file_format="array_record")
  return builder, data_dir


def test_synthetic_talk_tiny_roundtrip(synthetic_tiny):
  from emodiff_jax.synth import world
  builder, data_dir = synthetic_tiny
  test = _by_id(tfds.data_source("synthetic_talk", data_dir=data_dir, builder_kwargs={
      "config": "tiny"})["test"])
  cfg = builder.builder_config
  spec = world.list_clips("test", "mead_like", clips_per_condition=1)[0]
  clip = world.generate_clip(spec, num_frames=cfg.num_frames, resolution=cfg.resolution,
                             expression_dim=cfg.expression_dim, seed=cfg.seed)
  rec = test[clip.clip_id]
  np.testing.assert_array_equal(records.decode_frames(rec), clip.frames)  # PNG is lossless
  np.testing.assert_array_equal(rec["expression"], clip.expression)
  np.testing.assert_allclose(records.audio_float(rec)[:len(clip.audio)],
                             np.clip(clip.audio[:cfg.num_frames * 640], -1, 1), atol=1 / 32767)
  assert rec["has_expression"] and rec["source"] == b"mead_like"


def test_expression_gan_data_from_the_built_synthetic_talk_records(synthetic_tiny):
  from configs import expr_gan_synthetic
  from emodiff_jax.emotion import gan_eval
  _, data_dir = synthetic_tiny
  config = expr_gan_synthetic.get_config()
  config.data.update(source="records", num_frames=8,
                     records=dict(name="synthetic_talk/tiny", data_dir=data_dir, split="train"))
  train, test = gan_eval.evaluation_data(config)
  reader = records.RecordReader("synthetic_talk/tiny", "test", data_dir)
  assert len(test) == 2 * len(reader)  # 16-frame clips -> two 8-frame windows each
  rec = reader[0]
  np.testing.assert_array_equal(test.expression[0], rec["expression"][:8])
  np.testing.assert_array_equal(test.expression[1], rec["expression"][8:16])
  assert test.emotion[0] == rec["emotion"] and test.level[0] == rec["level"]
  assert len(train) == 2 * len(records.RecordReader("synthetic_talk/tiny", "train", data_dir))
  assert set(train.emotion.tolist()) == set(range(8))


def test_the_expression_probe_is_the_builders_extractor(mead_tree):
  import jax
  from emodiff_jax.emotion.probe import NUM_COEFFS, RESOLUTION, ExpressionProbe, ProbeState, probe_extractor
  params = ExpressionProbe().init(jax.random.key(0), np.zeros((1, RESOLUTION, RESOLUTION, 3), np.float32))["params"]
  extract = probe_extractor(ProbeState(params, np.linspace(-1, 1, NUM_COEFFS), np.full(NUM_COEFFS, 2.0)))
  clip = os.path.join(mead_tree, "M001", "{}", "neutral", "level_1", "001.{}")
  src = clip_builder.ClipSource(video=clip.format("video/front", "mp4"), audio=clip.format("audio", "m4a"),
                                clip_id="c", identity="M001", dataset="mead", source="mead")
  records.set_expression_extractor(extract)
  try:
    rec = clip_builder.build_record(src, clip_builder.ClipOptions(), clip_builder.face_crop.HaarFaceDetector())
  finally:
    records.set_expression_extractor(None)
  assert rec["has_expression"] and rec["expression"].shape == (rec["num_frames"], DIM)
  np.testing.assert_allclose(rec["expression"], extract(records.decode_frames(rec)), rtol=1e-5, atol=1e-6)
  assert np.abs(rec["expression"][:, :NUM_COEFFS]).min() > 0 and not rec["expression"][:, NUM_COEFFS:].any()
