"""The demo (`make demo`): one identity across the 8 emotions at intensities 0.25 / 0.5 / 1.0.

All 24 renders share the portrait and the speech, so they go through the sampler as one batch. Writes, in
`out_dir`: `<emotion>.mp4` (the three intensities side by side, with the audio) for each emotion and
`contact_sheet.png` (rows: emotions; columns: intensities at a few moments of the clip).
"""

from __future__ import annotations

import os
from typing import Sequence

import cv2
import numpy as np
import soundfile

from emodiff_jax.atomic_io import write_png
from emodiff_jax.input.media import read_video, write_video
from emodiff_jax.input.portrait import load_speech
from emodiff_jax.sampling.bundle import Bundle
from emodiff_jax.sampling.render import Job, Report, run_jobs
from emodiff_jax.sampling.video import FPS
from emodiff_jax.synth.expression import EMOTIONS
from emodiff_jax.synth.preview import label

INTENSITIES = (0.25, 0.5, 1.0)
CELL = 128  # pixels per contact-sheet cell


def demo_jobs(image: str, audio: str, out_dir: str, seed: int = 0,
              intensities: Sequence[float] = INTENSITIES) -> list[Job]:
  """One job per (emotion, intensity), rendered to `out_dir/renders/<emotion>_<intensity>.mp4`."""
  return [Job(image=image, audio=audio, out=os.path.join(out_dir, "renders", f"{e}_{a:g}.mp4"), emotion=e,
              intensity=a, seed=seed) for e in EMOTIONS for a in intensities]


def _cell(frame: np.ndarray, text: str) -> np.ndarray:
  return label(cv2.resize(frame, (CELL, CELL), interpolation=cv2.INTER_CUBIC), text)


def contact_sheet(videos: dict[tuple[str, float], np.ndarray], moments: Sequence[float] = (0.3, 0.6, 0.9)
                  ) -> np.ndarray:
  """`videos[(emotion, intensity)] = frames [T, H, W, 3]` -> uint8 sheet: a row per emotion, and per
  intensity one cell per moment (fraction of the clip)."""
  intensities = sorted({a for _, a in videos})
  rows = []
  for emotion in EMOTIONS:
    cells = []
    for a in intensities:
      frames = videos[(emotion, a)]
      cells += [_cell(frames[min(int(m * len(frames)), len(frames) - 1)], f"{emotion} {a:g}") for m in moments]
    rows.append(np.concatenate(cells, axis=1))
  return np.concatenate(rows, axis=0)


def run_demo(bundle: Bundle, image: str, audio: str, out_dir: str, seed: int = 0,
             intensities: Sequence[float] = INTENSITIES, seconds: float = 0.0) -> Report:
  """Renders the demo into `out_dir` (finished renders are reused) and returns what `run_jobs` did.
  `seconds > 0` uses only the first `seconds` of the audio."""
  if seconds > 0:
    os.makedirs(out_dir, exist_ok=True)
    trimmed = os.path.join(out_dir, f"speech_{seconds:g}s.wav")
    soundfile.write(trimmed, load_speech(audio)[:int(seconds * 16000)], 16000)
    audio = trimmed
  jobs = demo_jobs(image, audio, out_dir, seed, intensities)
  report = run_jobs(jobs, bundle, bundle.config.sampling, batch_size=len(jobs))
  if report.failed:
    return report
  speech = load_speech(audio)
  videos = {(j.emotion, float(j.intensity)): read_video(j.out)[0] for j in jobs}
  for emotion in EMOTIONS:
    row = [videos[(emotion, a)] for a in intensities]
    n = min(len(v) for v in row)
    side = np.concatenate([np.stack([_cell(f, f"{emotion} {a:g}") for f in v[:n]]) for v, a in zip(row, intensities)],
                          axis=2)
    write_video(os.path.join(out_dir, f"{emotion}.mp4"), side, FPS, audio=speech)
  write_png(os.path.join(out_dir, "contact_sheet.png"), contact_sheet(videos))
  return report
