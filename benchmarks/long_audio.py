"""Long audio: memory and identity over a long render with a bundle (default: the shipped synthetic one).

Renders `--seconds` of the synthetic world's speech for the example portrait through the real job path
(`sampling.render`: windows with motion frames, segments streamed to disk) and prints, per stretch of the
video:
- the process's peak resident memory (VmHWM) when that stretch was done: constant after the first windows
  means memory does not grow with the length;
- identity against the reference crop, with the synthetic world's measures (`eval.identity`): the cosine
  similarity of face features and the RGB distance of skin / hair / background colours. A video that
  drifts over time shows falling similarity and rising distance in the later stretches.

  python -m benchmarks.long_audio [--seconds 120] [--checkpoint DIR]
"""

from __future__ import annotations

import argparse
import os
import tempfile

import numpy as np
import soundfile

from benchmarks.common import print_table
from emodiff_jax.eval.identity import attribute_colour_distance, identity_similarity, synthetic_face_features
from emodiff_jax.input.media import read_video
from emodiff_jax.sampling import render
from emodiff_jax.sampling.bundle import load_bundle
from emodiff_jax.sampling.cli import DEFAULT_CHECKPOINT
from emodiff_jax.synth.audio import speech_like_audio

EXAMPLE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "examples",
                       "portrait.png")


def peak_rss_mb() -> float:
  """Peak resident memory of this process so far (Linux VmHWM), MiB."""
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith("VmHWM:"):
        return int(line.split()[1]) / 1024
  return float("nan")


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--seconds", type=float, default=120.0)
  p.add_argument("--checkpoint", default=os.path.normpath(DEFAULT_CHECKPOINT))
  p.add_argument("--stretches", type=int, default=6, help="rows of the table")
  args = p.parse_args()
  bundle = load_bundle(args.checkpoint)
  tmp = tempfile.mkdtemp(prefix="long_audio_")
  wave, _ = speech_like_audio(np.random.default_rng(0), int(args.seconds * 25))
  audio = os.path.join(tmp, "speech.wav")
  soundfile.write(audio, wave, 16000)
  out = os.path.join(tmp, "long.mp4")
  job = render.Job(image=EXAMPLE, audio=audio, out=out, emotion="happy", intensity=0.7)
  prepared = render.prepare(job, bundle, bundle.config.sampling.window, bundle.config.sampling.overlap)
  memory = []  # (windows done, peak RSS)

  def progress(n: int) -> None:
    memory.append((len(memory) + n, peak_rss_mb()))

  render.Renderer(bundle, bundle.config.sampling).render_batch([prepared], progress)
  frames = read_video(out)[0]
  reference = prepared.portrait.crop
  plan = prepared.plan
  rows = []
  edges = np.linspace(0, len(frames), args.stretches + 1).astype(int)
  for lo, hi in zip(edges[:-1], edges[1:]):
    clip = frames[lo:hi]
    window = min(plan.num_windows, 1 + max(0, hi - plan.window) // (plan.window - plan.overlap))
    sim = float(identity_similarity(reference[None], clip[None], synthetic_face_features)[0])
    dist = float(attribute_colour_distance(reference[None], clip[None])[0])
    rows.append([f"{lo / 25:.0f}-{hi / 25:.0f} s", window, memory[window - 1][1], sim, dist])
  print_table(f"Long render: {args.seconds:g} s, {plan.num_windows} windows of {plan.window} frames "
              f"(overlap {plan.overlap}), {bundle.config.sampling.num_steps} steps",
              ["stretch", "windows done", "peak RSS MiB", "face-feature cosine to reference",
               "attribute colour distance"], rows)


if __name__ == "__main__":
  main()
