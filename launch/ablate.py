"""Trains each stage-2 ablation briefly on the synthetic world and writes one comparison table (see
emodiff_jax/eval/ablate.py; the variants are `configs/ablations/*.py`).

  python -m launch.ablate --workdir=/tmp/emodiff/ablations --steps=200 \
      --config.init.stage1_checkpoint=/tmp/emodiff/stage1
  python -m launch.ablate --workdir=/tmp/emodiff/ablations --steps=200 --evaluate \
      --probe=/tmp/emodiff/probe.msgpack --gan_workdir=/tmp/emodiff/expr_gan

`--config` is the base every ablation changes (default `configs/synthetic_stage2.py`); its overrides
(`--config.train.steps=50`, `--config.data.batch_size=2`) reach every variant.
"""

import logging

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", "configs/synthetic_stage2.py", "Base stage-2 config.")
_WORKDIR = flags.DEFINE_string("workdir", None, "One run folder per ablation goes here.", required=True)
_ABLATIONS = flags.DEFINE_list("ablations", None, "Ablations to run (default: baseline and all of them).")
_STEPS = flags.DEFINE_integer("steps", 0, "Training steps of each run (0: the config's train.steps).")
_OUT = flags.DEFINE_string("out", None, "Table folder (default: the workdir).")
_EVALUATE = flags.DEFINE_bool("evaluate", False, "Add the harness metrics (needs --probe and --gan_workdir).")
_PROBE = flags.DEFINE_string("probe", None, "Expression probe (launch.train_probe) for --evaluate.")
_GAN_WORKDIR = flags.DEFINE_string("gan_workdir", None, "Expression GAN run (launch.train_expr) for --evaluate.")
_CLIPS = flags.DEFINE_integer("clips_per_cell", 1, "Harness clips per emotion and intensity.")
_SECONDS = flags.DEFINE_float("seconds", 2.0, "Harness clip length.")


def main(argv) -> None:
  del argv
  logging.getLogger("emodiff_jax").setLevel(logging.INFO)
  from emodiff_jax.eval import ablate

  config = _CONFIG.value
  if _STEPS.value:
    config.train.steps = _STEPS.value
  evaluate_fn = None
  if _EVALUATE.value:
    if not (_PROBE.value and _GAN_WORKDIR.value):
      raise app.UsageError("--evaluate needs --probe and --gan_workdir")
    from emodiff_jax.emotion.probe import load_probe, probe_extractor, probe_features
    probe = load_probe(_PROBE.value)
    probe_fn, feature_fn = probe_extractor(probe), probe_features(probe)
    evaluate_fn = lambda run_dir: ablate.bundle_metrics(run_dir, _GAN_WORKDIR.value, probe_fn, feature_fn=feature_fn,
                                                        clips_per_cell=_CLIPS.value, seconds=_SECONDS.value)
  rows = ablate.run_ablations(config, _ABLATIONS.value or list(ablate.CHANGES), _WORKDIR.value,
                              evaluate_fn=evaluate_fn)
  ablate.write_table(rows, _OUT.value or _WORKDIR.value)
  print(ablate.markdown_table(rows))


if __name__ == "__main__":
  app.run(main)
