"""Writes an inference checkpoint (bundle) from a stage-2 run and an expression GAN run; see
emodiff_jax/sampling/bundle.py.

  python -m launch.export_bundle --stage2=/tmp/emodiff/stage2 --gan=/tmp/emodiff/expr_gan \
      --out=data/checkpoints/synthetic
"""

import argparse

from emodiff_jax.sampling.bundle import export_bundle


def main() -> None:
  p = argparse.ArgumentParser(prog="python -m launch.export_bundle", description=__doc__.split("\n")[0])
  p.add_argument("--stage2", required=True, help="stage-2 training workdir (its latest checkpoint is used)")
  p.add_argument("--gan", required=True, help="expression GAN workdir")
  p.add_argument("--out", required=True, help="bundle folder to write")
  args = p.parse_args()
  print(f"wrote {export_bundle(args.stage2, args.gan, args.out)}")


if __name__ == "__main__":
  main()
