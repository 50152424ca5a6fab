"""MFCCs as SyncNet's audio stream was trained on: `python_speech_features.mfcc` with its defaults.

syncnet_python reads 16 kHz mono WAV with `scipy.io.wavfile` (int16 sample values, not scaled to
[-1, 1]) and computes 13 cepstra every 10 ms over 25 ms frames:

1. pre-emphasis `y[n] = x[n] - 0.97 x[n - 1]` (`y[0] = x[0]`);
2. frames of 400 samples every 160 (rectangular window), `1 + ceil((N - 400) / 160)` of them (1 if
   N <= 400), the last zero-padded;
3. power spectrum `|rfft(frame, 512)|^2 / 512`;
4. 26 triangular mel filters (mel = 2595 log10(1 + f / 700)) between 0 Hz and 8 kHz, their corners at FFT
   bins `floor(513 * f / 16000)`; log of the filter energies (exact zeros replaced by float eps);
5. orthonormal DCT-II, first 13 coefficients, sinusoidal liftering `1 + 11 sin(pi n / 22)`;
6. coefficient 0 replaced by the log of the frame's total power.

The output is `[13, M]` (coefficients x 10 ms steps), the layout `syncnet.sync_windows` cuts.
"""

from __future__ import annotations

import numpy as np
import scipy.fft

SAMPLE_RATE = 16000
FRAME_LENGTH = 400  # 25 ms
FRAME_STEP = 160  # 10 ms
NFFT = 512
NUM_FILTERS = 26
NUM_CEPSTRA = 13
PREEMPHASIS = 0.97
LIFTER = 22


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
  return 2595.0 * np.log10(1.0 + hz / 700.0)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
  return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


def mel_filterbank(num_filters: int = NUM_FILTERS, nfft: int = NFFT, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
  """Triangular filters `[num_filters, nfft // 2 + 1]` equally spaced in mel from 0 to the Nyquist rate."""
  mels = np.linspace(0.0, _hz_to_mel(sample_rate / 2), num_filters + 2)
  bins = np.floor((nfft + 1) * _mel_to_hz(mels) / sample_rate).astype(np.int64)
  bank = np.zeros((num_filters, nfft // 2 + 1))
  for j in range(num_filters):
    lo, mid, hi = bins[j:j + 3]
    bank[j, lo:mid] = (np.arange(lo, mid) - lo) / (mid - lo)
    bank[j, mid:hi] = (hi - np.arange(mid, hi)) / (hi - mid)
  return bank


def syncnet_mfcc(wave: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
  """`wave [N]` (16 kHz, int16-scaled values) -> MFCC `[13, M]`, M = 1 + ceil((N - 400) / 160)."""
  if sample_rate != SAMPLE_RATE:
    raise ValueError(f"SyncNet's MFCCs are defined at {SAMPLE_RATE} Hz, got {sample_rate}")
  x = np.asarray(wave, np.float64)
  if x.ndim != 1 or len(x) == 0:
    raise ValueError(f"expected a mono waveform [N > 0], got shape {x.shape}")
  x = np.concatenate([x[:1], x[1:] - PREEMPHASIS * x[:-1]])
  num_frames = 1 if len(x) <= FRAME_LENGTH else 1 + int(np.ceil((len(x) - FRAME_LENGTH) / FRAME_STEP))
  x = np.pad(x, (0, (num_frames - 1) * FRAME_STEP + FRAME_LENGTH - len(x)))
  idx = np.arange(num_frames)[:, None] * FRAME_STEP + np.arange(FRAME_LENGTH)[None]
  power = np.abs(np.fft.rfft(x[idx], NFFT)) ** 2 / NFFT
  eps = np.finfo(np.float64).eps
  energy = power.sum(1)
  energy = np.where(energy == 0, eps, energy)
  filtered = power @ mel_filterbank().T
  filtered = np.where(filtered == 0, eps, filtered)
  cep = scipy.fft.dct(np.log(filtered), type=2, axis=1, norm="ortho")[:, :NUM_CEPSTRA]
  cep *= 1.0 + (LIFTER / 2.0) * np.sin(np.pi * np.arange(NUM_CEPSTRA) / LIFTER)
  cep[:, 0] = np.log(energy)
  return cep.T.astype(np.float32)
