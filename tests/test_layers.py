"""`Dense` and `GroupNorm` (models/layers.py) compute what flax's layers compute, with the same params."""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from emodiff_jax.models.layers import Dense, GroupNorm


def _perturbed(params, seed):
  rng = np.random.default_rng(seed)
  return jax.tree_util.tree_map(lambda a: a + jnp.asarray(rng.standard_normal(a.shape), a.dtype), params)


def _values_and_grads(module, params, x):
  out, vjp = jax.vjp(lambda p, x: module.apply(p, x), params, x)
  return out, vjp(jnp.cos(out))


@pytest.mark.parametrize("shape,groups", [((2, 8, 8, 32), 8), ((2, 4, 6, 5, 16), 4), ((3, 10, 12), 3)])
def test_group_norm_matches_flax_values_and_gradients(shape, groups):
  x = jnp.asarray(np.random.default_rng(0).standard_normal(shape) * 3 + 1, jnp.float32)  # mean 1, std 3
  ours, ref = GroupNorm(groups, epsilon=1e-5), nn.GroupNorm(groups, epsilon=1e-5)
  params = _perturbed(ref.init(jax.random.PRNGKey(0), x), 1)
  chex.assert_trees_all_equal_shapes(ours.init(jax.random.PRNGKey(0), x), params)
  got, want = _values_and_grads(ours, params, x), _values_and_grads(ref, params, x)
  chex.assert_trees_all_close(got, want, rtol=1e-4, atol=1e-4)
  assert np.abs(np.asarray(got[0]) - np.asarray(x)).max() > 1  # it did normalise


def test_group_norm_output_dtype_and_bad_group_count():
  x = jnp.ones((1, 4, 4, 8))
  module = GroupNorm(4, dtype=jnp.bfloat16)
  params = module.init(jax.random.PRNGKey(0), x)
  assert module.apply(params, x).dtype == jnp.bfloat16
  assert params["params"]["scale"].dtype == jnp.float32
  with pytest.raises(ValueError, match="8 channels do not split into 3 groups"):
    GroupNorm(3).init(jax.random.PRNGKey(0), x)


def test_dense_matches_flax_on_leading_axes():
  x = jnp.asarray(np.random.default_rng(2).standard_normal((2, 3, 5, 7)), jnp.float32)
  ref = nn.Dense(4)
  params = _perturbed(ref.init(jax.random.PRNGKey(0), x), 3)
  chex.assert_trees_all_close(_values_and_grads(Dense(4), params, x), _values_and_grads(ref, params, x),
                              rtol=1e-5, atol=1e-5)
