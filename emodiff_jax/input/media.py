"""Video and audio decode/encode through PyAV (FFmpeg).

* `write_video`: H.264 (libx264, yuv420p) mp4 with optional mono AAC audio, written atomically
  (temp file in the same folder, then `os.replace`), so a crash never leaves a half file.
* `read_video`: all frames as uint8 `[T, H, W, 3]` RGB, optionally resampled to a target fps by
  nearest-timestamp frame selection.
* `load_audio`: the first audio stream as mono float32 `[N]`, resampled with librosa (soxr).

Every failure raises `MediaError(path, reason)` whose message names the file and the problem.
"""

from __future__ import annotations

import fractions
import math
import os
import tempfile
from typing import Optional

import av
import librosa
import numpy as np

TARGET_FPS = 25.0
SAMPLE_RATE = 16000


class MediaError(Exception):
  """A media file that cannot be used; `path` names it and `reason` says why."""

  def __init__(self, path: str, reason: str):
    super().__init__(f"{path}: {reason}")
    self.path = str(path)
    self.reason = reason


def _even_pad(frames: np.ndarray) -> np.ndarray:
  """Pads odd heights/widths by repeating the last row/column (yuv420p needs even sizes)."""
  _, h, w, _ = frames.shape
  ph, pw = h % 2, w % 2
  if ph or pw:
    frames = np.pad(frames, ((0, 0), (0, ph), (0, pw), (0, 0)), mode="edge")
  return frames


def write_video(path: str, frames: np.ndarray, fps: float, audio: Optional[np.ndarray] = None,
                sample_rate: int = SAMPLE_RATE, crf: int = 18) -> None:
  """Writes an H.264/yuv420p mp4 with optional mono AAC audio, atomically.

  Args:
    path: destination `.mp4`.
    frames: uint8 `[T, H, W, 3]` RGB; odd H or W are padded by one edge row/column.
    fps: frame rate (may be fractional, e.g. 29.97).
    audio: optional float32 `[N]` mono waveform in [-1, 1].
    sample_rate: rate of `audio` in Hz.
    crf: x264 constant rate factor (0 lossless ... 51 worst).
  """
  frames = np.asarray(frames)
  if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or not len(frames):
    raise MediaError(path, f"frames must be non-empty uint8 [T, H, W, 3], got {frames.dtype} "
                           f"{frames.shape}")
  frames = _even_pad(frames)
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  fd, tmp = tempfile.mkstemp(suffix=".mp4", prefix=".tmp_", dir=folder)
  os.close(fd)
  try:
    with av.open(tmp, mode="w", format="mp4") as out:
      rate = fractions.Fraction(fps).limit_denominator(1001)
      vs = out.add_stream("libx264", rate=rate)
      vs.width, vs.height = frames.shape[2], frames.shape[1]
      vs.pix_fmt = "yuv420p"
      vs.options = {"crf": str(crf)}
      aud = None
      if audio is not None:
        audio = np.asarray(audio, np.float32).reshape(-1)
        aud = out.add_stream("aac", rate=int(sample_rate), layout="mono")
      for frame in frames:
        out.mux(vs.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
      out.mux(vs.encode(None))
      if aud is not None:
        chunk = 1024
        for i, start in enumerate(range(0, len(audio), chunk)):
          piece = np.clip(audio[start:start + chunk], -1.0, 1.0)[None, :]
          af = av.AudioFrame.from_ndarray(np.ascontiguousarray(piece), format="fltp", layout="mono")
          af.sample_rate = int(sample_rate)
          af.pts = start
          out.mux(aud.encode(af))
        out.mux(aud.encode(None))
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def resample_indices(num_frames: int, src_fps: float, dst_fps: float) -> np.ndarray:
  """Source frame index for each output frame: nearest frame to each output timestamp.

  The output covers the same duration, `floor(num_frames * dst_fps / src_fps)` frames.
  """
  n_out = int(math.floor(num_frames * dst_fps / src_fps + 1e-6))
  idx = np.floor(np.arange(n_out) * (src_fps / dst_fps) + 0.5).astype(np.int64)
  return np.minimum(idx, num_frames - 1)


def _open(path: str) -> "av.container.InputContainer":
  """Opens a media file with PyAV; a `MediaError` naming it when missing or unreadable."""
  if not os.path.isfile(path):
    raise MediaError(path, "no such file")
  try:
    return av.open(path)
  except av.error.FFmpegError as e:
    raise MediaError(path, f"unreadable or truncated container ({e})") from e


def read_video(path: str, target_fps: Optional[float] = None) -> tuple[np.ndarray, float]:
  """Decodes all frames of the first video stream.

  Args:
    path: video file.
    target_fps: when set, frames are resampled to this rate (nearest timestamp).

  Returns:
    (frames uint8 `[T, H, W, 3]` RGB, fps of the returned frames).
  """
  with _open(path) as container:
    if not container.streams.video:
      raise MediaError(path, "no video stream")
    stream = container.streams.video[0]
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    if not rate or float(rate) <= 0:
      raise MediaError(path, "video stream has no frame rate")
    src_fps = float(rate)
    declared = int(stream.frames or 0)
    out = []
    try:
      for frame in container.decode(stream):
        out.append(frame.to_ndarray(format="rgb24"))
    except av.error.FFmpegError as e:
      raise MediaError(path, f"truncated or corrupt video: decoding failed after {len(out)} "
                             f"frames ({e})") from e
  if not out:
    raise MediaError(path, "truncated or empty video: no frame could be decoded")
  if declared and len(out) < declared - 1:
    raise MediaError(path, f"truncated video: decoded {len(out)} of {declared} declared frames")
  frames = np.stack(out)
  if target_fps is None or abs(target_fps - src_fps) < 1e-3:
    return frames, src_fps
  idx = resample_indices(len(frames), src_fps, target_fps)
  if not len(idx):
    raise MediaError(path, f"video too short ({len(frames)} frames at {src_fps:g} fps) for one "
                           f"frame at {target_fps:g} fps")
  return frames[idx], float(target_fps)


def load_audio(path: str, sample_rate: int = SAMPLE_RATE,
               required_rate: Optional[int] = None) -> np.ndarray:
  """Decodes the first audio stream (wav, m4a, mp4, ...) as mono float32 `[N]` at `sample_rate`.

  Args:
    path: audio or video file.
    sample_rate: output rate in Hz (librosa soxr resampling when the source differs).
    required_rate: when set, a source at any other rate raises `MediaError`.
  """
  with _open(path) as container:
    if not container.streams.audio:
      raise MediaError(path, "no audio stream")
    stream = container.streams.audio[0]
    src_rate = int(stream.rate or stream.sample_rate or 0)
    if required_rate is not None and src_rate != required_rate:
      raise MediaError(path, f"wrong sample rate {src_rate} Hz, {required_rate} Hz required")
    resampler = av.AudioResampler(format="flt", layout="mono", rate=src_rate)
    chunks = []
    try:
      for frame in container.decode(stream):
        for rf in resampler.resample(frame):
          chunks.append(rf.to_ndarray().reshape(-1))
      for rf in resampler.resample(None):
        chunks.append(rf.to_ndarray().reshape(-1))
    except av.error.FFmpegError as e:
      raise MediaError(path, f"truncated or corrupt audio ({e})") from e
  wav = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros((0,), np.float32)
  if not len(wav):
    raise MediaError(path, "empty audio: no sample could be decoded")
  if src_rate != sample_rate:
    wav = librosa.resample(wav, orig_sr=src_rate, target_sr=sample_rate).astype(np.float32)
  return wav
