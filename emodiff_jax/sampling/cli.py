"""Command line of `launch/infer.py`: one job from flags, or many from `--jobs=jobs.jsonl`.

  python -m launch.infer --image=face.jpg --audio=speech.wav --emotion=happy --intensity=0.7 --out=out.mp4

Sampling settings come from the checkpoint's `sampling` section and are overridden with `--steps`, `--seed`
and `--cfg.<field>=<value>` (e.g. `--cfg.guidance.audio=2.0 --cfg.sampler=dpmpp_2m`, or `--cfg.guidance.emotion=3`
to amplify the emotion edit alone, with `--cfg.guidance.emotion_t_min=500` at timesteps >= 500 only, and
`--cfg.guidance.rescale=0.7` to pull the guided output's scale back, `guidance.py`). User mistakes print one
line `error: ...` naming the input and exit with status 2; no traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Optional, Sequence

import ml_collections

from emodiff_jax.sampling.bundle import BundleError, load_bundle
from emodiff_jax.sampling.guidance import Guidance
from emodiff_jax.sampling.provenance import sidecar_path
from emodiff_jax.sampling.render import USER_ERRORS, InputError, Job, run_jobs
from emodiff_jax.synth.expression import EMOTIONS

DEFAULT_CHECKPOINT = os.path.join(os.path.dirname(__file__), "..", "..", "data", "checkpoints", "synthetic")
EXIT_USER_ERROR = 2


def parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog="python -m launch.infer", description=__doc__.split("\n")[0])
  p.add_argument("--checkpoint", default=os.path.normpath(DEFAULT_CHECKPOINT),
                 help="inference bundle folder (default: the shipped synthetic checkpoint)")
  p.add_argument("--image", help="portrait (any image format); the face is detected and cropped")
  p.add_argument("--audio", help="speech (any format ffmpeg reads; resampled to 16 kHz)")
  p.add_argument("--out", help="output .mp4 (25 fps, the input audio muxed in)")
  p.add_argument("--emotion", default="neutral", help=f"one of {', '.join(EMOTIONS)}")
  p.add_argument("--intensity", default="1.0", help="emotion intensity in [0, 1]")
  p.add_argument("--intensity-curve", default="", help="keyframes over time, e.g. 0s:0.0,2s:1.0,4s:0.3")
  p.add_argument("--mix", default="", help="several emotions, e.g. happy:0.7,surprised:0.3 (replaces --emotion)")
  p.add_argument("--allow-extrapolation", action="store_true", help="allow intensities above 1")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--steps", type=int, default=None, help="denoising steps (default: the checkpoint's)")
  p.add_argument("--paste-back", action="store_true", help="blend the face back into the full original image")
  p.add_argument("--expand-ratio", type=float, default=1.5, help="face box size / detected face size")
  p.add_argument("--assume-cropped", action="store_true",
                 help="use the whole image when no face is detected (an already cropped face)")
  p.add_argument("--jobs", default="", help="JSONL file, one job per line: {image, audio, out, ...}")
  p.add_argument("--batch-size", type=int, default=1, help="jobs sampled together (rounded up to the devices)")
  p.add_argument("--overwrite", action="store_true", help="render outputs that already exist again")
  return p


def apply_overrides(config: ml_collections.ConfigDict, items: Sequence[str]) -> None:
  """Applies `--cfg.a.b=value` items to `config`, each value parsed as the type of the field it replaces."""
  for item in items:
    if not item.startswith("--cfg.") or "=" not in item:
      raise InputError(f"unrecognised argument {item!r}; overrides look like --cfg.num_steps=10")
    path, value = item[len("--cfg."):].split("=", 1)
    *parents, leaf = path.split(".")
    node = config
    for name in parents:
      if name not in node:
        raise InputError(f"--cfg.{path}: no field {name!r} in the sampling config")
      node = node[name]
    if leaf not in node:
      raise InputError(f"--cfg.{path}: no field {leaf!r}; fields: {', '.join(sorted(node.keys()))}")
    old = node[leaf]
    try:
      if isinstance(old, bool):
        if value.lower() not in ("true", "false", "1", "0"):
          raise ValueError(value)
        new: Any = value.lower() in ("true", "1")
      else:
        new = type(old)(value) if old is not None else value
    except ValueError:
      raise InputError(f"--cfg.{path}={value}: not a {type(old).__name__}") from None
    node[leaf] = new
  try:
    Guidance(**config.guidance)
  except ValueError as e:
    raise InputError(f"--cfg.guidance: {e}") from None


def _jobs(args: argparse.Namespace) -> list[Job]:
  """Jobs from `--jobs` (flags give defaults for keys a line leaves out) or the single-job flags."""
  defaults = dict(emotion=args.emotion, intensity=args.intensity_curve or args.intensity, mix=args.mix,
                  seed=args.seed, paste_back=args.paste_back, expand_ratio=args.expand_ratio,
                  assume_cropped=args.assume_cropped, allow_extrapolation=args.allow_extrapolation)
  if not args.jobs:
    missing = [f"--{k}" for k in ("image", "audio", "out") if not getattr(args, k)]
    if missing:
      raise InputError(f"missing {', '.join(missing)}; or pass --jobs=jobs.jsonl")
    return [Job(image=args.image, audio=args.audio, out=args.out, **defaults)]
  if not os.path.isfile(args.jobs):
    raise InputError(f"{args.jobs}: jobs file not found")
  jobs = []
  with open(args.jobs) as f:
    for n, line in enumerate(f, 1):
      if not line.strip():
        continue
      where = f"{args.jobs}:{n}"
      try:
        entry = json.loads(line)
      except json.JSONDecodeError as e:
        raise InputError(f"{where}: not JSON ({e.msg})") from None
      if not isinstance(entry, dict):
        raise InputError(f"{where}: expected a JSON object per line")
      jobs.append(Job.from_dict({**defaults, **entry}, where))
  return jobs


def main(argv: Optional[Sequence[str]] = None) -> int:
  args, rest = parser().parse_known_args(argv)
  try:
    jobs = _jobs(args)
    bundle = load_bundle(args.checkpoint)
    sampling = bundle.config.sampling
    apply_overrides(sampling, rest)
    if args.steps is not None:
      sampling.num_steps = args.steps
    if args.overwrite:
      for job in jobs:
        if os.path.isfile(sidecar_path(job.out)):
          os.remove(sidecar_path(job.out))
    report = run_jobs(jobs, bundle, sampling, batch_size=args.batch_size)
  except (BundleError, ValueError) + USER_ERRORS as e:
    print(f"error: {e}", file=sys.stderr)
    return EXIT_USER_ERROR
  for out in report.skipped:
    print(f"skipped {out}: already finished (pass --overwrite to render it again)")
  for out in report.written:
    print(f"wrote {out}")
  for out, message in report.failed:
    print(f"error: {message}", file=sys.stderr)
  return EXIT_USER_ERROR if report.failed else 0
