"""Timing and table helpers shared by the benchmark scripts."""

from __future__ import annotations

import time
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np


def time_call(fn: Callable[[], object], *, warmup: int = 1, repeats: int = 5) -> float:
  """Median wall-clock seconds of `fn()`; JAX results are blocked on before the clock stops."""
  for _ in range(warmup):
    jax.block_until_ready(fn())
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return float(np.median(times))


def matmul_peak_flops(n: int = 2048, repeats: int = 5) -> float:
  """Measured float32 matmul FLOP/s of this machine (the MFU denominator), n x n x n in jnp."""
  a = jnp.ones((n, n), jnp.float32)
  f = jax.jit(lambda x: x @ x)
  seconds = time_call(lambda: f(a), warmup=2, repeats=repeats)
  return 2 * n**3 / seconds


def print_table(title: str, header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
  """Prints (and returns) a markdown table."""
  fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)
  lines = [f"### {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
  text = "\n".join(lines)
  print(text, flush=True)
  return text
