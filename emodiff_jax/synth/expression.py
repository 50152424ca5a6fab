"""The synthetic world's linear expression space: named coefficients, emotions as directions, levels.

Mirrors the property of FLAME that EMOdiffhead relies on (paper Fig. 3): expressions are linear, so an
emotion is a direction `d_e` and intensity scales it. Vectors are padded with zeros to the configured
size (50 by default, like FLAME's expression code).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

EMOTIONS = ("neutral", "angry", "contempt", "disgusted", "fear", "happy", "sad", "surprised")  # MEAD's 8.
LEVELS = (1, 2, 3)
EXPRESSION_DIM = 50

COEFFICIENTS = (
    "jaw_open", "lip_corner_pull", "lip_corner_depress", "lip_stretch", "pucker", "lip_press", "mouth_asym",
    "upper_lip_raise", "brow_inner_raise", "brow_outer_raise", "brow_lower", "upper_lid_raise", "eye_close",
    "cheek_raise", "nose_wrinkle", "head_yaw", "head_pitch", "head_roll",
)
INDEX = {name: i for i, name in enumerate(COEFFICIENTS)}
POSE_INDICES = tuple(INDEX[name] for name in ("head_yaw", "head_pitch", "head_roll"))  # No emotion moves these.

# FACS-like prototypes (Ekman & Friesen action units, simplified to our coefficients).
EMOTION_COEFFS: dict[str, dict[str, float]] = {
    "neutral": {},
    "angry": {"brow_lower": 1.0, "lip_press": 0.8, "upper_lid_raise": 0.4, "nose_wrinkle": 0.2},
    "contempt": {"mouth_asym": 1.0, "lip_press": 0.3, "brow_lower": 0.2},
    "disgusted": {"nose_wrinkle": 1.0, "upper_lip_raise": 0.9, "brow_lower": 0.5, "lip_corner_depress": 0.3},
    "fear": {"brow_inner_raise": 1.0, "brow_outer_raise": 0.5, "upper_lid_raise": 0.9, "lip_stretch": 0.8},
    "happy": {"lip_corner_pull": 1.0, "cheek_raise": 0.9, "eye_close": 0.25},
    "sad": {"brow_inner_raise": 0.9, "lip_corner_depress": 1.0, "eye_close": 0.3, "pucker": 0.2},
    "surprised": {"brow_inner_raise": 0.8, "brow_outer_raise": 1.0, "upper_lid_raise": 1.0, "jaw_open": 0.5},
}
LEVEL_SCALE = {0: 0.0, 1: 0.4, 2: 0.7, 3: 1.0}


def check_emotion(emotion: str) -> int:
  """Index of `emotion` in `EMOTIONS`; a ValueError naming the valid ones otherwise."""
  if emotion not in EMOTIONS:
    raise ValueError(f"unknown emotion {emotion!r}; expected one of {', '.join(EMOTIONS)}")
  return EMOTIONS.index(emotion)


def expression_vector(coeffs: Mapping[str, float], dim: int = EXPRESSION_DIM) -> np.ndarray:
  """Named coefficients -> `[dim]` float32 vector (unnamed entries zero)."""
  if dim < len(COEFFICIENTS):
    raise ValueError(f"expression dim {dim} < {len(COEFFICIENTS)} named coefficients")
  v = np.zeros(dim, np.float32)
  for name, value in coeffs.items():
    if name not in INDEX:
      raise ValueError(f"unknown expression coefficient {name!r}; expected one of {', '.join(COEFFICIENTS)}")
    v[INDEX[name]] = value
  return v


def emotion_direction(emotion: str, dim: int = EXPRESSION_DIM) -> np.ndarray:
  """`d_e`, the expression offset of `emotion` at full intensity (zeros for neutral), `[dim]`."""
  check_emotion(emotion)
  return expression_vector(EMOTION_COEFFS[emotion], dim)


def level_scale(level: int) -> float:
  """Intensity of a MEAD level (1 weak, 2 medium, 3 strong; 0 = no emotion)."""
  if level not in LEVEL_SCALE:
    raise ValueError(f"unknown level {level!r}; expected one of {sorted(LEVEL_SCALE)}")
  return LEVEL_SCALE[level]
