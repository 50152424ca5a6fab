"""Matmul FLOPs of a step (counted on its jaxpr) and this machine's measured matmul peak, for MFU.

MFU = (FLOPs of the whole step / step seconds) / (devices x measured matmul FLOP/s of one device). The
peak is measured in the same process as the step it divides, never a constant.
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable, Optional

import jax
import jax.extend.core
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


def step_flops(fn: Callable[..., Any], *args: Any) -> float:
  """Matmul and convolution FLOPs of `fn(*args)`, counted on its jaxpr (args may be `jax.ShapeDtypeStruct`s).

  Counts `dot_general` (2 x output size x contracted size) and `conv_general_dilated` (2 x output size x
  kernel size per output feature) wherever they sit: inside jit, remat (a rematerialised forward pass is
  counted again), custom derivatives, `scan` (times its length) and `cond` (its costliest branch);
  a `while` body counts once. Elementwise ops and custom calls (cuDNN attention) count nothing: trace with
  XLA attention to count attention. The count is the program JAX wrote, the same on every backend, where
  XLA's cost analysis is not: a compiled GPU step hides its cuBLAS and cuDNN calls (72 of 96 GFLOP counted
  on an H200 at the `small` stage-2 step) and a lowered one reports nothing there.
  """
  return jaxpr_flops(jax.make_jaxpr(fn)(*args))


def jaxpr_flops(jaxpr: Any) -> float:
  """`step_flops` of an already traced program (a `ClosedJaxpr`, e.g. `jax.jit(f).trace(...).jaxpr`, or a
  `Jaxpr`), so a step that is traced to be compiled need not be traced again to be counted."""
  if isinstance(jaxpr, jax.extend.core.ClosedJaxpr):
    jaxpr = jaxpr.jaxpr
  total = 0.0
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    out_size = eqn.outvars[0].aval.size if eqn.outvars else 0
    if name == "dot_general":
      (lhs_contract, _), _ = eqn.params["dimension_numbers"]
      lhs_shape = eqn.invars[0].aval.shape
      total += 2.0 * out_size * math.prod(lhs_shape[d] for d in lhs_contract)
    elif name == "conv_general_dilated":
      rhs_shape = eqn.invars[1].aval.shape
      out_features = rhs_shape[eqn.params["dimension_numbers"].rhs_spec[0]]
      total += 2.0 * out_size * math.prod(rhs_shape) / out_features
    inner = [jaxpr_flops(j) for j in _sub_jaxprs(eqn.params)]
    if name == "cond":
      total += max(inner, default=0.0)
    else:
      total += sum(inner) * (eqn.params["length"] if name == "scan" else 1)
  return total


def _sub_jaxprs(params: dict) -> list:
  """The jaxprs among an equation's params (`jaxpr`, `call_jaxpr`, `branches`, ...)."""
  found = []
  for value in params.values():
    for v in value if isinstance(value, (tuple, list)) else (value,):
      if isinstance(v, (jax.extend.core.ClosedJaxpr, jax.extend.core.Jaxpr)):
        found.append(v)
  return found
