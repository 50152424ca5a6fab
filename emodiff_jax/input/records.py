"""The clip record schema shared by the TFDS builders (writers) and the input pipeline (reader).

One record is one talking-head clip at 25 fps with its 16 kHz audio:

| feature | TFDS type | content |
| --- | --- | --- |
| `clip_id`, `identity` | Text | unique clip key; speaker id (`<dataset>/<id>`) |
| `dataset` | Text | 'synthetic_talk' / 'mead' / 'hdtf' |
| `source` | Text | 'mead_like' / 'hdtf_like' (synthetic parts) or 'mead' / 'hdtf' |
| `emotion` | ClassLabel(`EMOTIONS`) | one of the 8 MEAD emotions ('neutral' for HDTF) |
| `level` | int32 | MEAD intensity 1-3; 0 when unknown (HDTF) |
| `fps`, `num_frames` | float32, int32 | 25.0; T |
| `frames` | Tensor `[T]` object | one encoded PNG (or JPEG) image per frame, RGB |
| `audio` | Tensor `[T * 640]` int16 | mono 16 kHz PCM, padded/trimmed to exactly T frames |
| `expression` | Tensor `[T, D]` float32 | per-frame FLAME expression codes (zeros when absent) |
| `has_expression` | bool | whether `expression` holds real codes |
| `neutral_reference` | Tensor `[0 or 1]` object | the speaker's face at a neutral expression, encoded like `frames` (empty when the speaker has no usable neutral clip) |

No TensorFlow is needed: images are encoded with OpenCV and stored as bytes tensors, so records
read back through `tfds.data_source` (ArrayRecord) in plain NumPy.

An expression extractor (`frames uint8 [T, H, W, 3] -> float32 [T, D]`, e.g. DECA/EMOCA or the
synthetic probe) can be registered with `set_expression_extractor`; the builders use it for clips
without a precomputed expression file.
"""

from __future__ import annotations

import collections.abc
import os
from typing import Any, Callable, Mapping, Optional

import cv2
import numpy as np
import tensorflow_datasets as tfds
from tensorflow_datasets.core.data_sources import base as tfds_base

from emodiff_jax.synth.expression import EMOTIONS

FPS = 25.0
SAMPLE_RATE = 16000
SAMPLES_PER_FRAME = int(SAMPLE_RATE / FPS)  # 640
EXPRESSION_DIM = 50
DATASETS = ("synthetic_talk", "mead", "hdtf")
IMAGE_FORMATS = ("png", "jpeg")

ExpressionExtractor = Callable[[np.ndarray], np.ndarray]
_EXTRACTOR: Optional[ExpressionExtractor] = None


def set_expression_extractor(fn: Optional[ExpressionExtractor]) -> None:
  """Registers `fn(frames uint8 [T, H, W, 3]) -> float32 [T, D]` (None unregisters)."""
  global _EXTRACTOR
  _EXTRACTOR = fn


def get_expression_extractor() -> Optional[ExpressionExtractor]:
  """The registered expression extractor, or None."""
  return _EXTRACTOR


def features(expression_dim: int = EXPRESSION_DIM) -> tfds.features.FeaturesDict:
  """The TFDS FeaturesDict of one clip record."""
  return tfds.features.FeaturesDict({
      "clip_id": tfds.features.Text(),
      "identity": tfds.features.Text(),
      "dataset": tfds.features.Text(),
      "source": tfds.features.Text(),
      "emotion": tfds.features.ClassLabel(names=list(EMOTIONS)),
      "level": np.int32,
      "fps": np.float32,
      "num_frames": np.int32,
      "frames": tfds.features.Tensor(shape=(None,), dtype=np.object_),
      "audio": tfds.features.Tensor(shape=(None,), dtype=np.int16),
      "expression": tfds.features.Tensor(shape=(None, expression_dim), dtype=np.float32),
      "has_expression": np.bool_,
      "neutral_reference": tfds.features.Tensor(shape=(None,), dtype=np.object_),
  })


def encode_frames(frames: np.ndarray, image_format: str = "png", jpeg_quality: int = 95) -> list:
  """uint8 `[T, H, W, 3]` RGB -> list of T encoded image bytes."""
  if image_format not in IMAGE_FORMATS:
    raise ValueError(f"image_format must be one of {IMAGE_FORMATS}, got {image_format!r}")
  ext, params = (".png", []) if image_format == "png" else (
      ".jpg", [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
  out = []
  for frame in np.asarray(frames, np.uint8):
    ok, buf = cv2.imencode(ext, cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), params)
    if not ok:
      raise ValueError(f"could not encode a {frame.shape} frame as {image_format}")
    out.append(buf.tobytes())
  return out


def decode_frames(record: Mapping[str, Any]) -> np.ndarray:
  """The record's frames as uint8 `[T, H, W, 3]` RGB."""
  out = []
  for i, data in enumerate(record["frames"]):
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
      raise ValueError(f"record {_text(record.get('clip_id'))!r}: frame {i} is not a decodable image")
    out.append(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
  return np.stack(out)


def decode_neutral_reference(record: Mapping[str, Any]) -> np.ndarray:
  """The record's neutral face as uint8 `[H, W, 3]`; a ValueError naming the clip when it has none."""
  encoded = list(record.get("neutral_reference", []))
  if not encoded:
    raise ValueError(f"record {_text(record.get('clip_id'))!r} has no neutral_reference image: build the "
                     "dataset with one (synthetic_talk >= 1.1.0 has it) or use data.reference='clip'")
  return decode_frames({"clip_id": record.get("clip_id"), "frames": encoded[:1]})[0]


def audio_to_int16(audio: np.ndarray, num_frames: int) -> np.ndarray:
  """float32 `[N]` in [-1, 1] -> int16 `[num_frames * 640]` (zero-padded or trimmed)."""
  n = num_frames * SAMPLES_PER_FRAME
  audio = np.asarray(audio, np.float32).reshape(-1)[:n]
  audio = np.pad(audio, (0, n - len(audio)))
  return np.round(np.clip(audio, -1.0, 1.0) * 32767.0).astype(np.int16)


def audio_float(record: Mapping[str, Any]) -> np.ndarray:
  """The record's audio as float32 `[N]` in [-1, 1] at 16 kHz."""
  return np.asarray(record["audio"], np.int16).astype(np.float32) / 32767.0


def _text(value: Any) -> str:
  return value.decode() if isinstance(value, bytes) else str(value)


def make_record(*, clip_id: str, identity: str, dataset: str, source: str, emotion: str,
                level: int, frames: np.ndarray, audio: np.ndarray,
                expression: Optional[np.ndarray], expression_dim: int = EXPRESSION_DIM,
                image_format: str = "png", neutral_reference: Optional[np.ndarray] = None) -> dict:
  """Assembles one record from 25 fps frames `[T, H, W, 3]`, 16 kHz audio `[N]`, optional expression codes
  `[T, D]` and an optional neutral face of the speaker `[H, W, 3]` (see the module docstring)."""
  if dataset not in DATASETS:
    raise ValueError(f"dataset must be one of {DATASETS}, got {dataset!r}")
  if emotion not in EMOTIONS:
    raise ValueError(f"{clip_id}: emotion {emotion!r} is not one of {EMOTIONS}")
  t = len(frames)
  has = expression is not None
  if has:
    expression = np.asarray(expression, np.float32)
    if expression.shape != (t, expression_dim):
      raise ValueError(f"{clip_id}: expression shape {expression.shape} != ({t}, {expression_dim})")
  else:
    expression = np.zeros((t, expression_dim), np.float32)
  return {
      "clip_id": clip_id,
      "identity": identity,
      "dataset": dataset,
      "source": source,
      "emotion": emotion,
      "level": np.int32(level),
      "fps": np.float32(FPS),
      "num_frames": np.int32(t),
      "frames": encode_frames(frames, image_format),
      "audio": audio_to_int16(audio, t),
      "expression": expression,
      "has_expression": bool(has),
      "neutral_reference": ([] if neutral_reference is None else
                            encode_frames(np.asarray(neutral_reference)[None], image_format)),
  }


def emotion_name(record: Mapping[str, Any]) -> str:
  """The record's emotion as its name (records read back hold the ClassLabel index)."""
  value = record["emotion"]
  return _text(value) if isinstance(value, (str, bytes)) else EMOTIONS[int(value)]



class ShardError(RuntimeError):
  """A record could not be read back; the message names the ArrayRecord shard."""


class RecordReader(collections.abc.Sequence):
  """Random access to one split of a built dataset whose read errors name the shard.

  Wraps `tfds.data_source(name, split=split, data_dir=data_dir)` (ArrayRecord, no TensorFlow);
  records are dicts with the `features()` keys (text as bytes, `emotion` as its class index).
  """

  def __init__(self, name: str, split: str, data_dir: str):
    self.split = split
    self._source = tfds.data_source(name, split=split, data_dir=data_dir)
    instructions = tfds_base.file_instructions(self._source.dataset_info, split)
    self._shards = [os.fspath(fi.filename) for fi in instructions]
    self._ends = np.cumsum([fi.take if fi.take >= 0 else fi.examples_in_shard - fi.skip
                            for fi in instructions])
    self.dataset_info = self._source.dataset_info

  def __len__(self) -> int:
    return len(self._source)

  def shard_of(self, index: int) -> str:
    """Path of the shard holding record `index`."""
    return self._shards[int(np.searchsorted(self._ends, index, side="right"))]

  def __getitem__(self, index):
    if isinstance(index, slice):
      return [self[i] for i in range(*index.indices(len(self)))]
    if not -len(self) <= index < len(self):
      raise IndexError(f"record {index} out of range for split {self.split!r} ({len(self)} records)")
    index %= len(self)
    try:
      return self._source[index]
    except (RuntimeError, ValueError, OSError) as e:
      raise ShardError(f"{self.shard_of(index)}: corrupt ArrayRecord shard (record {index} of "
                       f"split {self.split!r}): {e}") from e
