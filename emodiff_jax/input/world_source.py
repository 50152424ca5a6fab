"""Clip records rendered on demand from the synthetic world, with no files: a random-access source for
the grain pipeline (`data.sources` entry `synth_world/<partition>`), and the record maker the
`synthetic_talk` TFDS builder writes to ArrayRecord, so both give the same records.
"""

from __future__ import annotations

import collections.abc
from typing import Optional

from emodiff_jax.input import records
from emodiff_jax.synth import world

PREFIX = "synth_world/"


def world_record(spec: world.ClipSpec, *, seed: int, num_frames: int, resolution: int,
                 expression_dim: int = records.EXPRESSION_DIM, image_format: str = "png") -> dict:
  """The record of one synthetic clip, as `records.make_record` builds it (emotion as its name), with the
  identity's zero-expression portrait as its `neutral_reference`."""
  clip = world.generate_clip(spec, num_frames=num_frames, resolution=resolution, expression_dim=expression_dim,
                             seed=seed)
  return records.make_record(
      clip_id=clip.clip_id, identity=f"{spec.partition}/{clip.identity_id}", dataset="synthetic_talk",
      source=spec.partition, emotion=clip.emotion, level=clip.level, frames=clip.frames, audio=clip.audio,
      expression=clip.expression, expression_dim=expression_dim, image_format=image_format,
      neutral_reference=world.neutral_portrait(spec.partition, spec.identity, resolution))


class WorldSource(collections.abc.Sequence):
  """The clips of one split and partition; item i renders clip i with seed `seed + i`, and is the record
  ArrayRecord would give back (emotion as its class index)."""

  def __init__(self, split: str, partition: str, *, num_frames: int = 48, resolution: int = 64,
               clips_per_condition: Optional[int] = None, expression_dim: int = records.EXPRESSION_DIM,
               seed: int = 0):
    kwargs = {} if clips_per_condition is None else {"clips_per_condition": clips_per_condition}
    self.specs = world.list_clips(split, partition, **kwargs)
    self.kwargs = dict(num_frames=num_frames, resolution=resolution, expression_dim=expression_dim)
    self.seed = seed

  def __len__(self) -> int:
    return len(self.specs)

  def __getitem__(self, index):
    if isinstance(index, slice):
      return [self[i] for i in range(*index.indices(len(self)))]
    rec = world_record(self.specs[index], seed=self.seed + index, **self.kwargs)
    rec["emotion"] = records.EMOTIONS.index(rec["emotion"])
    return rec
