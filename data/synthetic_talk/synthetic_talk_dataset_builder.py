"""Synthetic talking heads (`emodiff_jax.synth.world`) as clip records, in ArrayRecord.

No download: every clip is rendered procedurally and deterministically (seeded by its index) in the
records schema (`emodiff_jax.input.records`), with exact expression codes (`has_expression=True`).
Each split mixes the world's two partitions: 'mead_like' (8 emotions x 3 levels) and 'hdtf_like'
(neutral, level 0); the `source` feature and the identity prefix say which. `test` holds the
world's held-out identities.

Configs: `64px` (default) and `256px` at the world's default size; `tiny` (32 px, 16 frames, one clip
per condition) builds in seconds for tests.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import tensorflow_datasets as tfds

from emodiff_jax.input import clip_builder
from emodiff_jax.input import records
from emodiff_jax.input import world_source
from emodiff_jax.synth import world

PARTITIONS = ("mead_like", "hdtf_like")


@dataclasses.dataclass(eq=False)
class SyntheticConfig(tfds.core.BuilderConfig):
  """Size of the rendered dataset.

  Attributes:
    resolution: frame side in pixels.
    num_frames: frames per clip (25 fps).
    clips_per_condition: clips per (identity, emotion, level); None keeps the world's default.
    expression_dim: D of the expression codes.
    image_format: 'png' (lossless) or 'jpeg'.
    seed: base seed; clip i of a split/partition renders with `seed + i`.
  """
  resolution: int = 64
  num_frames: int = 48
  clips_per_condition: Optional[int] = None
  expression_dim: int = records.EXPRESSION_DIM
  image_format: str = "png"
  seed: int = 0


class Builder(clip_builder.ClipDatasetBuilder):
  """Procedural talking heads with emotion labels and exact expression codes."""

  BUILDER_CONFIGS = [
      SyntheticConfig(name="64px", description="64x64 clips", resolution=64),
      SyntheticConfig(name="256px", description="256x256 clips", resolution=256),
      SyntheticConfig(name="tiny", description="32x32, 16 frames, 1 clip per condition",
                      resolution=32, num_frames=16, clips_per_condition=1),
  ]

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    del dl_manager
    return {"train": self._generate_examples("train"), "test": self._generate_examples("test")}

  def _generate_examples(self, split: str):
    cfg = self.builder_config
    kwargs = {} if cfg.clips_per_condition is None else {
        "clips_per_condition": cfg.clips_per_condition}
    stats = self.skip_stats.setdefault(split, clip_builder.SkipStats())
    for partition in PARTITIONS:
      for i, spec in enumerate(world.list_clips(split, partition, **kwargs)):
        stats.kept += 1
        yield spec.clip_id, world_source.world_record(
            spec, seed=cfg.seed + i, num_frames=cfg.num_frames, resolution=cfg.resolution,
            expression_dim=cfg.expression_dim, image_format=cfg.image_format)
