"""Preemption: SIGTERM (sent by TPU maintenance, SLURM `--signal`, Kubernetes) becomes a flag that a
training loop checks after each step, so it can save a checkpoint and exit cleanly."""

from __future__ import annotations

import signal


class Preemption:
  """Turns SIGTERM into a flag the loop checks after each step (restores the old handler on exit)."""

  def __init__(self):
    self.requested = False

  def __enter__(self):
    self._old = signal.signal(signal.SIGTERM, self._handle)
    return self

  def _handle(self, signum, frame):
    del signum, frame
    self.requested = True

  def __exit__(self, *exc):
    signal.signal(signal.SIGTERM, self._old)
