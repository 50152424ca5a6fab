"""Talking-head video from a portrait, speech, an emotion and an intensity (see emodiff_jax/sampling/cli.py).

  python -m launch.infer --image=face.jpg --audio=speech.wav --emotion=happy --intensity=0.7 --out=out.mp4
  python -m launch.infer --jobs=jobs.jsonl --batch-size=8
"""

import sys

from emodiff_jax.sampling.cli import main

if __name__ == "__main__":
  sys.exit(main())
