"""Ablations of stage 2: train each variant briefly on the synthetic world and compare them in one table.

`CHANGES` names each ablation's config change (the files `configs/ablations/<name>.py` make the same change
to `configs/synthetic_stage2.py`; a test checks that they agree). `run_ablations(base, names, workdir)`
applies each change to `base` (so command-line overrides of the base reach every variant), trains it with
`train.loop.train` in `workdir/<name>` (resuming if it has checkpoints) and reports:

- 'train_loss': the mean training loss of the last logged window (`tb/metrics.jsonl`);
- 'heldout_loss': the stage-2 objective on one fixed batch of 'test'-split clips (the base config's data
  section, so every variant sees the same clips), with condition dropout off and the same 4 keys (so the
  same timesteps and noise) for every variant, averaged; computed with the trained (not EMA) params;
- with a probe and an expression-generator run: the `harness.evaluate` overall metrics of a bundle exported
  from the variant's run.
"""

from __future__ import annotations

import copy
import json
import os
from typing import Any, Callable, Optional, Sequence

import jax
import ml_collections
import numpy as np

from emodiff_jax.atomic_io import write_bytes

CHANGES: dict[str, dict[str, Any]] = {
    "baseline": {},
    "no_expression": {"model.expression.injection": "none"},
    "no_reference_attention": {"model.reference_attention": False},
    "expression_in_audio": {"model.expression.injection": "add_to_audio"},
    "no_temporal": {"model.motion": None},
    "no_cond_dropout": {f"diffusion.cond_drop.{k}": 0.0 for k in ("reference", "audio", "expression")},
}
ABLATIONS = tuple(k for k in CHANGES if k != "baseline")
HELDOUT_KEYS = 4
EVAL_COLUMNS = ("accuracy", "spearman", "sync_correlation", "fd_probe", "fid_probe", "fd_face", "identity_similarity")


_MISSING = object()


def _diff(a: Any, b: Any, prefix: str = "") -> dict[str, Any]:
  """`{'a.b': b's value}` for every leaf (or whole subtree, where one side is not a dict) that differs."""
  out = {}
  for k in sorted(set(a) | set(b)):
    va, vb = a.get(k, _MISSING), b.get(k, _MISSING)
    if isinstance(va, dict) and isinstance(vb, dict):
      out.update(_diff(va, vb, prefix + k + "."))
    elif va != vb:
      out[prefix + k] = vb
  return out


def config_diff(base: ml_collections.ConfigDict, other: ml_collections.ConfigDict) -> dict[str, Any]:
  """The fields where `other` differs from `base`, `{'a.b': other's value}` (a missing one as `_MISSING`)."""
  return _diff(base.to_dict(), other.to_dict())


def ablated(base: ml_collections.ConfigDict, name: str) -> ml_collections.ConfigDict:
  """A copy of `base` with ablation `name`'s change."""
  if name not in CHANGES:
    raise ValueError(f"unknown ablation {name!r}; expected one of {', '.join(CHANGES)}")
  config = copy.deepcopy(base)
  for path, value in CHANGES[name].items():
    *parents, leaf = path.split(".")
    node = config
    for p in parents:
      node = node[p]
    node[leaf] = value
  return config


def heldout_batch(config: ml_collections.ConfigDict) -> dict[str, np.ndarray]:
  """The first batch of the 'test' split under `config.data` (deterministic in the data config)."""
  from emodiff_jax.input import pipeline
  return next(iter(pipeline.make_dataset(config.data, split="test")))


def heldout_loss(config: ml_collections.ConfigDict, params: Any, batch: dict[str, np.ndarray]) -> float:
  """The stage-2 objective on `batch`, without condition dropout, averaged over `HELDOUT_KEYS` fixed keys."""
  from emodiff_jax.eval.condition_use import denoising_loss
  from emodiff_jax.models.build import build_models
  return denoising_loss(build_models(config.model), config.diffusion, params, batch, stage=config.stage,
                        frame_stride=config.data.frame_stride, audio_margin=config.data.audio_margin,
                        num_keys=HELDOUT_KEYS)


def last_train_loss(workdir: str) -> Optional[float]:
  """The last logged 'loss' of a run (`tb/metrics.jsonl`), or None."""
  path = os.path.join(workdir, "tb", "metrics.jsonl")
  if not os.path.isfile(path):
    return None
  losses = [json.loads(line)["loss"] for line in open(path) if '"loss"' in line]
  return float(losses[-1]) if losses else None


def run_ablations(base: ml_collections.ConfigDict, names: Sequence[str], workdir: str, *,
                  evaluate_fn: Optional[Callable[[str], dict]] = None) -> dict[str, dict]:
  """Trains `base` changed by each ablation in `names` ('baseline': unchanged) under `workdir/<name>`.

  `evaluate_fn(run_dir) -> overall harness metrics` (e.g. export a bundle and run `harness.evaluate`) adds
  them to the row. Returns `{name: row}`.
  """
  from emodiff_jax.train.loop import train
  configs = {name: ablated(base, name) for name in names}  # unknown names fail before any training
  batch = heldout_batch(base)
  rows = {}
  for name, config in configs.items():
    run_dir = os.path.join(workdir, name)
    state = train(config, run_dir)
    row = dict(change=CHANGES[name], steps=config.train.steps, train_loss=last_train_loss(run_dir),
               heldout_loss=heldout_loss(config, jax.device_get(state.params), batch))
    if evaluate_fn is not None:
      row["eval"] = evaluate_fn(run_dir)
    rows[name] = row
  return rows


def markdown_table(rows: dict[str, dict]) -> str:
  """One row per ablation: its change, steps, losses and (when present) the harness's overall metrics."""
  with_eval = any("eval" in r for r in rows.values())
  cols = ["ablation", "change", "steps", "train loss", "held-out loss"] + (list(EVAL_COLUMNS) if with_eval else [])
  lines = ["| " + " | ".join(cols) + " |", "|" + " --- |" * 2 + " ---: |" * (len(cols) - 2)]
  fmt = lambda v: "n/a" if v is None else (f"{v:.4f}" if isinstance(v, float) else str(v))
  for name, r in rows.items():
    change = ", ".join(f"`{k}={v}`" for k, v in r["change"].items()) or "(synthetic_stage2)"
    cells = [name, change, str(r["steps"]), fmt(r["train_loss"]), fmt(r["heldout_loss"])]
    if with_eval:
      cells += [fmt(r.get("eval", {}).get(c)) for c in EVAL_COLUMNS]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def write_table(rows: dict[str, dict], out_dir: str) -> dict[str, str]:
  """Writes `ablations.json` and `ablations.md` into `out_dir` atomically; returns their paths."""
  os.makedirs(out_dir, exist_ok=True)
  paths = {k: os.path.join(out_dir, k) for k in ("ablations.json", "ablations.md")}
  write_bytes(paths["ablations.json"], json.dumps(rows, indent=1, sort_keys=True).encode())
  write_bytes(paths["ablations.md"], markdown_table(rows).encode())
  return paths


def bundle_metrics(run_dir: str, gan_workdir: str, probe_fn: Callable[[np.ndarray], np.ndarray],
                   **evaluate_kwargs: Any) -> dict:
  """Exports `run_dir`'s latest checkpoint with the expression generator of `gan_workdir` as a bundle
  (`run_dir/bundle`) and returns its overall `harness.evaluate` metrics."""
  from emodiff_jax.eval import harness
  from emodiff_jax.sampling.bundle import export_bundle, load_bundle
  bundle = load_bundle(export_bundle(run_dir, gan_workdir, os.path.join(run_dir, "bundle")))
  results = harness.evaluate(harness.bundle_video_fn(bundle), probe_fn, **evaluate_kwargs)
  return results["methods"]["model"]["overall"]
