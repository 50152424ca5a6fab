"""The synthetic emotional talking-head world: clips of frames, speech-like audio and ground-truth
expression vectors, deterministic for (spec, seed).

    for spec in list_clips("train", "mead_like"):
      clip = generate_clip(spec, num_frames=50, resolution=64)

Partitions (`identity.PARTITION_SIZES`): 'mead_like' identities speak in all 8 emotions; neutral has one
level (1), like MEAD, the other 7 emotions levels 1-3. 'hdtf_like' identities speak neutrally (level 0).
"""

from __future__ import annotations

import dataclasses
import functools
import zlib

import numpy as np

from emodiff_jax.synth.audio import FPS, SAMPLE_RATE, speech_like_audio
from emodiff_jax.synth.expression import EMOTIONS, EXPRESSION_DIM, LEVELS, check_emotion
from emodiff_jax.synth.identity import PARTITION_SIZES, identity_indices, make_identity
from emodiff_jax.synth.render import render_frames
from emodiff_jax.synth.trajectory import expression_trajectory


@dataclasses.dataclass(frozen=True)
class ClipSpec:
  """Which clip: split ('train'/'test', by identity), partition, identity, emotion, level, take."""

  split: str
  partition: str
  identity: int
  emotion: str
  level: int
  index: int = 0

  @property
  def clip_id(self) -> str:
    return f"{self.partition}_{self.identity:04d}_{self.emotion}_l{self.level}_{self.index:02d}"


@dataclasses.dataclass(frozen=True)
class Clip:
  """One rendered clip: `frames [T, H, W, 3]` uint8, `audio [T * 640]` float32 at 16 kHz,
  `expression [T, D]` float32 (ground truth, as DECA codes would be for real data)."""

  frames: np.ndarray
  audio: np.ndarray
  expression: np.ndarray
  emotion: str
  level: int
  identity_id: str
  clip_id: str
  split: str
  sample_rate: int = SAMPLE_RATE
  fps: float = FPS


def list_clips(split: str, partition: str, clips_per_condition: int = 1) -> list[ClipSpec]:
  """All clip specs of a split and partition."""
  if partition not in PARTITION_SIZES:
    raise ValueError(f"unknown partition {partition!r}; expected one of {sorted(PARTITION_SIZES)}")
  if partition == "hdtf_like":
    conditions = [("neutral", 0)]
  else:
    conditions = [("neutral", 1)] + [(e, lv) for e in EMOTIONS[1:] for lv in LEVELS]
  return [ClipSpec(split, partition, i, e, lv, k) for i in identity_indices(partition, split)
          for e, lv in conditions for k in range(clips_per_condition)]


@functools.lru_cache(maxsize=512)
def neutral_portrait(partition: str, identity: int, resolution: int = 64) -> np.ndarray:
  """The identity at the zero expression (frontal, mouth closed, no emotion): uint8 `[H, W, 3]`, read-only
  (cached: every record of the identity carries it). What a user's portrait shows, and so the reference
  image of training with `data.reference='neutral'`."""
  face = render_frames(make_identity(partition, identity), np.zeros((1, EXPRESSION_DIM), np.float32),
                       resolution)[0]
  face.setflags(write=False)
  return face


def generate_clip(spec: ClipSpec, num_frames: int = 50, resolution: int = 64,
                  expression_dim: int = EXPRESSION_DIM, seed: int = 0) -> Clip:
  """Renders `spec` deterministically for `seed`."""
  check_emotion(spec.emotion)
  rng = np.random.default_rng([seed, zlib.crc32(spec.clip_id.encode())])
  identity = make_identity(spec.partition, spec.identity)
  audio, envelope = speech_like_audio(rng, num_frames)
  expression = expression_trajectory(spec.emotion, spec.level, envelope, rng, expression_dim)
  return Clip(frames=render_frames(identity, expression, resolution), audio=audio, expression=expression,
              emotion=spec.emotion, level=spec.level, identity_id=identity.id, clip_id=spec.clip_id,
              split=spec.split)
