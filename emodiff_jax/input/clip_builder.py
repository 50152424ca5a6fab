"""Turns one source talking-head video (+ audio, + optional expression codes) into a clip record.

Shared by the `mead` and `hdtf` TFDS builders. Per clip: decode the video and resample it to 25 fps,
load the audio at 16 kHz, find one stable face box (`face_crop`), crop and resize, attach expression
codes, and assemble the record (`records.make_record`).

Bad input never stops a build: `generate_records` logs each bad clip with its file and reason,
skips it, and counts it in a `SkipStats` (summary by reason at the end).

Expression codes: a precomputed per-clip float32 `.npy` of shape `[T_src, D]` (one row per source
video frame; resampled to 25 fps like the frames) or `[T_25, D]` (already at 25 fps). Without one,
the registered extractor (`records.set_expression_extractor`) is applied to the cropped frames; with
neither, the record has zeros and `has_expression=False` (counted as 'missing_expression', and
skipped only when `require_expression`).

Neutral reference: each identity's clips are processed neutral ones first, and every record of that
identity carries the middle frame of its first usable neutral clip as `neutral_reference` (the portrait
of training with `data.reference='neutral'`). An identity with no usable neutral clip gets none
(counted as 'missing_neutral_reference').
"""

from __future__ import annotations

import abc
import collections
import dataclasses
import inspect
import os
from typing import Iterable, Iterator, Optional, Sequence

from absl import logging
from etils import epath
import numpy as np
import tensorflow_datasets as tfds

from emodiff_jax.input import face_crop
from emodiff_jax.input import media
from emodiff_jax.input import records


class ClipError(Exception):
  """A clip that cannot be used: `path` names the offending file and `reason` is a summary key."""

  def __init__(self, path: str, reason: str, detail: str):
    super().__init__(f"{path}: {reason}: {detail}")
    self.path, self.reason, self.detail = path, reason, detail


@dataclasses.dataclass(frozen=True)
class ClipSource:
  """Where one clip's pieces live, and its labels. `audio=None` uses the video's own track."""
  video: str
  clip_id: str
  identity: str
  dataset: str
  source: str
  emotion: str = "neutral"
  level: int = 0
  audio: Optional[str] = None
  expression: Optional[str] = None


@dataclasses.dataclass(frozen=True)
class ClipOptions:
  """How clips are processed.

  Attributes:
    resolution: output frame side in pixels.
    expand_ratio: face box side multiplier (context around the detected face).
    image_format: 'png' (lossless) or 'jpeg'.
    expression_dim: D of the expression codes.
    required_sample_rate: when set, audio at any other source rate is rejected.
    require_expression: skip clips with no expression codes instead of storing zeros.
    min_frames: shortest accepted clip (frames at 25 fps).
  """
  resolution: int = 64
  expand_ratio: float = 1.5
  image_format: str = "png"
  expression_dim: int = records.EXPRESSION_DIM
  required_sample_rate: Optional[int] = None
  require_expression: bool = False
  min_frames: int = 2


class SkipStats:
  """Counts of skipped (and of kept-but-flagged) clips by reason, with the first examples."""

  def __init__(self):
    self.skipped = collections.Counter()
    self.flagged = collections.Counter()
    self.examples: dict[str, list[str]] = collections.defaultdict(list)
    self.kept = 0

  def skip(self, err: ClipError) -> None:
    self.skipped[err.reason] += 1
    if len(self.examples[err.reason]) < 5:
      self.examples[err.reason].append(str(err))
    logging.warning("Skipping clip: %s", err)

  def flag(self, path: str, reason: str) -> None:
    self.flagged[reason] += 1
    logging.info("%s: %s", path, reason)

  def summary(self) -> str:
    parts = [f"kept {self.kept}", f"skipped {sum(self.skipped.values())}"]
    parts += [f"{k}={v}" for k, v in sorted(self.skipped.items())]
    parts += [f"(kept with {k}: {v})" for k, v in sorted(self.flagged.items())]
    return ", ".join(parts)


def find_expression_file(video: str, root: str, expressions_dir: str = "expressions") -> Optional[str]:
  """`<root>/<expressions_dir>/<rel>.npy`, else `<video minus extension>.npy`, else None.

  `<rel>` is the video's path relative to `root` without its extension.
  """
  rel = os.path.splitext(os.path.relpath(video, root))[0]
  for cand in (os.path.join(root, expressions_dir, rel + ".npy"), os.path.splitext(video)[0] + ".npy"):
    if os.path.isfile(cand):
      return cand
  return None


def _load_expression(path: str, num_src: int, idx: np.ndarray, dim: int) -> np.ndarray:
  try:
    codes = np.load(path)
  except (OSError, ValueError) as e:
    raise ClipError(path, "bad_expression", f"unreadable .npy ({e})") from e
  if codes.ndim != 2 or codes.shape[1] != dim:
    raise ClipError(path, "bad_expression", f"shape {codes.shape}, expected [T, {dim}]")
  if len(codes) == num_src:
    return codes[idx].astype(np.float32)
  if len(codes) == len(idx):
    return codes.astype(np.float32)
  raise ClipError(path, "bad_expression", f"{len(codes)} rows, expected {num_src} (one per source "
                                          f"frame) or {len(idx)} (one per 25 fps frame)")


def build_record(src: ClipSource, opts: ClipOptions, detector: face_crop.FaceDetector,
                 neutral_faces: Optional[dict[str, np.ndarray]] = None) -> dict:
  """One record from `src`; raises ClipError naming the file and reason when the clip is unusable.

  `neutral_faces` maps identities to their neutral face `[H, W, 3]`: a neutral clip of an identity not in
  it adds its middle frame, and the record carries its identity's entry as `neutral_reference`."""
  try:
    raw, src_fps = media.read_video(src.video)
  except media.MediaError as e:
    raise ClipError(src.video, "bad_video", e.reason) from e
  idx = media.resample_indices(len(raw), src_fps, records.FPS)
  if len(idx) < opts.min_frames:
    raise ClipError(src.video, "too_short", f"{len(idx)} frames at 25 fps < {opts.min_frames}")
  frames = raw[idx]
  audio_path = src.audio or src.video
  try:
    audio = media.load_audio(audio_path, records.SAMPLE_RATE, opts.required_sample_rate)
  except media.MediaError as e:
    reason = "wrong_sample_rate" if "sample rate" in e.reason else "bad_audio"
    raise ClipError(audio_path, reason, e.reason) from e
  needed = len(frames) * records.SAMPLES_PER_FRAME
  if len(audio) < needed - records.SAMPLES_PER_FRAME:
    raise ClipError(audio_path, "audio_too_short",
                    f"{len(audio) / records.SAMPLE_RATE:.3f} s of audio for "
                    f"{len(frames) / records.FPS:.3f} s of video ({src.video})")
  try:
    frames, _ = face_crop.crop_clip(frames, opts.resolution, detector, opts.expand_ratio)
  except face_crop.NoFaceError as e:
    raise ClipError(src.video, "no_face", str(e)) from e
  neutral_faces = {} if neutral_faces is None else neutral_faces
  if src.emotion == "neutral":
    neutral_faces.setdefault(src.identity, frames[len(frames) // 2])
  if src.expression is not None:
    expression = _load_expression(src.expression, len(raw), idx, opts.expression_dim)
  elif records.get_expression_extractor() is not None:
    expression = np.asarray(records.get_expression_extractor()(frames), np.float32)
  else:
    expression = None
  return records.make_record(
      clip_id=src.clip_id, identity=src.identity, dataset=src.dataset, source=src.source,
      emotion=src.emotion, level=src.level, frames=frames, audio=audio, expression=expression,
      expression_dim=opts.expression_dim, image_format=opts.image_format,
      neutral_reference=neutral_faces.get(src.identity))


def generate_records(sources: Iterable[ClipSource], opts: ClipOptions, stats: SkipStats,
                     detector: Optional[face_crop.FaceDetector] = None) -> Iterator[tuple[str, dict]]:
  """Yields `(clip_id, record)` for every usable source, each identity's neutral clips first (see the
  module docstring); bad ones are logged, skipped, counted."""
  detector = detector or face_crop.HaarFaceDetector()
  neutral_faces: dict[str, np.ndarray] = {}
  for src in sorted(sources, key=lambda s: (s.identity, s.emotion != "neutral")):
    missing = src.expression is None and records.get_expression_extractor() is None
    if missing and opts.require_expression:
      stats.skip(ClipError(src.video, "missing_expression", "no expression .npy and no extractor"))
      continue
    try:
      record = build_record(src, opts, detector, neutral_faces)
    except ClipError as err:
      stats.skip(err)
      continue
    if missing:
      stats.flag(src.video, "missing_expression")
    if src.identity not in neutral_faces:
      stats.flag(src.video, "missing_neutral_reference")
    stats.kept += 1
    yield src.clip_id, record


def split_by_identity(sources: Sequence[ClipSource], test_fraction: float
                      ) -> tuple[list[ClipSource], list[ClipSource]]:
  """(train, test): the last `ceil(test_fraction * n)` sorted identities are held out (n > 1)."""
  ids = sorted({s.identity for s in sources})
  n_test = min(len(ids) - 1, int(np.ceil(test_fraction * len(ids)))) if len(ids) > 1 else 0
  held_out = set(ids[len(ids) - n_test:])
  return ([s for s in sources if s.identity not in held_out],
          [s for s in sources if s.identity in held_out])


@dataclasses.dataclass(eq=False)
class ClipConfig(tfds.core.BuilderConfig):
  """Builder config of the video datasets; fields as in `ClipOptions`, plus the identity split."""
  resolution: int = 64
  expand_ratio: float = 1.5
  image_format: str = "png"
  expression_dim: int = records.EXPRESSION_DIM
  required_sample_rate: Optional[int] = None
  require_expression: bool = False
  test_fraction: float = 0.1

  def options(self) -> ClipOptions:
    return ClipOptions(resolution=self.resolution, expand_ratio=self.expand_ratio,
                       image_format=self.image_format, expression_dim=self.expression_dim,
                       required_sample_rate=self.required_sample_rate,
                       require_expression=self.require_expression)


RESOLUTION_CONFIGS = (
    ClipConfig(name="64px", description="64x64 face crops", resolution=64),
    ClipConfig(name="256px", description="256x256 face crops", resolution=256),
)


class ClipDatasetBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Base of all clip builders: the `records` schema, written as ArrayRecord by
  `download_and_prepare(file_format='array_record')`."""

  VERSION = tfds.core.Version("1.1.0")
  RELEASE_NOTES = {
      "1.0.0": "Frames, audio, expression codes and labels per clip.",
      "1.1.0": "`neutral_reference`: the speaker's neutral face (mead/hdtf: a frame of their first neutral clip).",
  }

  def __init__(self, **kwargs):
    super().__init__(**kwargs)
    self.skip_stats: dict[str, SkipStats] = {}  # by split, filled while generating

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    # TFDS's default probes `importlib_resources` (a py<3.9 backport we do not install); the
    # builder's source file is what it resolves to anyway.
    return epath.Path(inspect.getfile(cls))

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self, description=self.__doc__,
        features=records.features(self.builder_config.expression_dim))


class VideoClipBuilder(ClipDatasetBuilder, skip_registration=True):
  """Base of the manual-dir video builders (`mead`, `hdtf`): subclasses list their `ClipSource`s.

  Splits `train` / `test` hold out whole identities. Bad clips are skipped; `self.skip_stats[split]`
  holds the counts by reason after a build (also logged).
  """

  BUILDER_CONFIGS = list(RESOLUTION_CONFIGS)

  def __init__(self, *, detector: Optional[face_crop.FaceDetector] = None, **kwargs):
    super().__init__(**kwargs)
    self.detector = detector

  @abc.abstractmethod
  def list_sources(self, root: str) -> list[ClipSource]:
    """All clips under the manual dir `root`."""

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    root = os.fspath(dl_manager.manual_dir)
    sources = self.list_sources(root)
    if not sources:
      raise FileNotFoundError(f"{root}: no clips found; expected:\n{self.MANUAL_DOWNLOAD_INSTRUCTIONS}")
    train, test = split_by_identity(sources, self.builder_config.test_fraction)
    return {"train": self._generate_examples(train, "train"),
            "test": self._generate_examples(test, "test")}

  def _generate_examples(self, sources: Sequence[ClipSource], split: str):
    stats = self.skip_stats.setdefault(split, SkipStats())
    yield from generate_records(sources, self.builder_config.options(), stats, self.detector)
    logging.info("%s/%s: %s", self.name, split, stats.summary())
