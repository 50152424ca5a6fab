"""Writes an inference checkpoint (bundle) from a stage-2 run and an expression GAN run (or the expression
generator of another bundle, `--gan=<bundle folder>`); see emodiff_jax/sampling/bundle.py.

  python -m launch.export_bundle --stage2=/tmp/emodiff/stage2 --gan=/tmp/emodiff/expr_gan \
      --out=data/checkpoints/synthetic [--cfg.guidance.emotion=3 --cfg.guidance.emotion_t_min=500]

`--cfg.<field>=<value>` sets the bundle's sampling defaults (what `launch.infer`, `launch.demo` and
`launch.evaluate` use unless told otherwise), parsed and checked as `launch.infer`'s overrides are; a bad
one is a usage error (exit 2), as is a run that cannot be exported, and nothing is written.
"""

import argparse
import sys

from emodiff_jax.sampling.bundle import BundleError, bundle_from_runs, save_bundle
from emodiff_jax.sampling.cli import apply_overrides
from emodiff_jax.sampling.render import InputError
from emodiff_jax.sampling.video import sampling_config


def main(argv=None) -> int:
  p = argparse.ArgumentParser(prog="python -m launch.export_bundle", description=__doc__.split("\n")[0])
  p.add_argument("--stage2", required=True, help="stage-2 training workdir (its latest checkpoint is used)")
  p.add_argument("--gan", required=True, help="expression GAN workdir, or a bundle folder whose generator to keep")
  p.add_argument("--out", required=True, help="bundle folder to write")
  args, overrides = p.parse_known_args(argv)
  try:
    apply_overrides(sampling_config(), overrides)  # checked before the runs are read
    config, params, g_params = bundle_from_runs(args.stage2, args.gan)
    apply_overrides(config.sampling, overrides)
  except (InputError, BundleError) as e:
    p.error(str(e))
  print(f"wrote {save_bundle(args.out, config, params, g_params)}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
