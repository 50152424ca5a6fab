"""AnimateDiff motion module: parity with diffusers' AnimateDiffTransformer3D, identity when fresh, and
attention across the frames of a clip only."""

import chex
import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from diffusers.models.unets.unet_motion_model import AnimateDiffTransformer3D

from emodiff_jax.convert.torch_state import torch_to_flax
from emodiff_jax.models.motion_module import MotionConfig, TemporalTransformer, sinusoidal_positions
from tests.parity import randomize_, rel_err

B, T, H, W, C, HEADS, GROUPS, MAX_LEN = 2, 5, 3, 3, 16, 4, 4, 8


def _module(layers: int = 1) -> TemporalTransformer:
  return TemporalTransformer(num_attention_heads=HEADS, num_layers=layers, norm_num_groups=GROUPS,
                             max_seq_length=MAX_LEN)


def _x(seed: int = 0) -> np.ndarray:
  return np.random.default_rng(seed).standard_normal((B * T, H, W, C)).astype(np.float32)


@pytest.fixture(scope="module")
def fresh():
  module = _module()
  params = module.init(jax.random.PRNGKey(0), jnp.zeros((B * T, H, W, C)), num_frames=T)["params"]
  return module, params, jax.jit(lambda p, x: module.apply({"params": p}, x, num_frames=T))


@pytest.mark.parametrize("layers", [1, 2])
def test_matches_diffusers_animatediff_transformer3d(layers):
  torch.manual_seed(0)
  ref = AnimateDiffTransformer3D(num_attention_heads=HEADS, attention_head_dim=C // HEADS, in_channels=C,
                                 num_layers=layers, norm_num_groups=GROUPS, activation_fn="geglu",
                                 positional_embeddings="sinusoidal", num_positional_embeddings=MAX_LEN,
                                 double_self_attention=True).eval()
  randomize_(ref, scale=0.2)  # norms and the zero-initialised proj_out too
  state = {k: v.numpy() for k, v in ref.state_dict().items()}
  module = _module(layers)
  template = jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), jnp.zeros((B * T, H, W, C)),
                                                num_frames=T))["params"]
  pe = [k for k in state if k.endswith("pos_embed.pe")]
  assert pe and all(np.allclose(state[k][0], sinusoidal_positions(MAX_LEN, C), atol=1e-6) for k in pe)
  params = torch_to_flax(state, template, source="AnimateDiffTransformer3D",
                         rename=lambda k: None if k.endswith("pos_embed.pe") else k)
  x = _x()
  with torch.no_grad():
    want = ref(torch.from_numpy(x.transpose(0, 3, 1, 2)), num_frames=T).numpy().transpose(0, 2, 3, 1)
  got = module.apply({"params": params}, x, num_frames=T)
  assert rel_err(got, want) <= 1e-4
  assert rel_err(got, x) > 1e-2  # the randomised module does something


def test_fresh_module_is_identity(fresh):
  _, params, apply = fresh
  x = _x()
  chex.assert_trees_all_close(apply(params, x), x, atol=0, rtol=0)


def test_mixes_frames_within_a_clip_only(fresh):
  _, params, apply = fresh
  flat = flax.traverse_util.flatten_dict(params)
  flat[("proj_out", "kernel")] = 0.1 * jax.random.normal(jax.random.PRNGKey(1), flat[("proj_out", "kernel")].shape)
  trained = flax.traverse_util.unflatten_dict(flat)
  x = _x()
  out = np.asarray(apply(trained, x)).reshape(B, T, H, W, C)
  x2 = x.reshape(B, T, H, W, C).copy()
  x2[0, T - 1, 1, 1] += 1.0  # one pixel of the last frame of clip 0
  out2 = np.asarray(apply(trained, x2.reshape(B * T, H, W, C))).reshape(B, T, H, W, C)
  assert np.abs(out2[0, 0, 1, 1] - out[0, 0, 1, 1]).max() > 1e-3  # frame 0, same position, same clip
  np.testing.assert_array_equal(out2[1], out[1])  # the other clip never sees it


def test_too_many_frames_is_rejected(fresh):
  module, params, _ = fresh
  n = MAX_LEN + 1
  with pytest.raises(ValueError, match="max_seq_length"):
    module.apply({"params": params}, jnp.zeros((n, H, W, C)), num_frames=n)


def test_motion_config_from_diffusers():
  cfg = MotionConfig.from_diffusers(dict(motion_num_attention_heads=[2, 4], motion_layers_per_block=1,
                                         use_motion_mid_block=False, motion_max_seq_length=24))
  assert (cfg.heads(0), cfg.heads(1), cfg.layers(1), cfg.max_seq_length, cfg.use_mid_block) == (2, 4, 1, 24, False)
  with pytest.raises(ValueError, match="conv_in_channels"):
    MotionConfig.from_diffusers(dict(conv_in_channels=4))
