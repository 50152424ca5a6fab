"""Audio projection: wav2vec2 hidden states -> per-video-frame audio tokens for audio cross-attention.

In the spirit of EMO (arXiv 2402.17485, Sec. 3.2: each frame's audio feature is the concatenation of
the wav2vec2 features of its neighbouring frames, all layers) and Hallo's audio projection: the 50 Hz
wav2vec2 states are resampled to the video frame rate, each video frame takes a window of +-w
neighbouring frames, and an MLP maps the flattened window x layers x channels to `num_tokens`
context tokens of `context_dim`, which the backbone's audio cross-attention attends to frame by frame.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class AudioProjectionConfig:
  """Audio projection hyper-parameters (defaults: wav2vec2-base, 25 fps video, SD-1.5 context width).

  Attributes:
    window: w, each video frame sees resampled audio frames t-w..t+w.
    num_tokens: K, audio context tokens per video frame.
    context_dim: C, width of each token (the UNet's cross-attention context dim).
    hidden_dim: width of the MLP's hidden layers.
    layers: wav2vec2 hidden-state indices used (0 = embeddings), None for all.
    fps: video frame rate.
    sample_rate: waveform sample rate.
    hop_length: waveform samples per wav2vec2 frame (320: 50 Hz at 16 kHz).
  """

  window: int = 2
  num_tokens: int = 32
  context_dim: int = 768
  hidden_dim: int = 1024
  layers: Optional[tuple[int, ...]] = None
  fps: float = 25.0
  sample_rate: int = 16000
  hop_length: int = 320


def audio_frame_positions(num_frames: int, num_audio: int, fps: float, sample_rate: int, hop_length: int) -> np.ndarray:
  """Fractional audio-frame index of each video frame's centre, clipped to `[0, num_audio - 1]`.

  Video frame t covers `[t, t + 1) / fps` seconds and audio frame i `[i, i + 1) * hop / sr`; centres
  are matched: `pos_t = (t + 0.5) / fps * sr / hop - 0.5` (25 fps, 50 Hz: `2t + 0.5`).
  """
  t = np.arange(num_frames, dtype=np.float64)
  pos = (t + 0.5) / fps * sample_rate / hop_length - 0.5
  return np.clip(pos, 0.0, num_audio - 1)


def frame_aligned_features(
    hidden: Array, num_frames: int, fps: float = 25.0, sample_rate: int = 16000, *, window: int = 2,
    hop_length: int = 320,
) -> Array:
  """Linearly resamples audio frames to video frames and gathers a window around each.

  Args:
    hidden: `[B, Na, L, D]` wav2vec2 hidden states (`jnp.stack(hidden_states, axis=2)`), Na frames.
    num_frames: T, number of video frames.
    fps: video frame rate.
    sample_rate: waveform sample rate.
    window: w; frame t gets resampled frames t-w..t+w, indices outside `[0, T)` repeat the edge frame.
    hop_length: waveform samples per audio frame.

  Returns:
    `[B, T, 2w+1, L, D]`.
  """
  if hidden.ndim != 4:
    raise ValueError(f"hidden must be [B, Na, L, D], got shape {hidden.shape}")
  num_audio = hidden.shape[1]
  pos = audio_frame_positions(num_frames, num_audio, fps, sample_rate, hop_length)
  lo = np.floor(pos).astype(np.int32)
  hi = np.minimum(lo + 1, num_audio - 1)
  frac = jnp.asarray(pos - lo, hidden.dtype)[None, :, None, None]
  resampled = jnp.take(hidden, lo, axis=1) * (1 - frac) + jnp.take(hidden, hi, axis=1) * frac
  idx = np.clip(np.arange(num_frames)[:, None] + np.arange(-window, window + 1)[None, :], 0, num_frames - 1)
  return jnp.take(resampled, idx, axis=1)


class AudioProjection(nn.Module):
  """Frame-aligned wav2vec2 windows -> audio tokens `[B, T, K, C]` (MLP + final LayerNorm).

  `__call__` takes all hidden states; `project` takes windows already built by
  `frame_aligned_features` from the selected layers (e.g. precomputed over a whole video by the
  data pipeline, so clip edges see real neighbours).
  """

  cfg: AudioProjectionConfig = AudioProjectionConfig()
  dtype: jnp.dtype = jnp.float32

  def setup(self):
    dense = lambda n, name: nn.Dense(n, dtype=self.dtype, name=name)
    self.proj_in = dense(self.cfg.hidden_dim, "proj_in")
    self.proj_mid = dense(self.cfg.hidden_dim, "proj_mid")
    self.proj_out = dense(self.cfg.num_tokens * self.cfg.context_dim, "proj_out")
    self.norm = nn.LayerNorm(dtype=self.dtype, name="norm")

  def __call__(self, hidden: Array, num_frames: int) -> Array:
    """`hidden` `[B, Na, L, D]` (all wav2vec2 hidden states) -> tokens `[B, num_frames, K, C]`."""
    if self.cfg.layers is not None:
      if max(self.cfg.layers) >= hidden.shape[2]:
        raise ValueError(f"layers {self.cfg.layers} out of range for {hidden.shape[2]} hidden states")
      hidden = jnp.take(hidden, np.asarray(self.cfg.layers), axis=2)
    windows = frame_aligned_features(hidden, num_frames, self.cfg.fps, self.cfg.sample_rate, window=self.cfg.window,
                                     hop_length=self.cfg.hop_length)
    return self.project(windows)

  def project(self, windows: Array) -> Array:
    """`windows` `[B, T, 2w+1, L, D]` -> tokens `[B, T, K, C]`."""
    b, t, n = windows.shape[:3]
    if n != 2 * self.cfg.window + 1:
      raise ValueError(f"windows hold {n} frames per video frame, config window={self.cfg.window} needs "
                       f"{2 * self.cfg.window + 1}")
    x = windows.reshape(b, t, -1).astype(self.dtype)
    x = nn.silu(self.proj_in(x))
    x = nn.silu(self.proj_mid(x))
    x = self.proj_out(x).reshape(b, t, self.cfg.num_tokens, self.cfg.context_dim)
    return self.norm(x)
