"""Training examples cut from clip records (`emodiff_jax.input.records`), with augmentation.

Stage 1 (images): a target frame and a reference frame of the same clip.
Stage 2 (clips): `num_frames` frames `frame_stride` apart, a reference frame from outside that window
when the clip allows it, the contiguous audio under the window with `audio_margin` frames of context
on each side (zeros past the clip's ends), the same audio cut into one window per frame (the
wav2vec2 input around that frame: `(2 * audio_margin + 1) * 640` samples, centred on it), the
per-frame expression vectors, emotion and level. Both audio forms are kept because they serve
different trainers: the contiguous one lets wav2vec2 run once per clip and its features be sliced
+-margin frames per frame (cheap, and the encoder sees long context), the per-frame windows give
fixed-shape independent inputs when features are extracted frame by frame.
Images are float32 in [-1, 1], `[H, W, 3]`.

Where the reference comes from is `data.reference`: 'clip' (a frame of the clip itself, as above) or
'neutral' (the record's `neutral_reference`, the speaker's neutral face). A frame of an emotional clip
shows the emotion, so with 'clip' the backbone can copy it from the reference instead of reading it from
the expression condition, and at inference, from a neutral portrait, the emotion is missing; 'neutral'
trains on what inference gives: a neutral portrait and the emotion only in the expression condition.
"""

from __future__ import annotations

from typing import Any, Mapping

import cv2
import ml_collections
import numpy as np

from emodiff_jax.input.records import SAMPLES_PER_FRAME, audio_float, decode_frames, decode_neutral_reference

REFERENCES = ("clip", "neutral")


def _augment_params(rng: np.random.Generator, aug: Mapping[str, Any]) -> dict:
  """One draw of augmentation, shared by every frame of an example so a clip stays coherent."""
  return dict(
      flip=bool(aug["hflip"]) and rng.uniform() < 0.5,
      scale=1.0 + rng.uniform(-aug["scale_jitter"], aug["scale_jitter"]),
      shift=rng.uniform(-aug["crop_jitter"], aug["crop_jitter"], 2),
      gain=1.0 + rng.uniform(-aug["color_jitter"], aug["color_jitter"], 3),
  )


def _apply(frames: np.ndarray, p: dict, resolution: int) -> np.ndarray:
  """uint8 `[N, H, W, 3]` -> float32 `[N, R, R, 3]` in [-1, 1] with zoom/shift/flip/colour gain."""
  n, h, w, _ = frames.shape
  m = cv2.getRotationMatrix2D((w / 2, h / 2), 0.0, p["scale"] * resolution / w)
  m[:, 2] += np.array([resolution / 2 - w / 2, resolution / 2 - h / 2]) + p["shift"] * resolution
  out = np.stack([cv2.warpAffine(f, m, (resolution, resolution), flags=cv2.INTER_LINEAR,
                                 borderMode=cv2.BORDER_REFLECT) for f in frames])
  if p["flip"]:
    out = out[:, :, ::-1]
  out = out.astype(np.float32) / 127.5 - 1.0
  return np.clip((out + 1.0) * p["gain"] - 1.0, -1.0, 1.0).astype(np.float32)


def _frames(record: Mapping[str, Any], idx: np.ndarray) -> np.ndarray:
  return decode_frames({"clip_id": record.get("clip_id"), "frames": [record["frames"][i] for i in idx]})


def _with_reference(record: Mapping[str, Any], idx: np.ndarray, ref: int, cfg: ml_collections.ConfigDict
                    ) -> np.ndarray:
  """uint8 `[len(idx) + 1, H, W, 3]`: frames `idx`, then the reference (frame `ref` or the neutral face)."""
  if cfg.reference not in REFERENCES:
    raise ValueError(f"data.reference must be one of {REFERENCES}, got {cfg.reference!r}")
  if cfg.reference == "clip":
    return _frames(record, np.append(idx, ref))
  frames = _frames(record, idx)
  neutral = decode_neutral_reference(record)
  if neutral.shape != frames.shape[1:]:
    raise ValueError(f"record {record.get('clip_id')!r}: neutral_reference is {neutral.shape[:2]}, its frames "
                     f"{frames.shape[1:3]}")
  return np.concatenate([frames, neutral[None]])


def _expression(record: Mapping[str, Any], idx: Any, cfg: ml_collections.ConfigDict) -> np.ndarray:
  expression = np.asarray(record["expression"], np.float32)
  if expression.shape[-1] != cfg.expression_dim:
    raise ValueError(f"clip {record.get('clip_id')!r}: expression codes have D={expression.shape[-1]}, "
                     f"data.expression_dim is {cfg.expression_dim}")
  return expression[idx]


def _labels(record: Mapping[str, Any]) -> dict:
  return dict(emotion=np.int32(record["emotion"]), level=np.int32(record["level"]))


def image_example(record: Mapping[str, Any], rng: np.random.Generator, cfg: ml_collections.ConfigDict) -> dict:
  """Stage 1: `target` and `reference` `[H, W, 3]`: a frame and another frame of its clip (or the neutral
  face, `data.reference`)."""
  t = int(record["num_frames"])
  target = int(rng.integers(t))
  ref = (target + 1 + int(rng.integers(t - 1))) % t if t > 1 else 0  # uniform over the other frames
  p = _augment_params(rng, cfg.augment)
  imgs = _apply(_with_reference(record, np.array([target]), ref, cfg), p, cfg.resolution)
  return dict(target=imgs[0], reference=imgs[1], frame_index=np.int32(target), reference_index=np.int32(ref),
              expression=_expression(record, target, cfg),
              has_expression=np.bool_(record["has_expression"]), **_labels(record))


def clip_example(record: Mapping[str, Any], rng: np.random.Generator, cfg: ml_collections.ConfigDict) -> dict:
  """Stage 2: see the module docstring. Shapes: frames `[N, H, W, 3]`, audio `[(span + 2m) * 640]`,
  audio_windows `[N, (2m + 1) * 640]`, expression `[N, D]`."""
  t = int(record["num_frames"])
  n, stride, m = cfg.num_frames, cfg.frame_stride, cfg.audio_margin
  span = (n - 1) * stride + 1
  if span > t:
    raise ValueError(f"clip {record.get('clip_id')!r} has {t} frames, fewer than the {span} that "
                     f"num_frames={n} x frame_stride={stride} needs")
  start = int(rng.integers(t - span + 1))
  idx = start + stride * np.arange(n)
  outside = np.setdiff1d(np.arange(t), np.arange(start, start + span))
  ref = int(rng.choice(outside)) if len(outside) else int(rng.integers(t))
  p = _augment_params(rng, cfg.augment)
  imgs = _apply(_with_reference(record, idx, ref, cfg), p, cfg.resolution)
  spf = SAMPLES_PER_FRAME
  audio = np.pad(audio_float(record), (m * spf, m * spf))  # index shift: sample s -> s + m * spf
  contiguous = audio[start * spf:(start + span + 2 * m) * spf]
  windows = np.stack([audio[i * spf:(i + 2 * m + 1) * spf] for i in idx])
  return dict(frames=imgs[:-1], reference=imgs[-1], frame_indices=idx.astype(np.int32),
              reference_index=np.int32(ref), audio=contiguous, audio_windows=windows,
              expression=_expression(record, idx, cfg),
              has_expression=np.bool_(record["has_expression"]), **_labels(record))
