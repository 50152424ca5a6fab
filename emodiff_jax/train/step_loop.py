"""What every training loop here shares (diffusion stages, VAE, expression GAN): steps under a progress bar,
SIGTERM checked after each step, and the window of step metrics between two log lines with its timing.

    loop = StepLoop(done, config.train.steps, desc="VAE")
    for step in loop:
      state, metrics = step_fn(state, batch)
      loop.record(metrics)
      if loop.log_due(config.train.log_every):
        stacked, seconds_per_step = loop.flush()
        writer.write_scalars(step, means(stacked, ("loss", "grad_norm")))
    ckpt.finish(loop.done, state, ...)   # also after SIGTERM: the loop stopped after a whole step
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from typing import Any, Optional

import jax
import numpy as np
from tqdm import tqdm

from emodiff_jax.train.preemption import Preemption

log = logging.getLogger(__name__)


class StepLoop:
  """Iterating yields the step numbers `done + 1 .. total`; after a step during which SIGTERM arrived it
  logs and stops, so the caller saves `self.done` and exits cleanly. `bar` is the (process-0) tqdm bar."""

  def __init__(self, done: int, total: int, desc: str):
    self.done, self.total = done, total
    self.bar = tqdm(total=total, initial=done, desc=desc, disable=jax.process_index() != 0)
    self._metrics: list[Any] = []
    self._start = time.perf_counter()

  def __iter__(self) -> Iterator[int]:
    try:
      with Preemption() as preemption:
        while self.done < self.total:
          self.done += 1
          yield self.done
          self.bar.update(1)
          if preemption.requested:
            log.info("SIGTERM: saving step %d and stopping", self.done)
            break
    finally:
      self.bar.close()

  def record(self, metrics: Any) -> None:
    """Keeps one step's metrics (device arrays; fetched together at `flush`)."""
    self._metrics.append(metrics)

  def restart_clock(self) -> None:
    """Leaves what ran since the last step (compilation, a preview) out of the window's timing."""
    self._start = time.perf_counter()

  def log_due(self, every: int) -> bool:
    """Whether the step just done is a logging step (every `every` steps, and the last one)."""
    return self.done % every == 0 or self.done == self.total

  def flush(self) -> tuple[list[dict[str, Any]], float]:
    """`(metrics, seconds_per_step)`: host copies of the metrics recorded since the last flush and the time
    per step they took; starts a new window."""
    stacked = jax.device_get(self._metrics)
    seconds = (time.perf_counter() - self._start) / max(1, len(stacked))
    self._metrics, self._start = [], time.perf_counter()
    return stacked, seconds


def means(stacked: Sequence[dict[str, Any]], names: Optional[Sequence[str]] = None) -> dict[str, float]:
  """The mean over steps of each metric in `names` (default: all of them)."""
  names = list(stacked[0]) if names is None else names
  return {k: float(np.mean([m[k] for m in stacked])) for k in names}


def train_scalars(stacked: Sequence[dict[str, Any]], seconds_per_step: float, skipped_steps: int) -> dict[str, float]:
  """The scalars every `train.step` loop logs for a window: mean loss and grad norm, the last learning rate,
  steps/s and the count of skipped (non-finite) steps."""
  return dict(means(stacked, ("loss", "grad_norm")), learning_rate=float(stacked[-1]["learning_rate"]),
              steps_per_sec=1.0 / seconds_per_step, skipped_steps=int(skipped_steps))
