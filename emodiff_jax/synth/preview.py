"""Look at the synthetic world: a labelled contact sheet (8 emotions x 3 levels for one identity) and
mp4s with their audio."""

from __future__ import annotations

import os

import cv2
import numpy as np

from emodiff_jax.atomic_io import write_png
from emodiff_jax.input.media import write_video
from emodiff_jax.synth import world
from emodiff_jax.synth.expression import EMOTIONS, INDEX, LEVELS

CELL = 128  # pixels per sheet cell


def label(img: np.ndarray, text: str) -> np.ndarray:
  """`img` uint8 `[H, W, 3]` with `text` written in its top-left corner (a copy)."""
  img = np.array(img, np.uint8)  # a contiguous copy: cv2 draws in place
  cv2.putText(img, text, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
  return img


def contact_sheet(identity: int = 0, resolution: int = 64, num_frames: int = 50, seed: int = 0) -> np.ndarray:
  """`[8 * CELL, 3 * CELL, 3]` uint8: rows the emotions, columns the levels, each a frame at peak
  (the second-half frame with the eyes most open); neutral fills its row with its single level."""
  rows = []
  for emotion in EMOTIONS:
    cells = []
    for level in LEVELS:
      spec = world.ClipSpec("train", "mead_like", identity, emotion, 1 if emotion == "neutral" else level)
      clip = world.generate_clip(spec, num_frames, resolution, seed=seed)
      # The expression is fully on in the second half; show its frame with the eyes most open (no blink).
      half = num_frames // 2
      frame = clip.frames[half + int(np.argmin(clip.expression[half:, INDEX["eye_close"]]))]
      cell = cv2.resize(frame, (CELL, CELL), interpolation=cv2.INTER_NEAREST if resolution < CELL else cv2.INTER_AREA)
      cells.append(label(cell, f"{emotion} L{spec.level}"))
    rows.append(np.concatenate(cells, axis=1))
  return np.concatenate(rows, axis=0)


def write_preview(out_dir: str, identity: int = 0, resolution: int = 64, num_frames: int = 50,
                  emotions: tuple[str, ...] = ("neutral", "happy", "angry", "surprised"), seed: int = 0) -> list[str]:
  """Writes `contact_sheet.png` and one mp4 (with audio) per emotion at level 3; returns the paths."""
  os.makedirs(out_dir, exist_ok=True)
  paths = [os.path.join(out_dir, "contact_sheet.png")]
  write_png(paths[0], contact_sheet(identity, resolution, num_frames, seed))
  for emotion in emotions:
    spec = world.ClipSpec("train", "mead_like", identity, emotion, 1 if emotion == "neutral" else 3)
    clip = world.generate_clip(spec, num_frames, resolution, seed=seed)
    paths.append(os.path.join(out_dir, f"{spec.clip_id}.mp4"))
    write_video(paths[-1], clip.frames, clip.fps, clip.audio, clip.sample_rate)
  return paths
