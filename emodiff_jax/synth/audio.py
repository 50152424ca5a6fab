"""Speech-like audio for the synthetic world: syllables of voiced, formant-shaped harmonics with noise
bursts (consonants) and pauses, at 16 kHz. The syllable envelope drives the jaw, so lip sync can be
learned and measured from audio alone (`envelope_from_audio`)."""

from __future__ import annotations

import numpy as np

SAMPLE_RATE = 16000
FPS = 25.0


def _syllable_envelope(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
  """Per-sample amplitude `[n]`: raised-cosine syllables (4-7 Hz) separated by occasional pauses."""
  env = np.zeros(n, np.float32)
  pos = int(rng.uniform(0.0, 0.15) * sr)
  while pos < n:
    if rng.uniform() < 0.15:
      pos += int(rng.uniform(0.15, 0.4) * sr)  # pause
      continue
    length = int(rng.uniform(0.14, 0.25) * sr)
    bump = np.sin(np.linspace(0, np.pi, length, dtype=np.float32)) ** 2 * rng.uniform(0.5, 1.0)
    end = min(n, pos + length)
    env[pos:end] = np.maximum(env[pos:end], bump[: end - pos])
    pos += int(length * rng.uniform(0.85, 1.1))
  return env


def speech_like_audio(rng: np.random.Generator, num_frames: int, fps: float = FPS,
                      sample_rate: int = SAMPLE_RATE) -> tuple[np.ndarray, np.ndarray]:
  """Returns `(waveform [N] float32 in [-1, 1], envelope [T] in [0, 1])`, N = T * sample_rate / fps."""
  n = round(num_frames * sample_rate / fps)
  t = np.arange(n, dtype=np.float32) / sample_rate
  env = _syllable_envelope(rng, n, sample_rate)
  # Pitch glides slowly around a speaker-specific f0; harmonics are weighted by two formants that
  # change per ~200 ms (vowel changes).
  f0 = rng.uniform(95, 220) * (1 + 0.08 * np.sin(2 * np.pi * rng.uniform(0.3, 1.2) * t))
  phase = 2 * np.pi * np.cumsum(f0) / sample_rate
  seg = (t / 0.2).astype(np.int32)
  f1 = rng.uniform(300, 850, seg.max() + 1)[seg]
  f2 = rng.uniform(900, 2400, seg.max() + 1)[seg]
  voiced = np.zeros(n, np.float32)
  for k in range(1, 25):
    fk = k * f0
    gain = np.exp(-(((fk - f1) / 120.0) ** 2)) + 0.6 * np.exp(-(((fk - f2) / 180.0) ** 2)) + 0.02
    voiced += (gain * np.sin(k * phase)).astype(np.float32)
  # Consonant-like noise bursts where a syllable starts.
  onsets = np.flatnonzero((env[1:] > 0.05) & (env[:-1] <= 0.05))
  noise = np.zeros(n, np.float32)
  for o in onsets:
    length = int(rng.uniform(0.02, 0.05) * sample_rate)
    burst = rng.standard_normal(length).astype(np.float32)
    burst = np.diff(burst, prepend=0.0) * np.hanning(length)  # crude high-pass
    noise[o:o + length] += burst[: n - o] * 0.05
  wave = env * voiced / 4.0 + noise
  wave = (0.9 * wave / max(1e-6, np.abs(wave).max())).astype(np.float32)
  return wave, frame_envelope(env, num_frames)


def frame_envelope(per_sample: np.ndarray, num_frames: int) -> np.ndarray:
  """Mean of a per-sample amplitude over each video frame's window, scaled to [0, 1], `[T]`."""
  frames = np.array_split(np.asarray(per_sample, np.float32), num_frames)
  env = np.array([f.mean() if len(f) else 0.0 for f in frames], np.float32)
  return env / max(1e-6, float(env.max()))


def envelope_from_audio(wave: np.ndarray, num_frames: int) -> np.ndarray:
  """Loudness per video frame measured from the waveform alone (RMS per frame window), `[T]` in [0, 1]."""
  frames = np.array_split(np.asarray(wave, np.float32), num_frames)
  rms = np.array([np.sqrt(np.mean(f**2)) if len(f) else 0.0 for f in frames], np.float32)
  return rms / max(1e-6, float(rms.max()))
