"""Scores an expression generator against the emotion-editing targets (emodiff_jax/emotion/gan_eval.py):
classification accuracy of generated trajectories, Spearman of intensity, alpha 0 in the neutral spread,
the edit's strength against the real emotion's, the neutral trajectory's drift from the real neutral one.
Writes `metrics.json` and `metrics.md` to `--out` and prints the tables; exit 0 whether or not targets are met.

  python -m launch.eval_expr --out=/tmp/emodiff/expr_eval                      # the shipped checkpoint's GAN
  python -m launch.eval_expr --workdir=/tmp/emodiff/expr_gan --out=/tmp/emodiff/expr_eval   # a GAN run
"""

import argparse
import os
import sys

DEFAULT_CHECKPOINT = os.path.join("data", "checkpoints", "synthetic")


def parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog="python -m launch.eval_expr", description=__doc__.split("\n")[0])
  p.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT, help="inference bundle folder (its generator)")
  p.add_argument("--workdir", default="", help="a launch.train_expr run (its latest checkpoint); overrides "
                 "--checkpoint")
  p.add_argument("--out", required=True, help="report folder")
  p.add_argument("--seed", type=int, default=0, help="noise of the generated trajectories")
  return p


def main(argv=None) -> int:
  args = parser().parse_args(argv)
  from emodiff_jax.emotion import gan_eval
  from emodiff_jax.emotion.gan_loop import load_generator
  from emodiff_jax.sampling.bundle import BundleError, load_bundle

  try:
    if args.workdir:
      config, g_params = load_generator(args.workdir)
    else:
      bundle = load_bundle(args.checkpoint)
      config, g_params = bundle.config.gan, bundle.g_params
  except (BundleError, FileNotFoundError) as e:  # a user error: one line, no traceback
    print(f"eval_expr: {e}", file=sys.stderr)
    return 2
  result = gan_eval.evaluate_generator(config, g_params, *gan_eval.evaluation_data(config), seed=args.seed)
  paths = gan_eval.write_report(result, args.out)
  print(gan_eval.markdown_report(result))
  print(f"wrote {paths['json']} and {paths['markdown']}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
