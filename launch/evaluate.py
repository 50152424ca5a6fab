"""Evaluates a checkpoint on the synthetic world's held-out identities (see emodiff_jax/eval/harness.py) and
writes `metrics.json`, `metrics.md` and `intensity.png` to `--out`, with the oracle, baseline and
`vae_roundtrip` (the world through the checkpoint's VAE) rows.

  python -m launch.evaluate --checkpoint=data/checkpoints/synthetic --dataset=synthetic_talk --split=test \
      --probe=/tmp/emodiff/probe.msgpack --out=/tmp/emodiff/eval
  python -m launch.evaluate --oracle --probe=/tmp/emodiff/probe.msgpack --out=/tmp/emodiff/eval_oracle

`--vae-run=<launch.train_vae workdir>` (repeatable) adds the roundtrip row of another VAE (the checkpoint's
`model.vae` config and params swapped for that run's), to compare autoencoders before training on them;
with `--roundtrip-only` the checkpoint's sampler is not run (only the roundtrip, oracle and baseline rows:
three minutes instead of ten).

`--cfg.<field>=<value>` overrides the checkpoint's sampling config, as in `launch.infer` (e.g.
`--cfg.guidance.expression=3` for classifier-free guidance on the expression condition,
`--cfg.guidance.emotion=3` for guidance on the emotion edit alone).

The probe comes from `python -m launch.train_probe`.
"""

import argparse
import copy
import os
import sys

DEFAULT_CHECKPOINT = os.path.join("data", "checkpoints", "synthetic")


def parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog="python -m launch.evaluate", description=__doc__.split("\n")[0])
  p.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT, help="inference bundle folder")
  p.add_argument("--dataset", default="synthetic_talk", choices=["synthetic_talk"])
  p.add_argument("--split", default="test", choices=["train", "test"], help="identities to evaluate on")
  p.add_argument("--probe", required=True, help="expression probe (launch.train_probe's msgpack)")
  p.add_argument("--out", required=True, help="report folder")
  p.add_argument("--oracle", action="store_true", help="evaluate the world itself instead of a checkpoint")
  p.add_argument("--no-baselines", action="store_true", help="leave out the baseline rows")
  p.add_argument("--vae-run", action="append", default=[],
                 help="a launch.train_vae workdir: adds its `vae_roundtrip (<dir>)` row (repeatable)")
  p.add_argument("--roundtrip-only", action="store_true",
                 help="leave out the checkpoint's own samples (the 'model' row): compare VAEs")
  p.add_argument("--clips-per-cell", type=int, default=2, help="clips per emotion and intensity")
  p.add_argument("--seconds", type=float, default=2.0, help="length of each clip")
  p.add_argument("--steps", type=int, default=None, help="denoising steps (default: the checkpoint's)")
  p.add_argument("--batch-size", type=int, default=8, help="clips sampled together")
  p.add_argument("--emotions", default="", help="comma-separated subset of the 8 emotions (default: all)")
  p.add_argument("--intensities", default="0,0.25,0.5,0.75,1", help="comma-separated requested intensities")
  p.add_argument("--partitions", default="mead_like,hdtf_like", help="identity partitions to draw from")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--identity-offset", type=int, default=0,
                 help="start of the cycle through the split's identities (another offset: other faces per emotion)")
  return p


def main(argv=None) -> int:
  p = parser()
  args, overrides = p.parse_known_args(argv)
  if args.oracle and (args.vae_run or overrides):
    p.error("--vae-run and --cfg.* apply to a checkpoint: leave out --oracle")
  if args.roundtrip_only and (args.oracle or overrides):
    p.error("--roundtrip-only samples nothing: leave out --oracle and --cfg.*")
  from emodiff_jax.emotion.probe import load_probe, probe_extractor, probe_features
  from emodiff_jax.eval import harness

  partitions = tuple(args.partitions.split(","))
  fns = {}
  if not args.oracle:
    from emodiff_jax.sampling.bundle import load_bundle
    from emodiff_jax.sampling.cli import apply_overrides
    from emodiff_jax.sampling.render import InputError
    bundle = load_bundle(args.checkpoint)
    sampling = copy.deepcopy(bundle.config.sampling)
    try:
      apply_overrides(sampling, overrides)
    except InputError as e:
      p.error(str(e))
    if args.steps:
      sampling.num_steps = args.steps
    if not args.roundtrip_only:
      fns["model"] = harness.bundle_video_fn(bundle, sampling, args.batch_size)
    fns["vae_roundtrip"] = harness.vae_roundtrip_fn(bundle, args.split, partitions)
    for run in args.vae_run:
      fns[f"vae_roundtrip ({run})"] = harness.vae_roundtrip_fn(harness.with_vae_run(bundle, run), args.split,
                                                              partitions)
  fns["oracle"] = harness.oracle_video_fn(args.split, partitions)
  if not args.no_baselines:
    fns["reference_repeated"] = harness.reference_repeated_fn
    fns["random_identity"] = harness.random_identity_fn(args.split, partitions)
  probe = load_probe(args.probe)
  results = harness.evaluate(
      fns, probe_extractor(probe), feature_fn=probe_features(probe), split=args.split,
      emotions=tuple(args.emotions.split(",")) if args.emotions else harness.EMOTIONS,
      intensities=tuple(float(a) for a in args.intensities.split(",")), clips_per_cell=args.clips_per_cell,
      seconds=args.seconds, seed=args.seed, partitions=partitions, identity_offset=args.identity_offset)
  if not args.oracle:
    results["settings"]["checkpoint"] = os.path.abspath(args.checkpoint)
  if "model" in fns:  # the settings the model row was sampled with
    results["settings"]["sampling"] = sampling.to_dict()
  harness.write_report(results, args.out)
  print(harness.markdown_table(results))
  return 0


if __name__ == "__main__":
  sys.exit(main())
