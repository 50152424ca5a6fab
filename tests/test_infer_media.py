"""Tests of the inference CLI's media side: portrait and speech loading (`input.portrait`), segmented
mp4 output and paste-back (`sampling.video_out`), provenance sidecars (`sampling.provenance`)."""

import os
import wave

import numpy as np
import pytest
from PIL import Image

from emodiff_jax.input import media
from emodiff_jax.input.media import MediaError
from emodiff_jax.input.portrait import Portrait, load_portrait, load_speech
from emodiff_jax.sampling import provenance
from emodiff_jax.sampling.video_out import SegmentWriter, paste_back, probe_mp4
from emodiff_jax.synth.identity import make_identity
from emodiff_jax.synth.render import render_frames

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "examples")
PORTRAIT = os.path.join(EXAMPLES, "portrait.png")
SR = 16000


def _no_face(frame: np.ndarray) -> np.ndarray:
  return np.zeros((0, 4), np.int64)


def _write_wav(path: str, wav: np.ndarray) -> str:
  with wave.open(path, "wb") as f:
    f.setnchannels(1)
    f.setsampwidth(2)
    f.setframerate(SR)
    f.writeframes((np.clip(wav, -1, 1) * 32767).astype("<i2").tobytes())
  return path


def _tone(seconds: float) -> np.ndarray:
  return (0.3 * np.sin(2 * np.pi * 220 * np.arange(round(seconds * SR)) / SR)).astype(np.float32)


def _segment_frames(index: int, n: int = 20) -> np.ndarray:
  """Flat grey frames whose level encodes (segment, frame), `[n, 32, 48, 3]`."""
  levels = (100 * (index % 2) + 4 * np.arange(n)).astype(np.uint8)
  return np.broadcast_to(levels[:, None, None, None], (n, 32, 48, 3)).copy()


def test_example_portrait_is_face_detected_and_cropped():
  p = load_portrait(PORTRAIT, 64)
  h, w, _ = p.image.shape
  x0, y0, x1, y1 = p.box
  assert p.crop.shape == (64, 64, 3) and p.crop.dtype == np.uint8 and p.image.shape == (256, 256, 3)
  assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h and x1 - x0 == y1 - y0
  assert x1 - x0 < 256  # a crop, not the whole canvas


def test_assume_cropped_uses_a_model_sized_image_whole(tmp_path):
  face = render_frames(make_identity("mead_like", 9), np.zeros((1, 50), np.float32), 64)[0]
  path = str(tmp_path / "face64.png")
  Image.fromarray(face).save(path)
  with pytest.raises(MediaError, match="no face found.*--assume-cropped") as e:
    load_portrait(path, 64, detector=_no_face)
  assert e.value.path == path
  p = load_portrait(path, 64, detector=_no_face, assume_cropped=True)
  assert p.box == (0, 0, 64, 64) and np.array_equal(p.crop, face) and np.array_equal(p.image, face)
  with pytest.raises(MediaError, match="needs a 128x128 image, got 64x64"):
    load_portrait(path, 128, detector=_no_face, assume_cropped=True)


def test_portrait_applies_exif_orientation_and_flattens_alpha(tmp_path):
  image = np.asarray(Image.open(PORTRAIT).convert("RGB"))[:, :200]  # 256 high, 200 wide
  rotated = Image.fromarray(np.rot90(image).copy())  # stored 200 high; EXIF 6 turns it back
  exif = Image.Exif()
  exif[0x0112] = 6
  jpg = str(tmp_path / "rotated.jpg")
  rotated.save(jpg, exif=exif, quality=95)
  p = load_portrait(jpg, 64)
  assert p.image.shape == (256, 200, 3)
  assert np.abs(p.image.astype(int) - image).mean() < 3
  rgba = np.concatenate([image, np.full(image.shape[:2] + (1,), 255, np.uint8)], -1)
  rgba[:10, :10, 3] = 0  # transparent corner becomes white
  png = str(tmp_path / "alpha.png")
  Image.fromarray(rgba, "RGBA").save(png)
  p = load_portrait(png, 64)
  assert p.image.shape == (256, 200, 3) and (p.image[:10, :10] == 255).all()


def test_unusable_portraits_raise_media_error_naming_the_file(tmp_path):
  missing = str(tmp_path / "missing.png")
  with pytest.raises(MediaError, match="no such file") as e:
    load_portrait(missing, 64)
  assert missing in str(e.value)
  fake = tmp_path / "notes.png"
  fake.write_text("not an image")
  with pytest.raises(MediaError, match="not a readable image") as e:
    load_portrait(str(fake), 64)
  assert str(fake) in str(e.value)
  wall = str(tmp_path / "wall.png")
  Image.fromarray(np.tile(np.linspace(40, 200, 300, dtype=np.uint8)[None, :, None], (200, 1, 3))).save(wall)
  with pytest.raises(MediaError, match="no face found") as e:
    load_portrait(wall, 64, assume_cropped=True)  # not model-sized: no fallback either
  assert wall in str(e.value)


def test_load_speech_accepts_speech_and_rejects_silent_or_short(tmp_path):
  wav = load_speech(os.path.join(EXAMPLES, "speech.wav"))
  assert wav.dtype == np.float32 and len(wav) == 8 * SR
  silent = _write_wav(str(tmp_path / "silent.wav"), np.zeros(SR, np.float32))
  with pytest.raises(MediaError, match="silent audio") as e:
    load_speech(silent)
  assert silent in str(e.value)
  short = _write_wav(str(tmp_path / "short.wav"), _tone(0.1))
  with pytest.raises(MediaError, match="too short") as e:
    load_speech(short)
  assert short in str(e.value)


@pytest.mark.parametrize("seconds, frames", [(2.0, 50), (1.6, 40), (2.4, 60)],
                         ids=["cut_inside_last_segment", "cut_on_segment_boundary", "no_cut"])
def test_segment_writer_trims_video_to_audio_and_muxes_it(tmp_path, seconds, frames):
  out = str(tmp_path / "video.mp4")
  writer = SegmentWriter(out, fps=25)
  for i in range(3):  # 60 frames = 2.4 s
    writer.write_segment(i, _segment_frames(i))
  assert os.path.isfile(os.path.join(out + ".parts", "segment_00002.mp4"))
  writer.finish(_tone(seconds), SR)
  info = probe_mp4(out)
  assert info["fps"] == pytest.approx(25.0) and info["num_frames"] == frames
  assert (info["width"], info["height"]) == (48, 32)
  levels = media.read_video(out)[0][[0, 19, 20, 39], :, :, 0].mean(axis=(1, 2))
  np.testing.assert_allclose(levels, [0, 76, 100, 176], atol=4)  # segments joined in order
  assert abs(info["audio_seconds"] - seconds) <= 1 / 25 and abs(info["video_seconds"] - seconds) <= 1 / 25
  assert not os.path.exists(out + ".parts")
  assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp_")]


def test_segment_writer_resumes_after_a_crash(tmp_path):
  out = str(tmp_path / "video.mp4")
  first = SegmentWriter(out)
  first.write_segment(0, _segment_frames(0))
  first.write_segment(1, _segment_frames(1))
  (tmp_path / "video.mp4.parts" / ".tmp_half.mp4").write_bytes(b"\0" * 100)  # a write cut by the crash
  resumed = SegmentWriter(out)
  assert [resumed.has_segment(i) for i in range(3)] == [True, True, False]
  with pytest.raises(MediaError, match="segments hold 40 frames.*needs 51"):
    resumed.finish(_tone(2.01), SR)
  resumed.write_segment(2, _segment_frames(2))
  resumed.finish(_tone(2.01), SR)
  assert probe_mp4(out)["num_frames"] == 51  # ceil(2.01 s * 25 fps)


def test_paste_back_blends_crops_into_the_full_image():
  rng = np.random.default_rng(0)
  image = rng.integers(0, 256, (120, 200, 3), dtype=np.uint8)
  portrait = Portrait(crop=image[30:94, 60:124], image=image, box=(60, 30, 124, 94))
  frames = np.full((3, 32, 32, 3), 77, np.uint8)
  out = paste_back(portrait, frames)
  assert out.shape == (3, 120, 200, 3) and out.dtype == np.uint8
  outside = np.ones((120, 200), bool)
  outside[30:94, 60:124] = False
  assert np.array_equal(out[:, outside], np.broadcast_to(image[outside], (3,) + image[outside].shape))
  assert (np.abs(out[:, 52:72, 82:102].astype(int) - 77) <= 1).all()  # box centre: the generated crop
  flat = Portrait(crop=portrait.crop, image=np.full_like(image, 200), box=portrait.box)
  row = paste_back(flat, frames)[0, 62, 55:93, 0].astype(int)  # across the box's left edge to its centre
  assert (row[:5] == 200).all() and row[5] > 190 and row[-1] == 77  # no hard step at the edge
  assert (np.diff(row) <= 0).all()  # a monotone fade
  whole = Portrait(crop=image[:, :120], image=image[:, :120], box=(0, 0, 120, 120))
  assert (paste_back(whole, frames) == 77).all()  # box on the image border: nothing left to feather


def _sidecar(tmp_path, portrait_bytes: bytes, name: str) -> dict:
  """The sidecar of `<name>.mp4` made from a portrait holding `portrait_bytes` and `tmp_path/ckpt`."""
  portrait = tmp_path / f"{name}.png"
  portrait.write_bytes(portrait_bytes)
  speech = tmp_path / "speech.wav"
  speech.write_bytes(b"RIFF....")
  path = provenance.write_sidecar(str(tmp_path / f"{name}.mp4"), config={"steps": 25, "cfg": {"audio": 3.5}},
                                  seed=7, checkpoint_dir=str(tmp_path / "ckpt"),
                                  inputs={"portrait": str(portrait), "speech": str(speech)})
  assert path == str(tmp_path / f"{name}.mp4.json")
  return provenance.read_sidecar(path)


def test_sidecar_hashes_follow_input_bytes_and_round_trip(tmp_path):
  (tmp_path / "ckpt" / "params").mkdir(parents=True)
  (tmp_path / "ckpt" / "params" / "weights.bin").write_bytes(b"\1\2\3")
  (tmp_path / "ckpt" / "config.json").write_text("{}")
  a = _sidecar(tmp_path, b"portrait", "a")
  b = _sidecar(tmp_path, b"portrait", "b")
  c = _sidecar(tmp_path, b"portrair", "c")
  assert a["inputs"]["portrait"]["sha256"] == b["inputs"]["portrait"]["sha256"]
  assert a["inputs"]["portrait"]["sha256"] != c["inputs"]["portrait"]["sha256"]
  assert a["inputs"]["speech"] == c["inputs"]["speech"] and a["checkpoint"] == c["checkpoint"]
  assert a["config"] == {"steps": 25, "cfg": {"audio": 3.5}} and a["seed"] == 7
  assert set(a["versions"]) == {"python", "jax", "jaxlib", "flax", "numpy", "emodiff_jax"}
  assert a["versions"]["emodiff_jax"] == "0.1.0"
  (tmp_path / "ckpt" / "params" / "weights.bin").write_bytes(b"\1\2\4")
  assert _sidecar(tmp_path, b"portrait", "d")["checkpoint"]["sha256"] != a["checkpoint"]["sha256"]
  text = (tmp_path / "a.mp4.json").read_text()
  assert text.index('"checkpoint"') < text.index('"config"') < text.index('"git"')  # sorted keys
