"""Picture of a trained expression generator: per emotion (rows) and intensity alpha (columns), the
emotion's main coefficients over time, all drawn from the same noise and loudness track.

    python -m launch.plot_expr --workdir=/tmp/emodiff/expr_gan --out=expr.png

Drawn with PIL (matplotlib is not a dependency). Each row shares one y range, so the curves of one
emotion grow from column to column as alpha does; the dotted line is 0.
"""

from __future__ import annotations

from typing import Any, Sequence

import ml_collections
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from emodiff_jax.atomic_io import write_png
from emodiff_jax.emotion.gan_loop import load_generator
from emodiff_jax.emotion.gan_train import generate, model_config
from emodiff_jax.synth.audio import envelope_from_audio, speech_like_audio
from emodiff_jax.synth.expression import EMOTION_COEFFS, EMOTIONS, INDEX

ALPHAS = (0.25, 0.5, 1.0)
COLORS = ((31, 119, 180), (214, 39, 40), (44, 160, 44))  # one per main coefficient
LABEL_W, PANEL_W, PANEL_H, PAD, HEADER_H = 150, 240, 110, 10, 24


def main_coefficients(emotion: str, k: int = len(COLORS)) -> tuple[str, ...]:
  """The `k` strongest coefficients of `emotion`'s prototype; `jaw_open` (speech) for neutral."""
  coeffs = EMOTION_COEFFS[emotion]
  return tuple(sorted(coeffs, key=coeffs.get, reverse=True)[:k]) or ("jaw_open",)


def intensity_trajectories(config: ml_collections.ConfigDict, g_params: Any, alphas: Sequence[float] = ALPHAS,
                           seed: int = 0) -> np.ndarray:
  """Generated trajectories `[len(EMOTIONS), len(alphas), T, D]`, `T = config.data.num_frames`, every one
  from the same noise and speech-like loudness track (seeded by `seed`)."""
  cfg = model_config(config)
  t = config.data.num_frames
  rng = np.random.default_rng(seed)
  wave, _ = speech_like_audio(rng, t)
  audio = envelope_from_audio(wave, t)[None, :, None].astype(np.float32)
  noise = rng.standard_normal((1, t, cfg.noise_dim), np.float32)
  grid = (len(EMOTIONS), len(alphas))
  n = grid[0] * grid[1]
  emotion = np.repeat(np.arange(len(EMOTIONS)), len(alphas))
  alpha = np.tile(np.asarray(alphas, np.float32), len(EMOTIONS))
  fake = generate(config, g_params, emotion, alpha, np.repeat(noise, n, 0), np.repeat(audio, n, 0))
  return fake.reshape(grid + fake.shape[1:])


def trajectory_figure(trajectories: np.ndarray, alphas: Sequence[float] = ALPHAS) -> np.ndarray:
  """`[len(EMOTIONS), len(alphas), T, D]` -> uint8 image `[H, W, 3]`: one panel per emotion and alpha
  with the emotion's `main_coefficients` over time, named in the row label."""
  rows, cols, t = trajectories.shape[:3]
  width, height = LABEL_W + cols * (PANEL_W + PAD), HEADER_H + rows * (PANEL_H + PAD)
  image = Image.new("RGB", (width, height), "white")
  draw, font = ImageDraw.Draw(image), ImageFont.load_default()
  draw.text((6, 6), f"x: {t} frames", fill="gray", font=font)
  for j, alpha in enumerate(alphas):
    draw.text((LABEL_W + j * (PANEL_W + PAD) + PANEL_W // 2 - 30, 6), f"alpha = {alpha:g}", fill="black", font=font)
  for i, emotion in enumerate(EMOTIONS):
    names = main_coefficients(emotion)
    curves = trajectories[i][..., [INDEX[n] for n in names]]  # [cols, T, k]
    lo, hi = min(float(curves.min()), 0.0), max(float(curves.max()), 0.0)
    margin = 0.1 * (hi - lo) or 1.0
    lo, hi = lo - margin, hi + margin
    top = HEADER_H + i * (PANEL_H + PAD)
    draw.text((6, top + 4), emotion, fill="black", font=font)
    for c, name in enumerate(names):
      draw.text((14, top + 22 + 14 * c), name, fill=COLORS[c], font=font)
    draw.text((6, top + PANEL_H - 14), f"[{lo:.2f}, {hi:.2f}]", fill="gray", font=font)
    y = lambda v: top + PANEL_H * (hi - v) / (hi - lo)
    for j in range(cols):
      left = LABEL_W + j * (PANEL_W + PAD)
      draw.rectangle((left, top, left + PANEL_W, top + PANEL_H), outline="gray")
      for x in range(left, left + PANEL_W, 6):
        draw.line((x, y(0.0), x + 2, y(0.0)), fill="gray")
      xs = left + np.arange(t) * PANEL_W / max(t - 1, 1)
      for c in range(len(names)):
        draw.line(list(zip(xs.tolist(), y(curves[j, :, c]).tolist())), fill=COLORS[c], width=2)
  return np.asarray(image)


def plot_run(workdir: str, out: str, alphas: Sequence[float] = ALPHAS, seed: int = 0) -> np.ndarray:
  """Writes the `trajectory_figure` of `workdir`'s latest generator to the PNG `out`; returns the image."""
  config, g_params = load_generator(workdir)
  image = trajectory_figure(intensity_trajectories(config, g_params, alphas, seed), alphas)
  write_png(out, image)
  return image
