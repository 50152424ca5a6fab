"""Writes an inference checkpoint (bundle) from a stage-2 run and an expression GAN run (or the expression
generator of another bundle, `--gan=<bundle folder>`), or rewrites a bundle (`--bundle`); see
emodiff_jax/sampling/bundle.py.

  python -m launch.export_bundle --stage2=/tmp/emodiff/stage2 --gan=/tmp/emodiff/expr_gan \
      --out=data/checkpoints/synthetic [--cfg.guidance.emotion=3 --cfg.guidance.emotion_t_min=500]
  python -m launch.export_bundle --bundle=data/checkpoints/synthetic --vae=/tmp/emodiff/vae_decoder --out=B

`--vae=<launch.train_vae workdir>` replaces the VAE with that run's, which must be a decoder fine-tune of the
same VAE (configs/synthetic_vae_decoder.py: the encoder, hence the diffusion model's latent space, unchanged).
`--cfg.<field>=<value>` sets the bundle's sampling defaults (what `launch.infer`, `launch.demo` and
`launch.evaluate` use unless told otherwise), parsed and checked as `launch.infer`'s overrides are; a bad
one is a usage error (exit 2), as is a run that cannot be exported, and nothing is written.
"""

import argparse
import sys

from emodiff_jax.sampling.bundle import BundleError, bundle_from_runs, load_bundle, save_bundle, with_vae
from emodiff_jax.sampling.cli import apply_overrides
from emodiff_jax.sampling.render import InputError
from emodiff_jax.sampling.video import sampling_config


def main(argv=None) -> int:
  p = argparse.ArgumentParser(prog="python -m launch.export_bundle", description=__doc__.split("\n")[0])
  p.add_argument("--stage2", help="stage-2 training workdir (its latest checkpoint is used)")
  p.add_argument("--gan", help="expression GAN workdir, or a bundle folder whose generator to keep")
  p.add_argument("--bundle", help="a bundle folder to start from instead of --stage2 and --gan")
  p.add_argument("--vae", help="launch.train_vae workdir of a decoder fine-tune whose VAE to put in")
  p.add_argument("--out", required=True, help="bundle folder to write")
  args, overrides = p.parse_known_args(argv)
  if (args.bundle and (args.stage2 or args.gan)) or not (args.bundle or (args.stage2 and args.gan)):
    p.error("give either --stage2 and --gan, or --bundle")
  try:
    apply_overrides(sampling_config(), overrides)  # checked before the runs are read
    if args.bundle:
      bundle = load_bundle(args.bundle)
      config, params, g_params = bundle.config, bundle.params, bundle.g_params
    else:
      config, params, g_params = bundle_from_runs(args.stage2, args.gan)
    if args.vae:
      config, params = with_vae(config, params, args.vae)
    apply_overrides(config.sampling, overrides)
  except (InputError, BundleError) as e:
    p.error(str(e))
  print(f"wrote {save_bundle(args.out, config, params, g_params)}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
