"""The demo: the shipped synthetic checkpoint renders one identity in all 8 emotions at intensities
0.25 / 0.5 / 1.0 (an mp4 per emotion with the audio, and a contact sheet); see emodiff_jax/sampling/demo.py.

  python -m launch.demo --out=demo_out
"""

import argparse
import os
import sys

from emodiff_jax.sampling.bundle import load_bundle
from emodiff_jax.sampling.cli import DEFAULT_CHECKPOINT
from emodiff_jax.sampling.demo import run_demo

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "examples")


def main() -> int:
  p = argparse.ArgumentParser(prog="python -m launch.demo", description=__doc__.split("\n")[0])
  p.add_argument("--checkpoint", default=os.path.normpath(DEFAULT_CHECKPOINT))
  p.add_argument("--image", default=os.path.join(EXAMPLES, "portrait.png"))
  p.add_argument("--audio", default=os.path.join(EXAMPLES, "speech.wav"))
  p.add_argument("--out", default="demo_out")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--seconds", type=float, default=3.0, help="length of audio used (0: all of it)")
  p.add_argument("--steps", type=int, default=15, help="denoising steps (0: the checkpoint's)")
  args = p.parse_args()
  bundle = load_bundle(args.checkpoint)
  if args.steps:
    bundle.config.sampling.num_steps = args.steps
  report = run_demo(bundle, args.image, args.audio, args.out, args.seed, seconds=args.seconds)
  for out, message in report.failed:
    print(f"error: {message}", file=sys.stderr)
  if report.failed:
    return 2
  print(f"wrote {args.out}/<emotion>.mp4 for 8 emotions and {args.out}/contact_sheet.png")
  return 0


if __name__ == "__main__":
  sys.exit(main())
