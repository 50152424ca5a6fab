"""FLOPs of a compiled step (XLA cost analysis) and this machine's measured matmul peak, for MFU.

MFU = (FLOPs of the per-device program / step seconds) / (measured float32 matmul FLOP/s of one
device). The peak is measured in the same process as the step it divides, never a constant.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Optional

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


def matmul_peak_flops(n: Optional[int] = None, repeats: int = 5, dtype: Any = jnp.float32) -> float:
  """Measured matmul FLOP/s of the default device, n x n x n in jnp on random data.

  `n` defaults to 2048 on CPU and 8192 on accelerators (a 2048 product does not fill a GPU).
  """
  n = n or (2048 if jax.default_backend() == "cpu" else 8192)
  a = jax.random.normal(jax.random.PRNGKey(0), (n, n), dtype)
  f = jax.jit(lambda x: x @ x)
  seconds = time_call(lambda: f(a), warmup=2, repeats=repeats)
  return 2 * n**3 / seconds


def compiled_flops(compiled: Any) -> float:
  """FLOPs XLA counts in a `jax.stages.Compiled` (the per-device program); 0 when it reports none."""
  analysis = compiled.cost_analysis()
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0] if analysis else {}
  return float((analysis or {}).get("flops", 0.0))
