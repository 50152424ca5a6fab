"""Identity preservation: how much generated frames still look like the reference portrait.

- `identity_similarity`: mean cosine similarity between the features of the reference and of each
  generated frame, for any `feature_fn` `frames [N, H, W, 3] -> [N, D]` (a face-recognition embedding on
  real faces, e.g. ArcFace, as talking-head papers report as CSIM).
- For the synthetic world (`synth.render`, faces centred in a fixed camera):
  `synthetic_face_features` (the face region's pixels, block-averaged to 16x16 and centred per image, so
  the cosine is a correlation of face appearance), and `attribute_colour_distance` (RGB distance of the
  median colours of skin, hair and background patches, the attributes `synth.identity.Identity` draws per
  identity and expressions barely move).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from emodiff_jax.synth.render import ZOOM

FeatureFn = Callable[[np.ndarray], np.ndarray]

# Regions in the renderer's world coordinates (x right, y down; the frame shows [-1, 1] / render.ZOOM):
# (x0, x1, y0, y1).
FACE_BOX = (-0.65, 0.65, -0.7, 0.95)
ATTRIBUTE_PATCHES = {
    "skin": ((-0.44, -0.34, 0.18, 0.28), (0.34, 0.44, 0.18, 0.28)),  # sides of the face between eye and jaw
    "hair": ((-0.08, 0.08, -0.6, -0.54),),  # above the fringe line on every face shape
    "background": ((-0.86, -0.76, -0.86, -0.76), (0.76, 0.86, -0.86, -0.76)),  # top corners
}
FEATURE_GRID = 16


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """Cosine similarity of feature rows `[..., D]` -> `[...]`."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  denom = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
  return (a * b).sum(-1) / np.maximum(denom, 1e-12)


def identity_similarity(reference: np.ndarray, generated: np.ndarray, feature_fn: FeatureFn) -> np.ndarray:
  """Mean cosine similarity of each clip's frames to its reference: `reference [B, H, W, 3]`,
  `generated [B, T, H, W, 3]` -> `[B]`."""
  reference, generated = np.asarray(reference), np.asarray(generated)
  if generated.ndim != 5 or reference.shape[0] != generated.shape[0]:
    raise ValueError(f"expected reference [B, H, W, 3] and generated [B, T, H, W, 3], got {reference.shape}, "
                     f"{generated.shape}")
  b, t = generated.shape[:2]
  ref = np.asarray(feature_fn(reference))
  gen = np.asarray(feature_fn(generated.reshape(b * t, *generated.shape[2:]))).reshape(b, t, -1)
  return cosine_similarity(ref[:, None], gen).mean(-1)


def _crop(frames: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
  """Pixels of `frames [N, H, W, C]` whose centres lie in `box` (renderer world coordinates)."""
  h, w = frames.shape[1:3]
  x0, x1, y0, y1 = (v * ZOOM for v in box)
  cols = slice(int(np.ceil((x0 + 1) * w / 2 - 0.5)), int(np.floor((x1 + 1) * w / 2 - 0.5)) + 1)
  rows = slice(int(np.ceil((y0 + 1) * h / 2 - 0.5)), int(np.floor((y1 + 1) * h / 2 - 0.5)) + 1)
  return frames[:, rows, cols]


def synthetic_face_features(frames: np.ndarray) -> np.ndarray:
  """Synthetic-world face features: `frames [N, H, W, 3]` uint8 -> `[N, 16 * 16 * 3]`, the face box
  block-averaged to a 16x16 grid, minus each image's mean."""
  face = _crop(np.asarray(frames, np.float64) / 255.0, FACE_BOX)
  n, h, w, c = face.shape
  if min(h, w) < FEATURE_GRID:
    raise ValueError(f"frames {frames.shape[1:3]} leave a face box of {h}x{w} < {FEATURE_GRID} pixels")
  rows = np.array_split(np.arange(h), FEATURE_GRID)
  cols = np.array_split(np.arange(w), FEATURE_GRID)
  grid = np.stack([np.stack([face[:, r][:, :, k].mean((1, 2)) for k in cols], 1) for r in rows], 1)
  flat = grid.reshape(n, -1)
  return flat - flat.mean(-1, keepdims=True)


def attribute_colours(frames: np.ndarray) -> dict[str, np.ndarray]:
  """Median RGB in [0, 1] of each attribute patch: `frames [N, H, W, 3]` uint8 -> name -> `[N, 3]`."""
  frames = np.asarray(frames, np.float64) / 255.0
  return {name: np.median(np.concatenate([_crop(frames, box).reshape(len(frames), -1, 3) for box in boxes], 1), 1)
          for name, boxes in ATTRIBUTE_PATCHES.items()}


def attribute_colour_distance(reference: np.ndarray, generated: np.ndarray) -> np.ndarray:
  """Mean over skin, hair and background of the RGB distance between each generated frame and its
  reference: `reference [B, H, W, 3]`, `generated [B, T, H, W, 3]` -> `[B]` (0 = same colours; the RGB
  cube's diagonal is sqrt(3))."""
  reference, generated = np.asarray(reference), np.asarray(generated)
  b, t = generated.shape[:2]
  ref = attribute_colours(reference)
  gen = attribute_colours(generated.reshape(b * t, *generated.shape[2:]))
  dists = [np.linalg.norm(gen[k].reshape(b, t, 3) - ref[k][:, None], axis=-1) for k in ATTRIBUTE_PATCHES]
  return np.mean(dists, axis=0).mean(-1)
