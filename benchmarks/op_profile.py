"""Where a step's time goes, by kind of work, for a jitted JAX function and for a PyTorch callable.

Both sides are profiled on the same step and their op times put into the same categories, so a table
can say which kind of work makes a speed ratio:

- `attention core`: ours, the ops under the `sdpa` name scope (`models/attention.py`); PyTorch,
  `scaled_dot_product_attention`'s kernels.
- `convolution`, `dense (matmul)`: ours, HLO convolutions and dots, alone or inside a fusion (a 3x3
  convolution on a tiny map, computed as a patch matmul by `models/resnet.py`, counts as a dot); PyTorch,
  `aten::*convolution*` and `aten::{mm, addmm, bmm, baddbmm}`.
- `normalisation`: ours, ops of modules named `*norm*` (GroupNorm, LayerNorm); PyTorch, `*_norm*` kernels.
- `other`: the rest (activations, residual adds, reductions, copies and layout changes).

Ours from a `jax.profiler` trace (Perfetto JSON, one event per executed HLO instruction, mapped to the
compiled module's instructions; that is XLA:CPU's trace, a GPU trace names kernels instead and is not
mapped); PyTorch's from `torch.profiler` self CPU times. Times are per call; ours sum the executed ops,
which may overlap on several threads, so their total can exceed the wall time that `time_call` measures.
"""

from __future__ import annotations

import collections
import glob
import gzip
import json
import os
import re
import tempfile
from typing import Any, Callable, Sequence

import jax

CATEGORIES = ("attention core", "convolution", "dense (matmul)", "normalisation", "other")
_CONTAINERS = {"while", "call", "conditional"}  # their bodies' instructions have events of their own
_COMPUTATION = re.compile(r"^(?:ENTRY )?%?([\w.\-]+) \(")
_INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%?([\w.\-]+) = .*? ([a-z][\w\-]*)\(")


def _hlo_instructions(hlo_text: str) -> dict[str, tuple[str, str, set[str]]]:
  """Instruction name -> (opcode, metadata op_name, opcodes of the computation it calls, for fusions)."""
  comp_ops: dict[str, set[str]] = collections.defaultdict(set)
  found = []
  current = ""
  for line in hlo_text.splitlines():
    head = _COMPUTATION.match(line)
    if head and line.rstrip().endswith("{"):
      current = head.group(1)
      continue
    inst = _INSTRUCTION.match(line)
    if not inst:
      continue
    comp_ops[current].add(inst.group(2))
    op_name = re.search(r'op_name="([^"]*)"', line)
    calls = re.search(r"calls=%?([\w.\-]+)", line)
    found.append((inst.group(1), inst.group(2), op_name.group(1) if op_name else "", calls.group(1) if calls else ""))
  return {name: (opcode, op_name, comp_ops.get(calls, set()) if opcode == "fusion" else set())
          for name, opcode, op_name, calls in found}


def _jax_category(opcode: str, op_name: str, called: set[str]) -> str:
  ops = called | {opcode}
  if "/sdpa/" in op_name:
    return "attention core"
  if "convolution" in ops:
    return "convolution"
  if "dot" in ops:
    return "dense (matmul)"
  if re.search(r"/[\w.]*norm[\w.]*/", op_name):
    return "normalisation"
  return "other"


def jax_op_times(run: Callable[[], Any], hlo_text: str, repeats: int = 3) -> dict[str, float]:
  """Milliseconds per call of `run()` by category (and `total`), from a profiler trace.

  `run` calls one compiled JAX function (it may thread donated state from call to call); `hlo_text` is that
  function's compiled HLO (`jitted.lower(*args).compile().as_text()`), whose instruction names the trace's
  events carry.
  """
  instructions = _hlo_instructions(hlo_text)
  jax.block_until_ready(run())
  with tempfile.TemporaryDirectory() as tmp:
    with jax.profiler.trace(tmp, create_perfetto_trace=True):
      for _ in range(repeats):
        jax.block_until_ready(run())
    (path,) = glob.glob(os.path.join(tmp, "**", "perfetto_trace.json.gz"), recursive=True)
    with gzip.open(path) as f:
      trace = json.load(f)
  events = trace["traceEvents"] if isinstance(trace, dict) else trace
  times = collections.Counter({c: 0.0 for c in CATEGORIES})
  for event in events:
    inst = instructions.get(event.get("name", "")) if event.get("ph") == "X" else None
    if inst and inst[0] not in _CONTAINERS:
      times[_jax_category(*inst)] += event.get("dur", 0) / 1e3 / repeats
  return _with_total(times)


def _torch_category(name: str) -> str:
  if "scaled_dot_product" in name:
    return "attention core"
  if "convolution" in name:
    return "convolution"
  if re.fullmatch(r"aten::(mm|addmm|bmm|baddbmm)", name):
    return "dense (matmul)"
  if "_norm" in name:
    return "normalisation"
  return "other"


def torch_op_times(fn: Callable[[], Any], repeats: int = 3) -> dict[str, float]:
  """Milliseconds per call of `fn()`, by category (and `total`), from `torch.profiler` self CPU times."""
  import torch

  fn()
  with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
    for _ in range(repeats):
      fn()
  times = collections.Counter({c: 0.0 for c in CATEGORIES})
  for avg in prof.key_averages():
    times[_torch_category(avg.key)] += avg.self_cpu_time_total / 1e3 / repeats
  return _with_total(times)


def comparison_rows(ours: dict[str, float], theirs: dict[str, float]) -> list[tuple[str, float, float, float]]:
  """`(work, ours ms, theirs ms, theirs / ours)` per category and the total, then the bound: the total
  without our attention core against their whole total (the speed-up left were our attention free)."""
  rows = [(c, ours[c], theirs[c], theirs[c] / max(ours[c], 1e-9)) for c in CATEGORIES + ("total",)]
  rest = ours["total"] - ours["attention core"]
  return rows + [("total without our attention core", rest, theirs["total"], theirs["total"] / rest)]


def _with_total(times: collections.Counter) -> dict[str, float]:
  out = {c: times[c] for c in CATEGORIES}
  out["total"] = sum(out.values())
  return out
