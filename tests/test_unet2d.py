"""The 2D UNet and its diffusers loader (numerical parity, error reporting, SD-1.5 size), its backbone hooks
(reference / audio / expression attention), the ReferenceNet and block rematerialisation."""


import dataclasses

import chex
import diffusers
import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from emodiff_jax.convert.torch_state import CheckpointMismatchError, param_count
from emodiff_jax.convert.unet import load_unet2d
from emodiff_jax.models.reference_net import ReferenceNet
from emodiff_jax.models.resnet import PATCH_MATMUL_MAX_POSITIONS, Conv3x3
from emodiff_jax.models.unet import UNet
from emodiff_jax.models.unet_config import UNetConfig
from tests.parity import randomize_, rel_err

TWO_BLOCKS = dict(down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                  up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"))
CONFIGS = {
    "conv_proj_int_heads": dict(block_out_channels=(32, 64), layers_per_block=1, cross_attention_dim=32,
                                attention_head_dim=4, norm_num_groups=8, **TWO_BLOCKS),
    "linear_proj_head_list_2layers": dict(
        block_out_channels=(32, 64, 64), layers_per_block=2, cross_attention_dim=24, attention_head_dim=(2, 4, 4),
        norm_num_groups=8, use_linear_projection=True, transformer_layers_per_block=2,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D")),
    "head_list_layer_list_all_cross": dict(block_out_channels=(16, 32), layers_per_block=(1, 2), cross_attention_dim=16,
                                attention_head_dim=(2, 4), norm_num_groups=4,
                                down_block_types=("CrossAttnDownBlock2D",) * 2,
                                up_block_types=("CrossAttnUpBlock2D",) * 2),
}


def _save(tmp_path, cfg, safe=True, seed=0):
  torch.manual_seed(seed)
  model = diffusers.UNet2DConditionModel(sample_size=16, **cfg).eval()
  randomize_(model, seed=seed)
  model.save_pretrained(tmp_path, safe_serialization=safe)
  return model


def _inputs(cfg, batch=2, size=16, tokens=5, seed=0):
  rng = np.random.default_rng(seed)
  return (rng.standard_normal((batch, size, size, 4), np.float32), np.array([3, 741])[:batch],
          rng.standard_normal((batch, tokens, cfg["cross_attention_dim"]), np.float32))


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_load_unet2d_matches_diffusers(tmp_path, name):
  cfg = CONFIGS[name]
  model = _save(tmp_path, cfg, safe=(name != "linear_proj_head_list_2layers"))
  unet, params = load_unet2d(str(tmp_path))
  x, t, ctx = _inputs(cfg)
  with torch.no_grad():
    ref = model(torch.from_numpy(x.transpose(0, 3, 1, 2)), torch.from_numpy(t), torch.from_numpy(ctx)).sample
  out = jax.jit(lambda p: unet.apply({"params": p}, x, t, ctx))(params)
  chex.assert_shape(out, x.shape)
  assert rel_err(out, ref.numpy().transpose(0, 2, 3, 1)) <= 1e-4


def test_mismatched_checkpoint_names_missing_and_misshaped_keys(tmp_path):
  from safetensors.torch import load_file, save_file

  _save(tmp_path, CONFIGS["conv_proj_int_heads"])
  path = tmp_path / "diffusion_pytorch_model.safetensors"
  state = load_file(str(path))
  del state["conv_in.bias"]
  state["conv_out.weight"] = torch.zeros(4, 32, 1, 1)
  save_file(state, str(path))
  with pytest.raises(CheckpointMismatchError) as err:
    load_unet2d(str(tmp_path))
  assert "conv_in/bias" in str(err.value) and "conv_out.weight" in str(err.value)
  assert str(path) in str(err.value)


def test_unsupported_diffusers_option_is_rejected():
  with pytest.raises(ValueError, match="class_embed_type"):
    UNetConfig.from_diffusers({"class_embed_type": "timestep"})


def test_sd15_unet_has_859520964_parameters():
  unet = UNet(UNetConfig())  # defaults are SD-1.5's config
  shapes = jax.eval_shape(lambda: unet.init(jax.random.PRNGKey(0), jnp.zeros((1, 64, 64, 4)), jnp.zeros((1,)),
                                            jnp.zeros((1, 77, 768))))
  assert param_count(shapes["params"]) == 859_520_964


@pytest.mark.parametrize("hw,stride,padding", [((2, 2), 1, 1), ((4, 4), 2, 1), ((4, 3), 1, 1), ((5, 3), 2, 0),
                                               ((8, 8), 1, 1)])
def test_conv3x3_is_flax_conv_on_both_paths(hw, stride, padding):
  """Same init as `nn.Conv` (checkpoints and seeds map the same) and the same outputs and gradients, whether
  the map is small enough for the patch matmul (<= 16 positions) or goes to the convolution (8x8)."""
  x = jax.random.normal(jax.random.PRNGKey(0), (2,) + hw + (8,))
  ref = flax.linen.Conv(6, (3, 3), strides=(stride, stride), padding=((padding, padding),) * 2)
  ours = Conv3x3(6, stride, padding)
  params = ours.init(jax.random.PRNGKey(1), x)
  chex.assert_trees_all_equal(params, ref.init(jax.random.PRNGKey(1), x))
  params = jax.tree.map(lambda p: p + 0.1 * jax.random.normal(jax.random.PRNGKey(2), p.shape), params)
  loss = lambda m: lambda p, x: jnp.sum(jnp.sin(m.apply(p, x)))
  chex.assert_trees_all_close(jax.grad(loss(ours), argnums=(0, 1))(params, x),
                              jax.grad(loss(ref), argnums=(0, 1))(params, x), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(ours.apply(params, x), ref.apply(params, x), rtol=1e-5, atol=1e-5)
  uses_conv = "conv_general_dilated" in str(jax.make_jaxpr(ours.apply)(params, x))
  assert uses_conv == (hw[0] * hw[1] > PATCH_MATMUL_MAX_POSITIONS) == (hw == (8, 8))


def test_invalid_remat_policy_is_rejected():
  with pytest.raises(ValueError, match="remat_policy"):
    UNetConfig(remat_policy="save_only_these_names")


TINY = UNetConfig(**CONFIGS["conv_proj_int_heads"])
HOOKS = dataclasses.replace(TINY, reference_attention=True, audio_context_dim=12, expression_context_dim=8)
B, T, S = 1, 2, 16  # one clip of two frames: reference features are repeated over T


@pytest.fixture(scope="module")
def tiny_unet():
  """Plain 2D params, the same plus fresh reference/audio/expression layers, and jitted applies."""
  zeros = lambda *shape: jnp.zeros((B * T,) + shape)
  hooks = jax.jit(lambda r: UNet(HOOKS).init(  # "unsafe_rbg": the init compiles twice as fast
      r, zeros(S, S, 4), zeros(), zeros(1, 32), num_frames=T, audio_context=zeros(3, 12),
      expression_context=zeros(2, 8)))(jax.random.key(0, impl="unsafe_rbg"))["params"]
  flat = flax.traverse_util.flatten_dict(hooks)
  params = flax.traverse_util.unflatten_dict(
      {p: v for p, v in flat.items() if not {"norm_audio", "attn_audio", "norm_expr", "attn_expr"} & set(p)})
  apply = jax.jit(lambda p, x, t, c, ref, audio, expr: UNet(HOOKS).apply(
      {"params": p}, x, t, c, num_frames=T, reference=ref, audio_context=audio, expression_context=expr))
  refnet = jax.jit(lambda p, x, c: ReferenceNet(TINY).apply({"params": {"unet": p}}, x, c))
  return params, hooks, apply, refnet


def _frames(seed):
  rng = np.random.default_rng(seed)
  return (rng.standard_normal((B * T, S, S, 4), np.float32), np.array([17, 17]),
          rng.standard_normal((B * T, 5, 32), np.float32), rng.standard_normal((B * T, 3, 12), np.float32),
          rng.standard_normal((B * T, 2, 8), np.float32))


def _paths(tree):
  return ["/".join(k.key for k in path) for path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]


def _perturb(params, name, seed):
  """Random weights in every `name`/to_out_0 (zero-initialised in a fresh model)."""
  keys = iter(jax.random.split(jax.random.PRNGKey(seed), 1000))
  flat = flax.traverse_util.flatten_dict(params)
  return flax.traverse_util.unflatten_dict(
      {p: 0.1 * jax.random.normal(next(keys), v.shape) if name in p and "to_out_0" in p else v
       for p, v in flat.items()})


def test_fresh_hooks_leave_the_2d_unet_unchanged(tiny_unet):
  params, hooks, apply, _ = tiny_unet
  x, t, ctx, audio, expr = _frames(0)
  plain = jax.jit(lambda p: UNet(TINY).apply({"params": p}, x, t, ctx))(params)
  out = apply(hooks, x, t, ctx, None, audio, expr)
  assert rel_err(out, plain) <= 1e-6
  _, _, _, audio2, expr2 = _frames(1)  # zero-initialised outputs: the conditions have no effect yet
  assert rel_err(apply(hooks, x, t, ctx, None, audio2, expr2), out) == 0.0


def test_audio_and_expression_change_the_output_once_trained(tiny_unet):
  _, hooks, apply, _ = tiny_unet
  trained = _perturb(_perturb(hooks, "attn_audio", 0), "attn_expr", 1)
  x, t, ctx, audio, expr = _frames(0)
  _, _, _, audio2, expr2 = _frames(1)
  out = apply(trained, x, t, ctx, None, audio, expr)
  assert rel_err(apply(trained, x, t, ctx, None, audio2, expr), out) > 1e-3
  assert rel_err(apply(trained, x, t, ctx, None, audio, expr2), out) > 1e-3


def test_reference_features_from_the_reference_net_steer_the_unet(tiny_unet):
  params, hooks, apply, refnet = tiny_unet
  x, t, ctx, audio, expr = _frames(0)
  ref_a, ref_b = _frames(2)[0][:B], _frames(3)[0][:B]
  base = apply(hooks, x, t, ctx, None, audio, expr)
  with_a = apply(hooks, x, t, ctx, refnet(params, ref_a, ctx[:B]), audio, expr)
  with_b = apply(hooks, x, t, ctx, refnet(params, ref_b, ctx[:B]), audio, expr)
  assert rel_err(with_a, base) > 1e-3 and rel_err(with_b, with_a) > 1e-3


def test_reference_features_mirror_every_self_attention(tiny_unet):
  params, _, _, refnet = tiny_unet
  feats = refnet(params, jnp.ones((B, S, S, 4)), jnp.ones((B, 3, 32)))
  attn1 = {p.rsplit("/attn1/", 1)[0] for p in _paths(params) if p.endswith("/attn1/to_q/kernel")}
  assert set(_paths(feats)) == attn1 and len(attn1) == 4
  # Each feature is the normed input of its attn1: [B, h*w, C] with zero mean over channels (LayerNorm).
  f = feats["down_blocks_0"]["attentions_0"]["transformer_blocks_0"]
  chex.assert_shape(f, (B, S * S, 32))
  scale = params["down_blocks_0"]["attentions_0"]["transformer_blocks_0"]["norm1"]
  np.testing.assert_allclose((np.asarray(f) - np.asarray(scale["bias"])).mean(-1), 0.0, atol=1e-5)


def test_bad_reference_features_are_rejected(tiny_unet):
  params, hooks, _, refnet = tiny_unet
  x, t, ctx, _, _ = _frames(0)
  feats = refnet(params, x[:B], ctx[:B])
  run = lambda cfg, p, ref: jax.eval_shape(
      lambda: UNet(cfg).apply({"params": p}, x, t, ctx, num_frames=T, reference=ref))
  with pytest.raises(ValueError, match="reference_attention"):
    run(TINY, params, feats)
  with pytest.raises(ValueError, match="'attentions_0' for up_blocks_1"):
    run(HOOKS, hooks, {**feats, "up_blocks_1": {}})
  with pytest.raises(ValueError, match="one entry per clip"):
    run(HOOKS, hooks, jax.tree.map(lambda f: jnp.concatenate([f, f]), feats))


def test_rematerialised_blocks_give_the_same_outputs_and_gradients(tiny_unet):
  params, _, _, _ = tiny_unet
  x, t, ctx, _, _ = _frames(0)
  grad_fn = lambda cfg: jax.jit(jax.value_and_grad(
      lambda p: jnp.mean(UNet(cfg).apply({"params": p}, x, t, ctx) ** 2)))
  remat = dataclasses.replace(TINY, remat_policy="nothing_saveable")
  (l0, g0), (l1, g1) = grad_fn(TINY)(params), grad_fn(remat)(params)
  assert abs(float(l1) - float(l0)) <= 1e-6 * abs(float(l0))
  chex.assert_trees_all_close(g1, g0, rtol=1e-4, atol=1e-6)
  # The recomputation is in the program handed to XLA (one barrier per rematerialised block); whether the
  # backend uses it to lower peak memory is its choice (XLA:CPU does not: README "Benchmarks").
  barriers = lambda cfg: grad_fn(cfg).lower(params).as_text().count("optimization_barrier")
  assert barriers(TINY) == 0 and barriers(remat) >= 4


def test_bfloat16_compute_stays_close_to_float32(tiny_unet):
  params, _, _, _ = tiny_unet
  x, t, ctx, _, _ = _frames(0)
  run = lambda dtype: jax.jit(lambda p: UNet(TINY, dtype=dtype).apply({"params": p}, x, t, ctx))(params)
  bf16 = run(jnp.bfloat16)
  assert bf16.dtype == jnp.bfloat16
  assert rel_err(bf16.astype(jnp.float32), run(jnp.float32)) < 5e-2
