"""The grain input pipeline: ArrayRecord clip datasets -> per-host batches for stage 1 or stage 2.

    ds = make_dataset(config.data, split="train")     # grain.IterDataset of batches
    it = iter(ds); batch = next(it)
    state = it.get_state(); ...; it.set_state(state)  # resume exactly (saved with checkpoints)

Order: per source, a seeded shuffle repeated over epochs -> example cutting and augmentation
(`random_map`, seeded per element, so the same index always gives the same example) -> weighted mix of
the sources -> this host's slice (`process_index::process_count`) -> batches of
`batch_size / process_count` -> optional worker processes. Every random choice hangs off `seed`, so a
resumed iterator yields exactly the batches an uninterrupted one would. Batches are numpy dicts ready
for `jax.make_array_from_process_local_data`.
"""

from __future__ import annotations

import os
from typing import Any, Optional, Sequence

import grain
import jax
import ml_collections

from emodiff_jax.input.examples import clip_example, image_example
from emodiff_jax.input import world_source
from emodiff_jax.input.records import RecordReader

STAGES = {"image": image_example, "clip": clip_example}


class _MakeExample:
  """Picklable `(record, rng) -> example` for grain's worker processes."""

  def __init__(self, stage: str, cfg: ml_collections.ConfigDict):
    self.make, self.cfg = STAGES[stage], cfg

  def __call__(self, record: Any, rng: Any) -> dict:
    return self.make(record, rng, self.cfg)


def default_config() -> ml_collections.ConfigDict:
  """The `data` section of a training config."""
  c = ml_collections.ConfigDict()
  # Each source: a TFDS name (with builder config, e.g. 'synthetic_talk/64px'), its data_dir, an
  # optional split overriding make_dataset's, and a mixing weight (the paper mixes MEAD and HDTF).
  c.sources = [dict(name="synthetic_talk/64px", data_dir="~/tensorflow_datasets", split="", weight=1.0)]
  c.stage = "clip"  # 'image' (stage 1) or 'clip' (stage 2)
  c.resolution = 64
  c.num_frames = 8
  c.frame_stride = 1
  c.expression_dim = 50  # D of the records' per-frame expression codes (FLAME: 50)
  c.audio_margin = 2  # frames of audio context on each side (the +-2 wav2vec2 window)
  # The reference image: 'clip' (another frame of the same clip) or 'neutral' (the record's neutral face
  # of the speaker; see input/examples.py for why stage 2 on emotional data wants it).
  c.reference = "clip"
  c.batch_size = 8  # global, over all hosts
  c.worker_count = 0
  c.read_threads = 4
  c.seed = 0
  c.augment = dict(hflip=False, scale_jitter=0.05, crop_jitter=0.03, color_jitter=0.05)
  return c


def _ensure_absl_flags() -> None:
  """grain's worker processes read absl flags; parse defaults when no absl app did."""
  from absl import flags

  if not flags.FLAGS.is_parsed():
    flags.FLAGS(["emodiff_jax"], known_only=True)


def _source(s: Any, split: str, cfg: ml_collections.ConfigDict) -> Sequence[Any]:
  """A `data.sources` entry -> random-access records: ArrayRecord through TFDS, or the synthetic world
  rendered on demand (`synth_world/<partition>`, clips of `s.get('clip_frames', 48)` frames)."""
  name, split = s["name"], s.get("split") or split
  if name.startswith(world_source.PREFIX):
    return world_source.WorldSource(split, name[len(world_source.PREFIX):], resolution=cfg.resolution,
                                    num_frames=s.get("clip_frames", 48), expression_dim=cfg.expression_dim)
  return RecordReader(name, split, os.path.expanduser(s["data_dir"]))


def make_dataset(cfg: ml_collections.ConfigDict, *, split: str, sources: Optional[Sequence[Any]] = None,
                 process_index: Optional[int] = None, process_count: Optional[int] = None) -> grain.IterDataset:
  """Batches of this host's share of the global batch, as a resumable `grain.IterDataset`.

  Args:
    cfg: the `data` config section (`default_config()`).
    split: TFDS split of every source whose own `split` is empty or missing.
    sources: random-access record sequences overriding `cfg.sources` (tests, in-memory data); their
      weights still come from `cfg.sources` when the lengths match, else they are mixed equally.
    process_index, process_count: default to `jax.process_index()` / `jax.process_count()`.
  """
  if cfg.stage not in STAGES:
    raise ValueError(f"data.stage must be one of {sorted(STAGES)}, got {cfg.stage!r}")
  index = jax.process_index() if process_index is None else process_index
  count = jax.process_count() if process_count is None else process_count
  if cfg.batch_size % count:
    raise ValueError(f"global batch_size {cfg.batch_size} is not divisible by {count} processes")
  if sources is None:
    sources = [_source(s, split, cfg) for s in cfg.sources]
  weights = [s["weight"] for s in cfg.sources] if len(cfg.sources) == len(sources) else None
  make = _MakeExample(cfg.stage, cfg)
  parts = []
  for i, source in enumerate(sources):
    if not len(source):
      where = f"{cfg.sources[i]['name']} split {cfg.sources[i].get('split') or split!r}" if weights else split
      raise ValueError(f"data source {i} ({where}) is empty")
    ds = grain.MapDataset.source(source).shuffle(seed=cfg.seed + i).repeat()
    parts.append(ds.random_map(make, seed=cfg.seed + 1000 + i))
  ds = parts[0] if len(parts) == 1 else grain.MapDataset.mix(parts, weights=weights)
  ds = ds[index::count].batch(cfg.batch_size // count, drop_remainder=True)
  it = ds.to_iter_dataset(grain.ReadOptions(num_threads=cfg.read_threads, prefetch_buffer_size=2 * cfg.read_threads))
  if cfg.worker_count > 0:
    _ensure_absl_flags()
    it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=cfg.worker_count))
  return it
