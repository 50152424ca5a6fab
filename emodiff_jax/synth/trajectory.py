"""Per-frame expression trajectories: emotion (direction x level, with onset), speech (jaw follows the
audio envelope one frame late), blinks and small head motion."""

from __future__ import annotations

import numpy as np

from emodiff_jax.synth.expression import (
  EXPRESSION_DIM,
  INDEX,
  emotion_direction,
  level_scale,
)

JAW_LAG = 1  # frames between the audio envelope and the jaw


def _smooth_walk(rng: np.random.Generator, t: int, scale: float) -> np.ndarray:
  """A slow random drift `[t]` of roughly +-scale."""
  kernel = np.hanning(9) / np.hanning(9).sum()
  walk = np.convolve(rng.standard_normal(t + len(kernel) - 1).cumsum(), kernel, mode="valid")
  return (scale * walk / max(1.0, np.abs(walk).max())).astype(np.float32)


def expression_trajectory(emotion: str, level: int, envelope: np.ndarray, rng: np.random.Generator,
                          dim: int = EXPRESSION_DIM, fps: float = 25.0) -> np.ndarray:
  """`[T, dim]` expression vectors for a clip whose audio envelope is `envelope [T]`."""
  t = len(envelope)
  onset = rng.uniform(0.0, 0.3) * fps
  ramp = np.clip((np.arange(t) - onset) / (0.4 * fps), 0.0, 1.0).astype(np.float32)
  traj = ramp[:, None] * (level_scale(level) * emotion_direction(emotion, dim))[None, :]
  lagged = np.concatenate([np.full(JAW_LAG, envelope[0]), envelope[:-JAW_LAG]]) if t > JAW_LAG else envelope
  traj[:, INDEX["jaw_open"]] += 0.9 * lagged
  traj[:, INDEX["lip_stretch"]] += 0.15 * lagged
  # Blinks: 4-frame pulses every 2-4 s.
  blink = np.zeros(t, np.float32)
  pos = int(rng.uniform(0.5, 2.0) * fps)
  while pos < t:
    blink[pos:pos + 4] = np.array([0.6, 1.0, 1.0, 0.5], np.float32)[: t - pos]
    pos += int(rng.uniform(2.0, 4.0) * fps)
  traj[:, INDEX["eye_close"]] = np.maximum(traj[:, INDEX["eye_close"]], blink)
  for name, scale in (("head_yaw", 0.3), ("head_pitch", 0.2), ("head_roll", 0.2)):
    traj[:, INDEX[name]] += _smooth_walk(rng, t, scale)
  return traj.astype(np.float32)
