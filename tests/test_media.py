"""Tests of `emodiff_jax.input.media`: real H.264/AAC files through PyAV and the ffmpeg CLI."""

import os
import subprocess

import av
import numpy as np
import pytest

from emodiff_jax.input import media


def _ramp_frames(t: int, h: int, w: int) -> np.ndarray:
  """Frame i is a flat gray of level 8 * i (so decoded frames identify their source index)."""
  return np.broadcast_to((8 * np.arange(t, dtype=np.uint8))[:, None, None, None], (t, h, w, 3)).copy()


def _tone(seconds: float, rate: int, hz: float = 440.0) -> np.ndarray:
  return (0.5 * np.sin(2 * np.pi * hz * np.arange(int(seconds * rate)) / rate)).astype(np.float32)


def _write_m4a(path: str, wav: np.ndarray, rate: int) -> None:
  pcm = (np.clip(wav, -1, 1) * 32767).astype(np.int16).tobytes()
  subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "s16le", "-ar", str(rate), "-ac", "1",
                  "-i", "-", "-c:a", "aac", path], input=pcm, check=True)


@pytest.fixture(scope="module")
def clip30(tmp_path_factory):
  """30 frames at 30 fps (1 s), odd size 31x45, with 1 s of 44.1 kHz audio."""
  path = str(tmp_path_factory.mktemp("media") / "clip30.mp4")
  media.write_video(path, _ramp_frames(30, 31, 45), 30.0, _tone(1.0, 44100), 44100)
  return path


def test_write_video_streams_checked_with_pyav(clip30):
  with av.open(clip30) as c:
    v, a = c.streams.video[0], c.streams.audio[0]
    assert v.codec_context.name == "h264" and v.codec_context.pix_fmt == "yuv420p"
    assert (v.width, v.height) == (46, 32)  # odd sizes padded to even
    n = sum(1 for _ in c.decode(v))
    assert n == 30 and float(v.average_rate) == pytest.approx(30.0)
    assert a.codec_context.name == "aac" and a.rate == 44100
  with av.open(clip30) as c:
    samples = sum(f.samples for f in c.decode(c.streams.audio[0]))
  assert abs(samples / 44100 - 1.0) <= 1 / 30  # audio duration within one frame
  assert not [f for f in os.listdir(os.path.dirname(clip30)) if f.startswith(".tmp_")]


def test_read_video_roundtrip_and_resampling(clip30):
  frames, fps = media.read_video(clip30)
  assert frames.shape == (30, 32, 46, 3) and frames.dtype == np.uint8 and fps == pytest.approx(30)
  np.testing.assert_allclose(frames[:, :31, :45].mean(axis=(1, 2, 3)), 8 * np.arange(30), atol=3)
  frames25, fps25 = media.read_video(clip30, target_fps=25)
  assert fps25 == 25.0 and len(frames25) == 25
  expected = np.floor(np.arange(25) * 30 / 25 + 0.5).astype(int)  # nearest source frame
  np.testing.assert_allclose(frames25.mean(axis=(1, 2, 3)), 8 * expected, atol=3)


def test_resample_indices_cover_same_duration():
  np.testing.assert_array_equal(media.resample_indices(6, 30, 25), [0, 1, 2, 4, 5])
  np.testing.assert_array_equal(media.resample_indices(4, 20, 25), [0, 1, 2, 2, 3])
  assert len(media.resample_indices(300, 29.97, 25)) == 250


def test_load_audio_resamples_and_keeps_pitch(clip30, tmp_path):
  wav = media.load_audio(clip30, 16000)
  assert wav.dtype == np.float32 and abs(len(wav) - 16000) <= 640  # AAC priming < one frame
  spectrum = np.abs(np.fft.rfft(wav[2000:14000]))
  assert np.fft.rfftfreq(12000, 1 / 16000)[np.argmax(spectrum)] == pytest.approx(440, abs=3)
  m4a = str(tmp_path / "a.m4a")
  _write_m4a(m4a, _tone(0.5, 16000, 300), 16000)
  assert abs(len(media.load_audio(m4a, 16000, required_rate=16000)) - 8000) <= 640
  with pytest.raises(media.MediaError, match=r"a\.m4a: wrong sample rate 16000 Hz, 44100 Hz"):
    media.load_audio(m4a, required_rate=44100)


def test_errors_name_the_file_and_problem(clip30, tmp_path):
  with pytest.raises(media.MediaError, match=r"missing\.mp4: no such file"):
    media.read_video(str(tmp_path / "missing.mp4"))
  data = open(clip30, "rb").read()
  truncated = tmp_path / "truncated.mp4"
  truncated.write_bytes(data[: len(data) // 2])
  with pytest.raises(media.MediaError, match=r"truncated\.mp4: unreadable or truncated"):
    media.read_video(str(truncated))
  text = tmp_path / "notes.mp4"
  text.write_text("not a video")
  with pytest.raises(media.MediaError, match=r"notes\.mp4: unreadable"):
    media.read_video(str(text))
  m4a = str(tmp_path / "only_audio.m4a")
  _write_m4a(m4a, _tone(0.2, 16000), 16000)
  with pytest.raises(media.MediaError, match=r"only_audio\.m4a: no video stream"):
    media.read_video(m4a)
  silent = str(tmp_path / "silent.mp4")
  media.write_video(silent, _ramp_frames(3, 16, 16), 25)
  with pytest.raises(media.MediaError, match=r"silent\.mp4: no audio stream"):
    media.load_audio(silent)


def test_write_video_is_atomic_on_bad_input(tmp_path):
  with pytest.raises(media.MediaError, match=r"bad\.mp4: frames must be non-empty uint8"):
    media.write_video(str(tmp_path / "bad.mp4"), np.zeros((2, 8, 8, 3), np.float32), 25)
  with pytest.raises(TypeError):
    media.write_video(str(tmp_path / "bad2.mp4"), _ramp_frames(2, 8, 8), 25, audio=object())
  assert os.listdir(tmp_path) == []
