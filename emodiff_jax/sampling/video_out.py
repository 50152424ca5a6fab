"""Video output of the inference CLI: resumable segments, the final mp4 with its speech, paste-back.

A long render is sampled window by window. `SegmentWriter` stores each finished window as
`<out>.parts/segment_00012.mp4` (atomic, so an existing segment is complete), and a rerun after a crash
skips the windows `has_segment` reports. `finish` joins the segments with the ffmpeg concat demuxer
(https://ffmpeg.org/ffmpeg-formats.html#concat-1, H.264 stream copy), cut to the frames the speech
covers, muxes the speech as AAC, writes `<out>` atomically and removes the parts folder.

`paste_back` puts the generated face crops back into the full portrait with a feathered mask.
`probe_mp4` reads frame count, rate, size and stream durations with ffprobe.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import tempfile

import av
import cv2
import numpy as np

from emodiff_jax.atomic_io import write_bytes
from emodiff_jax.input import media
from emodiff_jax.input.portrait import Portrait

_SEGMENT = re.compile(r"segment_(\d{5})\.mp4")
_TAIL = "tail.mp4"


class SegmentWriter:
  """Numbered mp4 segments of one output video in `<out_path>.parts/`, joined by `finish`.

  `owner` names the render the segments belong to (stored as `<parts>/owner.txt`): a parts folder left by
  another owner (an interrupted render with another checkpoint or settings) is emptied, not resumed.
  """

  def __init__(self, out_path: str, fps: float = 25.0, crf: int = 18, audio_bitrate: str = "96k",
               owner: str = ""):
    self.out_path = os.path.abspath(out_path)
    self.parts_dir = self.out_path + ".parts"
    self.fps = float(fps)
    self.crf = crf
    self.audio_bitrate = audio_bitrate
    owner_file = os.path.join(self.parts_dir, "owner.txt")
    if os.path.isdir(self.parts_dir) and _read_text(owner_file) != owner:
      shutil.rmtree(self.parts_dir)
    if not os.path.isdir(self.parts_dir):
      os.makedirs(self.parts_dir)
      write_bytes(owner_file, owner.encode())

  def segment_path(self, index: int) -> str:
    return os.path.join(self.parts_dir, f"segment_{index:05d}.mp4")

  def has_segment(self, index: int) -> bool:
    """Whether segment `index` was written (writes are atomic, so it is complete)."""
    return os.path.isfile(self.segment_path(index))

  def write_segment(self, index: int, frames: np.ndarray) -> None:
    """Stores one window's frames, uint8 `[T, H, W, 3]`, as segment `index` (no audio)."""
    media.write_video(self.segment_path(index), frames, self.fps, crf=self.crf)

  def _segments(self) -> list[str]:
    """Segment files in index order; `MediaError` if an index below the highest is missing."""
    found = sorted(int(m.group(1)) for m in map(_SEGMENT.fullmatch, os.listdir(self.parts_dir)) if m)
    if not found:
      raise media.MediaError(self.parts_dir, "no segments written")
    missing = sorted(set(range(found[-1] + 1)) - set(found))
    if missing:
      raise media.MediaError(self.parts_dir, f"missing segments {missing}")
    return [self.segment_path(i) for i in found]

  def finish(self, audio: np.ndarray, sample_rate: int = media.SAMPLE_RATE) -> None:
    """Writes `out_path`: the segments cut to `ceil(audio_seconds * fps)` frames, with `audio`
    (float32 `[N]` mono) as AAC, so both streams last as long as the speech (to within a frame).

    A cut inside a segment re-encodes that segment's kept frames (a one-window generation loss);
    whole segments past the end are left out. Raises `MediaError` when the segments hold fewer
    frames than the audio needs, or differ in size or rate.
    """
    audio = np.clip(np.asarray(audio, np.float32).reshape(-1), -1.0, 1.0)
    if not len(audio):
      raise media.MediaError(self.out_path, "empty audio")
    needed = math.ceil(len(audio) / sample_rate * self.fps - 1e-6)
    segments = self._segments()
    files, total, first_size = [], 0, _stream_info(segments[0])[1]
    for path in segments:
      if total == needed:
        break
      count, size, rate = _stream_info(path)
      if size != first_size or abs(rate - self.fps) > 1e-3:
        raise media.MediaError(path, f"segment is {size[0]}x{size[1]} at {rate:g} fps, unlike segment 0 "
                                     f"or the writer's {self.fps:g} fps")
      if total + count > needed:
        tail = os.path.join(self.parts_dir, _TAIL)
        media.write_video(tail, media.read_video(path)[0][:needed - total], self.fps, crf=self.crf)
        files.append(tail)
        total = needed
        break
      files.append(path)
      total += count
    if total < needed:
      raise media.MediaError(self.parts_dir, f"segments hold {total} frames, the audio "
                                             f"({len(audio) / sample_rate:.3f} s) needs {needed} at {self.fps:g} fps")
    _concat_with_audio(files, audio, sample_rate, self.out_path, self.audio_bitrate)
    shutil.rmtree(self.parts_dir)


def _read_text(path: str) -> str | None:
  """The file's text, or None when it does not exist."""
  if not os.path.isfile(path):
    return None
  with open(path) as f:
    return f.read()


def _concat_with_audio(files: list[str], audio: np.ndarray, sample_rate: int, out_path: str,
                       audio_bitrate: str) -> None:
  """Joins mp4 `files` (H.264 stream copy, concat demuxer) and muxes `audio` float32 `[N]` as AAC into
  `out_path`, atomically (temp file in the same folder, then `os.replace`)."""
  listing = os.path.join(os.path.dirname(files[0]), "concat.txt")
  with open(listing, "w") as f:
    f.write("ffconcat version 1.0\n" + "".join(f"file '{os.path.basename(p)}'\n" for p in files))
  fd, tmp = tempfile.mkstemp(suffix=".mp4", prefix=".tmp_", dir=os.path.dirname(out_path))
  os.close(fd)
  try:
    cmd = ["ffmpeg", "-v", "error", "-y", "-f", "concat", "-safe", "0", "-i", listing,
           "-f", "f32le", "-ar", str(int(sample_rate)), "-ac", "1", "-i", "pipe:0",
           "-map", "0:v:0", "-map", "1:a:0", "-c:v", "copy", "-c:a", "aac", "-b:a", audio_bitrate,
           "-movflags", "+faststart", "-f", "mp4", tmp]
    run = subprocess.run(cmd, input=audio.tobytes(), capture_output=True)
    if run.returncode:
      raise media.MediaError(out_path, f"ffmpeg concat failed: {run.stderr.decode(errors='replace')[-2000:]}")
    os.replace(tmp, out_path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def _stream_info(path: str) -> tuple[int, tuple[int, int], float]:
  """(frame count, (width, height), fps) of an mp4's video stream, from its packets (no decoding)."""
  with av.open(path) as c:
    v = c.streams.video[0]
    count = sum(1 for p in c.demux(v) if p.size)
    return count, (v.width, v.height), float(v.average_rate)


def _feather(length: int, ramp: int, soft_start: bool, soft_end: bool) -> np.ndarray:
  """Weights `[length]`: 1 inside, a smoothstep from 0 over `ramp` px at each soft end."""
  pos = np.arange(length, dtype=np.float32) + 0.5
  w = np.ones(length, np.float32)
  if soft_start:
    w = np.minimum(w, pos / ramp)
  if soft_end:
    w = np.minimum(w, (length - pos) / ramp)
  w = np.clip(w, 0.0, 1.0)
  return w * w * (3.0 - 2.0 * w)


def paste_back(portrait: Portrait, frames: np.ndarray, feather: float = 0.12) -> np.ndarray:
  """Generated crops uint8 `[T, r, r, 3]` blended into the portrait's full image: uint8 `[T, H, W, 3]`.

  Each crop is resized to the box and blended with a mask that fades over `feather` of the box side
  towards the box edges inside the image (edges on the image border are not faded), so no seam shows.
  """
  frames = np.asarray(frames)
  if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
    raise ValueError(f"paste_back: frames must be uint8 [T, r, r, 3], got {frames.dtype} {frames.shape}")
  x0, y0, x1, y1 = portrait.box
  h, w, _ = portrait.image.shape
  bw, bh = x1 - x0, y1 - y0
  interp = cv2.INTER_AREA if frames.shape[1] > max(bw, bh) else cv2.INTER_CUBIC
  crops = np.stack([cv2.resize(f, (bw, bh), interpolation=interp) for f in frames]).astype(np.float32)
  ramp = max(1.0, feather * min(bw, bh))
  mask = (_feather(bh, ramp, y0 > 0, y1 < h)[:, None] * _feather(bw, ramp, x0 > 0, x1 < w)[None, :])[..., None]
  out = np.broadcast_to(portrait.image, (len(frames), h, w, 3)).copy()
  region = out[:, y0:y1, x0:x1].astype(np.float32)
  out[:, y0:y1, x0:x1] = np.clip(mask * crops + (1.0 - mask) * region + 0.5, 0, 255).astype(np.uint8)
  return out


def probe_mp4(path: str) -> dict:
  """ffprobe's view of an mp4: `num_frames` (video packets), `fps` (r_frame_rate), `video_seconds`, `audio_seconds`
  (0.0 without an audio stream), `width`, `height`."""
  if not os.path.isfile(path):
    raise media.MediaError(path, "no such file")
  run = subprocess.run(["ffprobe", "-v", "error", "-count_packets", "-of", "json", "-show_entries",
                        "stream=codec_type,width,height,r_frame_rate,nb_read_packets,duration", path],
                       capture_output=True, text=True)
  if run.returncode:
    raise media.MediaError(path, f"ffprobe failed: {run.stderr.strip()[-2000:]}")
  streams = json.loads(run.stdout).get("streams", [])
  video = next((s for s in streams if s.get("codec_type") == "video"), None)
  if video is None:
    raise media.MediaError(path, "no video stream")
  audio = next((s for s in streams if s.get("codec_type") == "audio"), {})
  num, den = (int(x) for x in video["r_frame_rate"].split("/"))  # the stream's frame rate (avg_frame_rate
  # is skewed by the B-frame delay of short clips)
  fps = num / den if den else 0.0
  frames = int(video.get("nb_read_packets", 0))
  return dict(num_frames=frames, fps=fps,
              video_seconds=float(video.get("duration", frames / fps if fps else 0.0)),
              audio_seconds=float(audio.get("duration", 0.0)), width=int(video["width"]),
              height=int(video["height"]))
