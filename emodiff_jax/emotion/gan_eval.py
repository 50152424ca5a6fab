"""Evaluation of a trained expression generator against the emotion-editing targets (issue 5's proof).

`evaluate_generator` trains an emotion classifier on *real* train trajectories, then scores the generator on
the held-out conditions of `test` (`gan_train.emotion_accuracy`) and on an intensity sweep
(`gan_train.intensity_eval`), and checks the targets:

- accuracy: generated trajectories classified as the requested emotion in >= 90% of cases;
- spearman: the projection on the emotion direction rises with alpha (Spearman >= 0.95 for every emotion);
- neutral: alpha = 0 lies inside the real neutral spread for every emotion;
- strength: the edit at alpha 1 (projection at alpha 1 minus at alpha 0) is 0.8 to 1.25 times the real
  emotion's at its highest level (`span`) for every emotion: an edit that rises monotonically but stops at
  half the emotion asks the renderer for half of it at full intensity.

`write_report` writes `metrics.json` and `metrics.md` atomically; `launch/eval_expr.py` is the entry point.
"""

from __future__ import annotations

import json
import os
from typing import Any

import ml_collections
import numpy as np

from emodiff_jax.atomic_io import write_bytes
from emodiff_jax.emotion import gan_train
from emodiff_jax.emotion.expression_data import ExpressionData, record_trajectories, synthetic_trajectories
from emodiff_jax.emotion.gan_loop import training_data
from emodiff_jax.synth.expression import COEFFICIENTS

TARGETS = {"accuracy": 0.9, "spearman": 0.95, "strength": (0.8, 1.25), "neutral_drift": 1.0}


def coefficient_name(index: int) -> str:
  """The synthetic world's name of expression coefficient `index`, else `coefficient <index>`."""
  return COEFFICIENTS[index] if index < len(COEFFICIENTS) else f"coefficient {index}"


def evaluate_generator(config: ml_collections.ConfigDict, g_params: Any, train: ExpressionData,
                       test: ExpressionData, seed: int = 0) -> dict[str, Any]:
  """Scores `g_params` (a generator of `config.model`) with `config.classifier` and `config.eval`.

  Returns a JSON-able dict: `accuracy` (`gan_train.emotion_accuracy`), `intensity` per emotion (spearman,
  projection at every alpha, neutral band, alpha-0 checks), `neutral_drift` (`[D]`, in real std) and `targets`
  {name: {value, target, met}}.
  """
  classifier = gan_train.train_emotion_classifier(config, train)
  accuracy = gan_train.emotion_accuracy(config, g_params, classifier, test, seed=seed)
  intensity = gan_train.intensity_eval(config, g_params, test, config.eval.num_alphas, config.eval.num_samples,
                                       seed=seed)
  intensity = {name: {k: (np.asarray(v).tolist() if isinstance(v, (np.ndarray, tuple)) else v)
                      for k, v in r.items()} for name, r in intensity.items()}
  worst = min(r["spearman"] for r in intensity.values())
  low, high = TARGETS["strength"]
  weakest, strongest = (f(intensity.items(), key=lambda item: item[1]["strength"]) for f in (min, max))
  neutral = sum(r["alpha0_in_band"] for r in intensity.values())
  drift = gan_train.neutral_drift(config, g_params, test, config.eval.num_samples, seed=seed)
  worst_drift = int(np.argmax(drift))
  targets = {
      "accuracy": dict(value=accuracy["accuracy"], target=f">= {TARGETS['accuracy']}",
                       met=accuracy["accuracy"] >= TARGETS["accuracy"]),
      "spearman": dict(value=worst, target=f">= {TARGETS['spearman']} (worst emotion)",
                       met=worst >= TARGETS["spearman"]),
      "neutral": dict(value=f"{neutral}/{len(intensity)}", target="alpha 0 in the neutral band, every emotion",
                      met=neutral == len(intensity)),
      "strength": dict(value=f"{weakest[1]['strength']:.2f} ({weakest[0]}) to {strongest[1]['strength']:.2f} "
                             f"({strongest[0]})", target=f"{low} to {high} of the real span, every emotion",
                       met=all(low <= r["strength"] <= high for r in intensity.values())),
      "neutral_drift": dict(value=f"{drift[worst_drift]:.2f} ({coefficient_name(worst_drift)})",
                            target=f"<= {TARGETS['neutral_drift']} real std, every coefficient",
                            met=bool(drift.max() <= TARGETS["neutral_drift"])),
  }
  return dict(accuracy=accuracy, intensity=intensity, neutral_drift=drift.tolist(), targets=targets,
              settings=dict(test_trajectories=len(test), train_trajectories=len(train),
                            num_alphas=config.eval.num_alphas, num_samples=config.eval.num_samples, seed=seed))


def markdown_report(result: dict[str, Any]) -> str:
  """The targets table and the per-emotion intensity table."""
  lines = ["| target | value | required | met |", "| --- | ---: | --- | --- |"]
  for name, t in result["targets"].items():
    value = f"{t['value']:.3f}" if isinstance(t["value"], float) else t["value"]
    lines.append(f"| {name} | {value} | {t['target']} | {'yes' if t['met'] else 'NO'} |")
  drift = np.asarray(result["neutral_drift"])
  largest = ", ".join(f"{coefficient_name(i)} {drift[i]:.2f}" for i in np.argsort(-drift)[:5])
  lines += ["", f"Classifier accuracy on real test trajectories: {result['accuracy']['real_accuracy']:.3f}.",
            f"Neutral drift (generated minus real neutral mean, in real std), largest: {largest}.", "",
            "| emotion | Spearman | projection alpha 0 / 0.5 / 1 | span | strength | neutral band | alpha 0 in band |",
            "| --- | ---: | --- | ---: | ---: | --- | --- |"]
  for name, r in result["intensity"].items():
    p, band = r["projection"], r["neutral_band"]
    lines.append(f"| {name} | {r['spearman']:.3f} | {p[0]:+.3f} / {p[len(p) // 2]:+.3f} / {p[-1]:+.3f} | "
                 f"{r['span']:.3f} | {r['strength']:.2f} | [{band[0]:+.3f}, {band[1]:+.3f}] | {r['alpha0_in_band']} "
                 f"({r['alpha0_fraction_in_band']:.0%}) |")
  return "\n".join(lines) + "\n"


def write_report(result: dict[str, Any], out_dir: str) -> dict[str, str]:
  """Writes `metrics.json` and `metrics.md` under `out_dir`; returns their paths."""
  os.makedirs(out_dir, exist_ok=True)
  paths = {"json": os.path.join(out_dir, "metrics.json"), "markdown": os.path.join(out_dir, "metrics.md")}
  write_bytes(paths["json"], json.dumps(result, indent=1).encode())
  write_bytes(paths["markdown"], markdown_report(result).encode())
  return paths


def evaluation_data(config: ml_collections.ConfigDict) -> tuple[ExpressionData, ExpressionData]:
  """`(train, test)` trajectories of `config.data`: the classifier learns on train, the generator is scored
  on test's conditions (synthetic: `test_clips_per_condition` clips of the held-out identities; records: the
  `test` split of `config.data.records`)."""
  data = config.data
  if data.source == "synthetic":
    test = synthetic_trajectories("test", data.test_clips_per_condition, data.num_frames, data.seed,
                                  data.partitions, config.model.expression_dim)
  else:
    from emodiff_jax.input.records import RecordReader  # TFDS is only imported for record sources.
    test = record_trajectories(RecordReader(data.records.name, "test", data.records.data_dir), data.num_frames)
  return training_data(config), test
