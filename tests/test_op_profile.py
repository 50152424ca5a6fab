"""benchmarks/op_profile.py puts each side's op time into the category of the work it does."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks.op_profile import CATEGORIES, comparison_rows, jax_op_times, torch_op_times


class _Step(nn.Module):
  """One op of each kind: a convolution, a dense layer, a GroupNorm and attention under the `sdpa` scope."""

  @nn.compact
  def __call__(self, x):
    x = nn.Conv(16, (3, 3))(x)
    x = nn.GroupNorm(4, name="norm")(x)
    x = nn.Dense(16)(x.reshape(x.shape[0], -1, 16))
    with jax.named_scope("sdpa"):
      scores = jnp.einsum("bqc,bkc->bqk", x, x)
      x = jnp.einsum("bqk,bkc->bqc", jax.nn.softmax(scores), x)
    return jnp.sum(jnp.tanh(x))


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="maps XLA:CPU's trace events (HLO instruction names)")
def test_jax_op_times_splits_a_step_by_kind_of_work():
  x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 32, 32, 8)), jnp.float32)
  module = _Step()
  params = module.init(jax.random.PRNGKey(0), x)
  grad = jax.jit(jax.grad(lambda p, x: module.apply(p, x)))
  times = jax_op_times(lambda: grad(params, x), grad.lower(params, x).compile().as_text())
  assert set(times) == set(CATEGORIES) | {"total"}
  for category in ("attention core", "convolution", "dense (matmul)", "normalisation"):
    assert times[category] > 0, (category, times)
  assert abs(sum(times[c] for c in CATEGORIES) - times["total"]) < 1e-6


def test_torch_op_times_splits_a_step_by_kind_of_work():
  import torch

  conv, norm, dense = torch.nn.Conv2d(8, 16, 3, padding=1), torch.nn.GroupNorm(4, 16), torch.nn.Linear(16, 16)
  x = torch.randn(2, 8, 32, 32)

  def step():
    y = dense(norm(conv(x)).flatten(2).transpose(1, 2))
    y = torch.nn.functional.scaled_dot_product_attention(y, y, y)
    torch.tanh(y).sum().backward()

  times = torch_op_times(step)
  for category in ("attention core", "convolution", "dense (matmul)", "normalisation", "other"):
    assert times[category] > 0, (category, times)


def test_comparison_rows_end_with_the_bound_of_a_free_attention_core():
  ours = {"attention core": 60.0, "convolution": 20.0, "dense (matmul)": 10.0, "normalisation": 5.0, "other": 5.0,
          "total": 100.0}
  theirs = {c: 10.0 for c in CATEGORIES} | {"total": 50.0}
  rows = comparison_rows(ours, theirs)
  assert [r[0] for r in rows] == list(CATEGORIES) + ["total", "total without our attention core"]
  assert rows[0] == ("attention core", 60.0, 10.0, 10.0 / 60.0)
  assert rows[-1] == ("total without our attention core", 40.0, 50.0, 1.25)
