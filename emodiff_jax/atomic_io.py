"""Atomic file writes: a temporary file in the destination's folder, then `os.replace`, so a crash never
leaves a half-written file and an existing one stays whole until the new one is complete."""

from __future__ import annotations

import io
import os
import tempfile

import numpy as np
from PIL import Image


def write_bytes(path: str, data: bytes) -> None:
  """Writes `data` to `path` atomically (the temporary file is removed if anything fails)."""
  fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), prefix=".tmp-")
  try:
    with os.fdopen(fd, "wb") as f:
      f.write(data)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def write_png(path: str, image: np.ndarray) -> None:
  """Writes uint8 `image [H, W, 3]` (or `[H, W]`) to `path` as PNG, atomically."""
  buf = io.BytesIO()
  Image.fromarray(image).save(buf, format="PNG")
  write_bytes(path, buf.getvalue())
