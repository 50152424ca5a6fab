"""`train.flops.step_flops`: matmul and convolution FLOPs counted on a jaxpr, checked by hand."""

import jax
import jax.numpy as jnp
import pytest

from emodiff_jax.train import flops


def test_matmul_and_batched_einsum():
  a, b = jnp.ones((8, 16)), jnp.ones((16, 32))
  assert flops.step_flops(jnp.matmul, a, b) == 2 * 8 * 16 * 32
  q = jax.ShapeDtypeStruct((2, 5, 3, 7), jnp.float32)  # abstract inputs need no memory
  assert flops.step_flops(lambda x: jnp.einsum("bthd,bshd->bhts", x, x), q) == 2 * (2 * 3 * 5 * 5) * 7


def test_convolution_counts_kernel_per_output_feature():
  x = jnp.ones((2, 9, 9, 6))  # [B, H, W, C]
  w = jnp.ones((3, 3, 3, 4))  # [kh, kw, C / groups, F], 2 groups
  conv = lambda x, w: jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                                    feature_group_count=2)
  assert flops.step_flops(conv, x, w) == 2 * (2 * 9 * 9 * 4) * (3 * 3 * 3)


def test_grad_remat_scan_and_cond():
  w, x = jnp.ones((64, 64)), jnp.ones((4, 64))
  forward = 2 * 4 * 64 * 64
  loss = lambda w, x: jnp.sum(jnp.tanh(x @ w))
  # Backward of x @ w with respect to both operands: two more matmuls of the same size.
  assert flops.step_flops(jax.grad(loss, argnums=(0, 1)), w, x) == 3 * forward
  # Rematerialised: the forward runs again inside the backward pass.
  assert flops.step_flops(jax.grad(jax.checkpoint(loss), argnums=(0, 1)), w, x) == 4 * forward
  scanned = lambda w, x: jax.lax.scan(lambda c, _: (jnp.tanh(c @ w), None), x, None, length=5)[0]
  assert flops.step_flops(jax.jit(scanned), w, x) == 5 * forward
  branches = lambda p, w, x: jax.lax.cond(p, lambda: (x @ w) @ w, lambda: x @ w)
  assert flops.step_flops(branches, True, w, x) == 2 * forward


@pytest.mark.parametrize("fn", [jnp.tanh, lambda x: x * 2 + 1])
def test_elementwise_counts_nothing(fn):
  assert flops.step_flops(fn, jnp.ones((128, 128))) == 0


def test_a_traced_step_counts_the_same_as_its_function():
  w, x = jnp.ones((64, 64)), jnp.ones((4, 64))
  step = jax.jit(jax.grad(lambda w, x: jnp.sum(jnp.tanh(x @ w))))
  assert flops.jaxpr_flops(step.trace(w, x).jaxpr) == flops.step_flops(step, w, x) == 2 * (2 * 4 * 64 * 64)
