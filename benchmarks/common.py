"""Timing, table and PyTorch-device helpers shared by the benchmark scripts."""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def print_table(title: str, header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
  """Prints (and returns) a markdown table."""
  fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)
  lines = [f"### {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
  text = "\n".join(lines)
  print(text, flush=True)
  return text


def torch_device() -> str:
  """'cuda' when JAX runs on a GPU and PyTorch sees one, else 'cpu': both sides run on the same kind of chip."""
  import torch

  return "cuda" if jax.default_backend() == "gpu" and torch.cuda.is_available() else "cpu"


def torch_synced(fn: Callable[[], Any], device: str) -> Callable[[], Any]:
  """`fn` then a device synchronise, so a wall-clock timer covers the CUDA kernels it queued."""
  import torch

  def run() -> Any:
    out = fn()
    if device == "cuda":
      torch.cuda.synchronize()
    return out

  return run


def torch_autocast(device: str, dtype: str) -> contextlib.AbstractContextManager:
  """PyTorch's mixed precision matching ours: float32 params, `dtype` compute (a no-op for float32)."""
  import torch

  if dtype == "float32":
    return contextlib.nullcontext()
  return torch.autocast(device_type=device, dtype=getattr(torch, dtype))
