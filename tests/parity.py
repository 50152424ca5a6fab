"""Helpers shared by the parity tests against the PyTorch references."""

from __future__ import annotations

import numpy as np


def rel_err(ours, ref) -> float:
  """max|ours - ref| / max|ref|."""
  ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
  return float(np.abs(ours - ref).max() / np.abs(ref).max())


def randomize_(module, scale: float = 0.05, seed: int = 0) -> None:
  """Adds noise to every parameter of a torch module in place (norm scales and zero-init layers too), so a
  parity test fails if any weight is mapped wrongly."""
  import torch

  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for p in module.parameters():
      p.add_(torch.randn(p.shape, generator=gen) * scale)
