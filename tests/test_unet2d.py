"""The 2D UNet and its diffusers loader: numerical parity, error reporting, SD-1.5 size."""


import chex
import diffusers
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from emodiff_jax.convert.torch_state import CheckpointMismatchError, param_count
from emodiff_jax.convert.unet import load_unet2d
from emodiff_jax.models.reference_net import ReferenceNet
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
  out = unet.apply({"params": params}, x, t, ctx)
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


@pytest.fixture(scope="module")
def tiny_unet():
  cfg = UNetConfig(**{k: v for k, v in CONFIGS["conv_proj_int_heads"].items()})
  params = UNet(cfg).init(jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 4)), jnp.zeros((1,)), jnp.zeros((1, 1, 32)))
  return cfg, params["params"]


def _paths(tree):
  return ["/".join(k.key for k in path) for path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]


def test_reference_features_mirror_every_self_attention(tiny_unet):
  cfg, params = tiny_unet
  feats = ReferenceNet(cfg).apply({"params": {"unet": params}}, jnp.ones((1, 16, 16, 4)), jnp.ones((1, 3, 32)))
  attn1 = {p.rsplit("/attn1/", 1)[0] for p in _paths(params) if p.endswith("/attn1/to_q/kernel")}
  assert set(_paths(feats)) == attn1 and len(attn1) == 4
  # Each feature is the normed input of its attn1: [B, h*w, C] with zero mean over channels (LayerNorm).
  f = feats["down_blocks_0"]["attentions_0"]["transformer_blocks_0"]
  chex.assert_shape(f, (1, 16 * 16, 32))
  scale = params["down_blocks_0"]["attentions_0"]["transformer_blocks_0"]["norm1"]
  np.testing.assert_allclose((np.asarray(f) - np.asarray(scale["bias"])).mean(-1), 0.0, atol=1e-5)


def test_bfloat16_compute_stays_close_to_float32(tiny_unet):
  cfg, params = tiny_unet
  x, t, ctx = _inputs(CONFIGS["conv_proj_int_heads"])
  f32 = UNet(cfg).apply({"params": params}, x, t, ctx)
  bf16 = UNet(cfg, dtype=jnp.bfloat16).apply({"params": params}, x, t, ctx)
  assert bf16.dtype == jnp.bfloat16
  assert rel_err(bf16.astype(jnp.float32), f32) < 5e-2
