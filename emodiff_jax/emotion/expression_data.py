"""Expression trajectories for training the expression GAN (`models/expression_gan.py`).

Two sources, one result (`ExpressionData`: trajectories `[N, T, D]`, emotion and level labels, per-frame
audio loudness `[N, T, 1]`):

- `synthetic_trajectories`: straight from the synthetic world's trajectory generator, without rendering
  frames; each trajectory is the ground-truth expression of the world's clip of the same spec and seed
  (`synth.world.generate_clip`), and the loudness is measured from that clip's waveform.
- `record_trajectories`: windows of `T` frames cut from ArrayRecord records (`input.records.RecordReader`,
  or any sequence of records with `expression`, `emotion`, `level`, `audio`).
"""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from emodiff_jax.synth.audio import FPS, SAMPLE_RATE, envelope_from_audio, speech_like_audio
from emodiff_jax.synth.expression import EMOTIONS, EXPRESSION_DIM
from emodiff_jax.synth.trajectory import expression_trajectory
from emodiff_jax.synth.world import list_clips

SAMPLES_PER_FRAME = round(SAMPLE_RATE / FPS)  # 640, as in `input.records`.


@dataclasses.dataclass(frozen=True)
class ExpressionData:
  """`expression [N, T, D]` float32, `emotion [N]` int32 (index in `EMOTIONS`), `level [N]` int32,
  `audio [N, T, 1]` float32 loudness per frame in [0, 1]."""

  expression: np.ndarray
  emotion: np.ndarray
  level: np.ndarray
  audio: np.ndarray

  def __len__(self) -> int:
    return len(self.expression)

  def batch(self, index: np.ndarray) -> dict[str, np.ndarray]:
    """The GAN step's batch for rows `index`: `expression`, `emotion`, `level`, `audio`."""
    return {f.name: getattr(self, f.name)[index] for f in dataclasses.fields(self)}

  def sampling_weights(self, balance_emotions: bool) -> np.ndarray | None:
    """Row probabilities `[N]` that give every emotion present the same share of batches (MEAD's neutral,
    one level, as often as an emotion's three), or None (rows uniform) when `balance_emotions` is off."""
    if not balance_emotions:
      return None
    _, inverse, counts = np.unique(self.emotion, return_inverse=True, return_counts=True)
    p = 1.0 / counts[inverse]
    return p / p.sum()

  def where(self, mask: np.ndarray) -> ExpressionData:
    """The rows where `mask [N]` holds."""
    return ExpressionData(**self.batch(np.flatnonzero(mask)))


def synthetic_trajectories(split: str = "train", clips_per_condition: int = 4, num_frames: int = 32,
                           seed: int = 0, partitions: Sequence[str] = ("mead_like",),
                           expression_dim: int = EXPRESSION_DIM) -> ExpressionData:
  """Every clip of `list_clips(split, partition, clips_per_condition)` for each partition, deterministic
  for `seed` (same trajectories as `generate_clip(spec, num_frames, seed=seed).expression`)."""
  expression, emotion, level, audio = [], [], [], []
  for partition in partitions:
    for spec in list_clips(split, partition, clips_per_condition):
      rng = np.random.default_rng([seed, zlib.crc32(spec.clip_id.encode())])  # As `generate_clip` seeds.
      wave, envelope = speech_like_audio(rng, num_frames)
      expression.append(expression_trajectory(spec.emotion, spec.level, envelope, rng, expression_dim))
      emotion.append(EMOTIONS.index(spec.emotion))
      level.append(spec.level)
      audio.append(envelope_from_audio(wave, num_frames)[:, None])
  return ExpressionData(np.stack(expression), np.asarray(emotion, np.int32), np.asarray(level, np.int32),
                        np.stack(audio).astype(np.float32))


def record_trajectories(records: Iterable[Mapping], num_frames: int) -> ExpressionData:
  """Non-overlapping `num_frames` windows of each record's `expression [T, D]` with its `emotion`, `level`
  and the loudness of its int16 `audio [T * 640]`; records with `has_expression` false are skipped."""
  expression, emotion, level, audio = [], [], [], []
  for record in records:
    if not record.get("has_expression", True):
      continue
    expr = np.asarray(record["expression"], np.float32)
    wave = np.asarray(record["audio"], np.float32) / 32768.0
    for start in range(0, len(expr) - num_frames + 1, num_frames):
      expression.append(expr[start:start + num_frames])
      emotion.append(int(record["emotion"]))
      level.append(int(record["level"]))
      window = wave[start * SAMPLES_PER_FRAME:(start + num_frames) * SAMPLES_PER_FRAME]
      audio.append(envelope_from_audio(window, num_frames)[:, None])
  if not expression:
    raise ValueError(f"no record holds {num_frames} frames of expression codes")
  return ExpressionData(np.stack(expression), np.asarray(emotion, np.int32), np.asarray(level, np.int32),
                        np.stack(audio).astype(np.float32))
