"""Metrics to TensorBoard event files (tensorboardX: no TensorFlow needed), the console and
`metrics.jsonl` (one `{"step": n, name: value, ...}` line per write, for scripts and tests).

Only process 0 writes; other processes get a writer that does nothing, so callers need no checks.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Mapping

import jax
import numpy as np

log = logging.getLogger("emodiff_jax.train")


class MetricWriter:
  """`write_scalars(step, {name: value})`, `write_image(step, name, uint8 [H, W, 3])`."""

  def __init__(self, logdir: str):
    self.enabled = jax.process_index() == 0
    self._tb = None
    if self.enabled:
      from tensorboardX import SummaryWriter
      os.makedirs(logdir, exist_ok=True)
      self._tb = SummaryWriter(logdir)
      self._jsonl = open(os.path.join(logdir, "metrics.jsonl"), "a")

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    if not self.enabled:
      return
    for name, value in scalars.items():
      self._tb.add_scalar(name, float(value), step)
    self._jsonl.write(json.dumps({"step": int(step), **{k: float(v) for k, v in scalars.items()}}) + "\n")
    self._jsonl.flush()
    text = "  ".join(f"{k}={float(v):.4g}" for k, v in scalars.items())
    log.info("step %d  %s", step, text)

  def write_image(self, step: int, name: str, image: np.ndarray) -> None:
    if self.enabled:
      self._tb.add_image(name, np.asarray(image), step, dataformats="HWC")

  def flush(self) -> None:
    if self.enabled:
      self._tb.flush()

  def close(self) -> None:
    if self.enabled:
      self._tb.close()
      self._jsonl.close()
