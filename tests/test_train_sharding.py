"""Sharded training on 8 simulated CPU devices (a subprocess: the device count is fixed at JAX start-up):
one stage-1 step on meshes (8,1), (4,2), (2,4), (1,8) equals the single-device step; per-device
parameter and optimizer bytes shrink with `fsdp`; a checkpoint restores onto another mesh. The default
run checks one mesh (2,4); `make test-slow` all four."""

import json
import os
import subprocess
import sys

import jax
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(meshes: str) -> dict:
  env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=jax.config.jax_compilation_cache_dir,
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
  proc = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "sharded_train_check.py"), meshes], cwd=ROOT,
                        env=env, capture_output=True, text=True, timeout=1500)
  lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
  assert proc.returncode == 0 and lines, proc.stderr[-4000:]
  return json.loads(lines[-1][len("RESULT "):])


@pytest.fixture(scope="module")
def two_meshes():
  """The default run: the single-device step and (2, 4), data and fsdp both > 1 (~3 min on 2 cores)."""
  return _run("1x1,2x4")


@pytest.fixture(scope="module")
def result():
  """All meshes of the issue (`make test-slow`: ~8 min on 2 cores, one compile per mesh)."""
  return _run("1x1,8x1,4x2,2x4,1x8")


def _check_equal(result, mesh):
  r = result[mesh]
  assert result["1x1"]["changed"] and r["changed"]  # the step really moved the params
  # Relative error of the whole param tree. Per leaf it can be larger: AdamW's first update is about
  # lr * sign(g), so gradient entries that are zero up to rounding (summed in another order on another
  # mesh) may flip sign; the per-leaf maximum is reported for the record.
  assert r["rel_err"] <= 1e-5, r
  assert abs(r["loss"] - result["1x1"]["loss"]) <= 1e-5 * abs(result["1x1"]["loss"])


def test_step_on_2x4_mesh_equals_single_device_step_and_restores_onto_8x1(two_meshes):
  _check_equal(two_meshes, "2x4")
  assert two_meshes["2x4"]["param_bytes"] < 0.35 * two_meshes["1x1"]["param_bytes"]
  assert two_meshes["restore_to_8x1"] == {"equal": True, "target_shardings": True, "saved_on": "2x4"}


@pytest.mark.slow
@pytest.mark.parametrize("mesh", ["8x1", "4x2", "2x4", "1x8"])
def test_step_on_mesh_equals_single_device_step(result, mesh):
  _check_equal(result, mesh)


@pytest.mark.slow
def test_per_device_bytes_shrink_with_fsdp(result):
  full = result["8x1"]
  for mesh, fsdp in (("4x2", 2), ("2x4", 4), ("1x8", 8)):
    for kind in ("param_bytes", "opt_bytes"):
      ratio = result[mesh][kind] / full[kind]
      # Kernels are split fsdp ways; biases, norms and the few indivisible kernels stay whole.
      assert ratio < 1.25 / fsdp + 0.1, (mesh, kind, ratio)
  assert result["1x1"]["param_bytes"] == full["param_bytes"]  # data parallel: every device holds all


@pytest.mark.slow
def test_checkpoint_saved_on_1x8_restores_onto_8x1(result):
  assert result["restore_to_8x1"] == {"equal": True, "target_shardings": True, "saved_on": "1x8"}
