"""The inference inputs: one portrait photo (face-cropped like the training clips) and one speech track.

* `load_portrait`: any PIL-readable image (EXIF orientation applied, alpha composited on white, grey
  and 16-bit grey made RGB), the largest face found by the detector (OpenCV Haar by default), a square
  crop `expand_ratio` times the face box (as `face_crop.crop_clip` cuts the training clips), resized
  to the model's resolution. The original image and the box are kept for `video_out.paste_back`.
* `load_speech`: `media.load_audio` (any container, mono float32 at 16 kHz) that also rejects silent or
  too-short tracks.

Every failure raises `media.MediaError(path, reason)` naming the file.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Optional

import numpy as np
from PIL import Image, ImageOps

from emodiff_jax.input import media
from emodiff_jax.input.face_crop import FaceDetector, HaarFaceDetector, NoFaceError, clip_face_box, crop_and_resize

# A track quieter than -60 dBFS RMS (speech is typically -30 to -15 dBFS) is silence or hum: the model
# would animate noise, so it is refused rather than rendered.
SILENCE_RMS = 10 ** (-60 / 20)
MIN_SPEECH_SECONDS = 0.2
NO_FACE = "no face found; pass a photo with one clear frontal face or --assume-cropped"


@dataclasses.dataclass(frozen=True, eq=False)
class Portrait:
  """A portrait ready for the model: `crop` uint8 `[r, r, 3]` cut from `image` uint8 `[H, W, 3]`
  (the original, any aspect ratio) at `box` `(x0, y0, x1, y1)` in `image` pixels."""

  crop: np.ndarray
  image: np.ndarray
  box: tuple[int, int, int, int]


def read_image(path: str) -> np.ndarray:
  """Any PIL-readable image as upright uint8 RGB `[H, W, 3]`; `MediaError` naming the file otherwise."""
  if not os.path.isfile(path):
    raise media.MediaError(path, "no such file")
  try:
    with Image.open(path) as img:
      img = ImageOps.exif_transpose(img)
      img.load()
  except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
    raise media.MediaError(path, f"not a readable image ({e})") from e
  if img.mode in ("I", "I;16", "I;16B", "I;16L"):  # 16-bit grey: keep the top 8 bits
    grey = (np.asarray(img).astype(np.int64) >> 8).clip(0, 255).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=-1)
  if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
    rgba = img.convert("RGBA")
    img = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
  return np.asarray(img.convert("RGB"), np.uint8)


def load_portrait(path: str, resolution: int, expand_ratio: float = 1.5,
                  detector: Optional[FaceDetector] = None, assume_cropped: bool = False) -> Portrait:
  """Reads, face-detects and crops a portrait to `[resolution, resolution, 3]`.

  Args:
    path: image file (png, jpg, webp, ...).
    resolution: side of the model's input crop in pixels.
    expand_ratio: crop side over the detected face box side (1.5, as the training clips).
    detector: `frame [H, W, 3] -> (x, y, w, h) [K, 4]`; OpenCV Haar when None. The largest face wins.
    assume_cropped: fallback for an image that is already a model input (a square of exactly
      `resolution` px, e.g. a 64x64 synthetic-world face, which Haar may miss at that size): when no
      face is found it is used whole, with the box covering the image. Any other size still raises.
  """
  image = read_image(path)
  h, w, _ = image.shape
  try:
    box = clip_face_box(image[None], detector or HaarFaceDetector(), num_samples=1, expand_ratio=expand_ratio)
  except NoFaceError:
    if not assume_cropped:
      raise media.MediaError(path, NO_FACE) from None
    if (h, w) != (resolution, resolution):
      raise media.MediaError(path, f"no face found, and --assume-cropped needs a {resolution}x{resolution} "
                                   f"image, got {w}x{h}") from None
    return Portrait(crop=image, image=image, box=(0, 0, w, h))
  return Portrait(crop=crop_and_resize(image[None], box, resolution)[0], image=image, box=box)


def load_speech(path: str, sample_rate: int = media.SAMPLE_RATE) -> np.ndarray:
  """The speech track as mono float32 `[N]` at `sample_rate`; `MediaError` when it is shorter than
  `MIN_SPEECH_SECONDS` or silent (RMS below `SILENCE_RMS`, i.e. -60 dBFS)."""
  wav = media.load_audio(path, sample_rate)
  seconds = len(wav) / sample_rate
  if seconds < MIN_SPEECH_SECONDS:
    raise media.MediaError(path, f"audio too short: {seconds:.3f} s, at least {MIN_SPEECH_SECONDS} s needed")
  rms = float(np.sqrt(np.mean(np.square(wav, dtype=np.float64))))
  if rms < SILENCE_RMS:
    raise media.MediaError(path, f"silent audio: RMS {20 * np.log10(max(rms, 1e-12)):.1f} dBFS, below "
                                 f"the {20 * np.log10(SILENCE_RMS):.0f} dBFS needed for speech")
  return wav
