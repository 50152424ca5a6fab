"""Identities of the synthetic world: face shape, colours, hair, eyes, background.

Two partitions mirror the paper's data: 'hdtf_like' (many identities, neutral speech only) and
'mead_like' (few identities, all 8 emotions at 3 levels). Within each, the last 20% of identities are
held out as the `test` split.
"""

from __future__ import annotations

import dataclasses
import zlib

import numpy as np

PARTITION_SIZES = {"hdtf_like": 200, "mead_like": 10}
TEST_FRACTION = 0.2
SPLITS = ("train", "test")


@dataclasses.dataclass(frozen=True)
class Identity:
  """Appearance parameters (coordinates in the renderer's world frame, which the camera shows as [-1, 1] /
  `render.ZOOM`; colours RGB in [0, 1])."""

  id: str
  face_width: float
  face_height: float
  chin: float
  skin: tuple[float, float, float]
  hair: tuple[float, float, float]
  hair_volume: float
  eye_spacing: float
  eye_size: float
  mouth_width: float
  background: tuple[float, float, float]
  pattern: str  # 'stripes', 'checker' or 'gradient'
  pattern_freq: float
  pattern_angle: float


def _seed(*parts: object) -> int:
  return zlib.crc32("/".join(map(str, parts)).encode())


def make_identity(partition: str, index: int) -> Identity:
  """The deterministic identity `index` of `partition`."""
  if partition not in PARTITION_SIZES:
    raise ValueError(f"unknown partition {partition!r}; expected one of {sorted(PARTITION_SIZES)}")
  rng = np.random.default_rng(_seed("identity", partition, index))
  u = rng.uniform
  tone = u(0.25, 0.95)
  skin = (min(1.0, tone + 0.12), tone * u(0.7, 0.85), tone * u(0.55, 0.7))
  return Identity(
      id=f"{partition}_{index:04d}", face_width=u(0.48, 0.6), face_height=u(0.62, 0.74), chin=u(0.0, 0.3),
      skin=skin, hair=tuple(u(0.02, 0.6, 3) * u(0.3, 1.0)), hair_volume=u(0.05, 0.2),
      eye_spacing=u(0.17, 0.24), eye_size=u(0.05, 0.075), mouth_width=u(0.14, 0.2),
      background=tuple(u(0.1, 0.9, 3)), pattern=("stripes", "checker", "gradient")[rng.integers(3)],
      pattern_freq=u(3.0, 8.0), pattern_angle=u(0.0, np.pi))


def identity_indices(partition: str, split: str) -> range:
  """Indices of the identities of `partition` in `split` ('train' or 'test', by identity)."""
  if split not in SPLITS:
    raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
  n = PARTITION_SIZES[partition]
  n_test = max(1, round(n * TEST_FRACTION))
  return range(n - n_test) if split == "train" else range(n - n_test, n)
