"""The single attention primitive: kernels agree, reference tokens extend keys/values, zero-init outputs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from emodiff_jax.models.attention import Attention, dot_product_attention


def _naive(q, k, v):
  s = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(q.shape[-1])
  p = np.exp(s - s.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  return np.einsum("bhqk,bkhd->bqhd", p, v)


@pytest.mark.parametrize("impl", [None, "xla", "matmul", "chunked"])
def test_kernels_match_a_float64_softmax_attention(impl):
  rng = np.random.default_rng(0)
  q, k, v = (rng.standard_normal((2, n, 3, 8)).astype(np.float32) for n in (5, 7, 7))
  out = dot_product_attention(q, k, v, implementation=impl)
  np.testing.assert_allclose(out, _naive(*(x.astype(np.float64) for x in (q, k, v))), atol=1e-5)


def test_default_kernel_is_chunked_on_cpu_and_xla_elsewhere():
  q = jnp.ones((1, 128, 2, 8))
  traced = str(jax.make_jaxpr(lambda q: dot_product_attention(q, q, q))(q))
  assert ("custom_vjp_call" in traced) == (jax.default_backend() == "cpu"), traced


def test_extra_kv_equals_attending_to_the_concatenated_context():
  attn = Attention(heads=2, dim_head=4)
  x, ref = jnp.ones((1, 6, 8)) * jnp.arange(6.0)[None, :, None], jnp.linspace(-1, 1, 24).reshape(1, 3, 8)
  params = attn.init(jax.random.PRNGKey(0), x)
  with_ref = attn.apply(params, x, extra_kv=ref)
  np.testing.assert_allclose(with_ref, attn.apply(params, x, context=jnp.concatenate([x, ref], 1)), atol=1e-6)
  assert np.abs(with_ref - attn.apply(params, x)).max() > 1e-3


def test_zero_init_out_starts_at_zero_but_gets_gradients():
  attn = Attention(heads=2, dim_head=4, zero_init_out=True)
  x = jax.random.normal(jax.random.PRNGKey(1), (1, 6, 8))
  params = attn.init(jax.random.PRNGKey(0), x)
  assert not np.asarray(attn.apply(params, x)).any()
  grads = jax.grad(lambda p: attn.apply(p, x).sum())(params)
  assert np.abs(grads["params"]["to_out_0"]["kernel"]).max() > 0


def test_chunked_attention_gradients_match_plain_attention():
  rng = np.random.default_rng(1)
  q, k, v = (jnp.asarray(rng.standard_normal((2, n, 2, 8)).astype(np.float32)) for n in (256, 96, 96))
  loss = lambda impl: jax.grad(lambda q, k, v: jnp.sum(jnp.sin(dot_product_attention(q, k, v, implementation=impl))),
                               argnums=(0, 1, 2))(q, k, v)
  with jax.default_matmul_precision("float32"):  # GPUs default to TF32 matmuls (a 1e-3 difference on an H200)
    out = dot_product_attention(q, k, v, implementation="chunked")
    pairs = list(zip(loss("chunked"), loss("matmul")))
  np.testing.assert_allclose(out, _naive(*(np.asarray(x, np.float64) for x in (q, k, v))), atol=1e-5)
  for got, want in pairs:
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(jax.default_backend() != "gpu", reason="cuDNN's fused attention needs an NVIDIA GPU")
@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float32])
@pytest.mark.parametrize("lq,lk,heads,dim", [(256, 256, 8, 40), (256, 512, 8, 40), (16, 16, 8, 40), (64, 8, 8, 8)])
def test_cudnn_kernel_matches_xla_on_a_gpu(dtype, lq, lk, heads, dim):
  # The backbone's shapes: spatial self-attention, reference attention (keys doubled), temporal attention
  # over frames, cross-attention on a few condition tokens.
  rng = np.random.default_rng(lq + lk)
  q, k, v = (jnp.asarray(rng.standard_normal((2, n, heads, dim)), dtype) for n in (lq, lk, lk))
  loss = lambda impl: lambda q, k, v: jnp.sum(dot_product_attention(q, k, v, implementation=impl).astype(jnp.float32)
                                              * jnp.linspace(-1, 1, dim))
  out, ref = (dot_product_attention(q, k, v, implementation=i) for i in ("cudnn", "xla"))
  assert out.dtype == dtype
  rel = lambda a, b: float(jnp.linalg.norm((a - b).astype(jnp.float32)) / jnp.linalg.norm(b.astype(jnp.float32)))
  assert rel(out, ref) < 2e-2
  for g, g_ref in zip(jax.grad(loss("cudnn"), (0, 1, 2))(q, k, v), jax.grad(loss("xla"), (0, 1, 2))(q, k, v)):
    assert rel(g, g_ref) < 3e-2
