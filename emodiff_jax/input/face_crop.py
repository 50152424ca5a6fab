"""One stable face crop per clip: detect on a frame subsample, take the median box, expand, square.

The detector is pluggable: any callable `frame uint8 [H, W, 3] -> int [K, 4]` boxes `(x, y, w, h)`.
`HaarFaceDetector` (OpenCV's frontal-face Haar cascade from `cv2.data.haarcascades`) is the default
for real data.
"""

from __future__ import annotations

import os
from typing import Callable, Optional

import cv2
import numpy as np

FaceDetector = Callable[[np.ndarray], np.ndarray]


class NoFaceError(ValueError):
  """No face was detected in any sampled frame of a clip."""


class HaarFaceDetector:
  """OpenCV Haar cascade face detector; returns `(x, y, w, h)` boxes `[K, 4]`."""

  def __init__(self, cascade: str = "haarcascade_frontalface_default.xml", scale_factor: float = 1.1,
               min_neighbors: int = 5, min_size_frac: float = 0.1):
    path = cascade if os.path.isabs(cascade) else os.path.join(cv2.data.haarcascades, cascade)
    self._cascade = cv2.CascadeClassifier(path)
    if self._cascade.empty():
      raise FileNotFoundError(f"{path}: could not load the Haar cascade")
    self.scale_factor = scale_factor
    self.min_neighbors = min_neighbors
    self.min_size_frac = min_size_frac

  def __call__(self, frame: np.ndarray) -> np.ndarray:
    gray = cv2.equalizeHist(cv2.cvtColor(np.asarray(frame, np.uint8), cv2.COLOR_RGB2GRAY))
    side = max(24, int(self.min_size_frac * min(gray.shape)))
    boxes = self._cascade.detectMultiScale(gray, scaleFactor=self.scale_factor,
                                           minNeighbors=self.min_neighbors, minSize=(side, side))
    return np.asarray(boxes, np.int64).reshape(-1, 4)


def clip_face_box(frames: np.ndarray, detector: FaceDetector, num_samples: int = 8,
                  expand_ratio: float = 1.5) -> tuple[int, int, int, int]:
  """The square crop box `(x0, y0, x1, y1)` for a whole clip `[T, H, W, 3]`.

  The largest detection in each of `num_samples` evenly spaced frames gives a box; their median
  (robust to a missed or spurious frame) is expanded by `expand_ratio` around its centre, made
  square, and shifted (then shrunk if needed) to lie inside the frame.
  """
  t, h, w, _ = frames.shape
  boxes = []
  for i in np.unique(np.linspace(0, t - 1, min(num_samples, t)).round().astype(int)):
    found = np.asarray(detector(frames[i])).reshape(-1, 4)
    if len(found):
      boxes.append(found[np.argmax(found[:, 2] * found[:, 3])])
  if not boxes:
    raise NoFaceError(f"no face detected in {min(num_samples, t)} sampled frames")
  x, y, bw, bh = np.median(np.asarray(boxes, np.float64), axis=0)
  cx, cy = x + bw / 2, y + bh / 2
  side = min(max(bw, bh) * expand_ratio, h, w)
  x0 = int(round(np.clip(cx - side / 2, 0, w - side)))
  y0 = int(round(np.clip(cy - side / 2, 0, h - side)))
  side = int(round(side))
  return x0, y0, min(x0 + side, w), min(y0 + side, h)


def crop_and_resize(frames: np.ndarray, box: tuple[int, int, int, int],
                    resolution: int) -> np.ndarray:
  """Crops `[T, H, W, 3]` to `box` and resizes to `[T, resolution, resolution, 3]` (area/cubic)."""
  x0, y0, x1, y1 = box
  crop = frames[:, y0:y1, x0:x1]
  interp = cv2.INTER_AREA if crop.shape[1] >= resolution else cv2.INTER_CUBIC
  return np.stack([cv2.resize(f, (resolution, resolution), interpolation=interp) for f in crop])


def crop_clip(frames: np.ndarray, resolution: int, detector: Optional[FaceDetector] = None,
              expand_ratio: float = 1.5) -> tuple[np.ndarray, tuple[int, int, int, int]]:
  """Detects, crops and resizes a clip; returns (`[T, r, r, 3]` uint8, box). Raises NoFaceError."""
  box = clip_face_box(frames, detector or HaarFaceDetector(), expand_ratio=expand_ratio)
  return crop_and_resize(frames, box, resolution), box
