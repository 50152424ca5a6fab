"""Writes a contact sheet PNG and mp4s (with audio) of the synthetic world.

  python -m launch.preview --dataset=synthetic_talk --out=/tmp/preview [--identity=0 --resolution=64]
"""

from absl import app, flags

from emodiff_jax.synth.preview import write_preview

_DATASET = flags.DEFINE_enum("dataset", "synthetic_talk", ["synthetic_talk"], "Dataset to preview.")
_OUT = flags.DEFINE_string("out", "preview", "Output directory.")
_IDENTITY = flags.DEFINE_integer("identity", 0, "mead_like identity index.")
_RESOLUTION = flags.DEFINE_integer("resolution", 64, "Frame size in pixels.")
_FRAMES = flags.DEFINE_integer("num_frames", 50, "Frames per clip (25 fps).")


def main(argv) -> None:
  del argv
  for path in write_preview(_OUT.value, _IDENTITY.value, _RESOLUTION.value, _FRAMES.value):
    print(path)


if __name__ == "__main__":
  app.run(main)
