"""Per-frame expression conditions for inference, from the trained expression generator.

EMOdiffhead's emotion editing at inference (Sec. 3.3): the generator gives, on the same noise and the same
speech loudness, a neutral trajectory `e_n [N, D]` and for each requested emotion k an emotional one
`e_k [N, D]`; the condition is

    e[t] = e_n[t] + alpha[t] * sum_k w_k (e_k[t] - e_n[t])

with `alpha[t]` a constant intensity or a keyframe curve and `w_k` mixing weights (one emotion: w = 1),
via `emotion.editing.expression_sequence`. The generator is an LSTM, so any number of frames works.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Union

import jax
import ml_collections
import numpy as np

from emodiff_jax.emotion.editing import Intensity, expression_sequence
from emodiff_jax.emotion.gan_train import generate, model_config
from emodiff_jax.synth.audio import envelope_from_audio
from emodiff_jax.synth.expression import EMOTIONS, check_emotion

Emotion = Union[str, Mapping[str, float]]


def parse_mix(spec: str) -> dict[str, float]:
  """`"happy:0.7,surprised:0.3"` -> `{'happy': 0.7, 'surprised': 0.3}`; a ValueError saying what is wrong."""
  out = {}
  for item in spec.split(","):
    name, sep, weight = item.partition(":")
    name = name.strip()
    try:
      value = float(weight)
    except ValueError:
      value = None
    if not sep or value is None:
      raise ValueError(f"malformed mix item {item.strip()!r} in {spec!r}; expected 'emotion:weight,...', "
                       "e.g. 'happy:0.7,surprised:0.3'")
    check_emotion(name)
    out[name] = value
  return out


def generated_expressions(gan_config: ml_collections.ConfigDict, g_params: Any, emotion: Emotion,
                          intensity: Intensity, audio: np.ndarray, num_frames: int, seed: int, fps: float = 25.0,
                          allow_extrapolation: bool = False) -> tuple[np.ndarray, np.ndarray]:
  """Expression vectors `[num_frames, D]` for speech `audio [S]` (16 kHz), an emotion (or a mix) and an
  intensity (number, keyframe curve string or `[num_frames]` array), and the neutral trajectory `e_n
  [num_frames, D]` they edit (the same speech, blinks and pose at intensity 0, for emotion guidance);
  deterministic in `seed`."""
  weights = {emotion: 1.0} if isinstance(emotion, str) else dict(emotion)
  for name in weights:
    check_emotion(name)
  cfg = model_config(gan_config)
  names = list(weights)
  k = len(names)
  noise = np.asarray(jax.random.normal(jax.random.key(seed), (num_frames, cfg.noise_dim)), np.float32)
  loudness = envelope_from_audio(audio, num_frames)[:, None]
  # Rows 0..k-1: each emotion at alpha 1; row k: alpha 0, the neutral trajectory (same noise and audio).
  rows = generate(gan_config, g_params, np.asarray([EMOTIONS.index(n) for n in names] + [0]),
                  np.asarray([1.0] * k + [0.0]), np.broadcast_to(noise, (k + 1,) + noise.shape),
                  np.broadcast_to(loudness, (k + 1,) + loudness.shape) if cfg.audio_dim else None)
  neutral = rows[k]
  directions = {n: rows[i] - neutral for i, n in enumerate(names)}
  return expression_sequence(neutral, directions, weights, intensity, fps, allow_extrapolation), neutral
