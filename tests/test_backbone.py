"""The spatio-temporal backbone: parity with diffusers' UNetMotionModel, equality with the frame-wise 2D
UNet when fresh, and every condition (reference, audio, expression) reaching the output."""

import dataclasses

import chex
import diffusers
import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from emodiff_jax.convert.backbone import build_backbone, init_backbone
from emodiff_jax.convert.motion import load_motion_adapter
from emodiff_jax.convert.unet import load_unet2d
from emodiff_jax.models.backbone import Backbone, BackboneConfig, ExpressionProjection
from emodiff_jax.models.motion_module import MotionConfig
from emodiff_jax.models.reference_net import ReferenceNet
from emodiff_jax.models.unet_config import UNetConfig
from emodiff_jax.train.partition import is_stage2_layer
from tests.parity import randomize_, rel_err

UNET = dict(block_out_channels=(32, 64), layers_per_block=1, cross_attention_dim=32, attention_head_dim=4,
            norm_num_groups=8, sample_size=16, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"))
ADAPTERS = {
    "mid_block": dict(motion_num_attention_heads=4, use_motion_mid_block=True),
    "no_mid_block_2heads_2layers": dict(motion_num_attention_heads=(2, 8), use_motion_mid_block=False,
                                        motion_transformer_layers_per_block=2),
}
B, T, S = 2, 4, 16


@pytest.fixture(scope="module")
def unet_dir(tmp_path_factory):
  path = tmp_path_factory.mktemp("unet")
  torch.manual_seed(0)
  unet = diffusers.UNet2DConditionModel(**UNET).eval()
  randomize_(unet)
  unet.save_pretrained(path)
  return str(path), unet


def _inputs(seed=0):
  rng = np.random.default_rng(seed)
  return (rng.standard_normal((B, T, S, S, 4), np.float32), np.array([17, 640]),
          rng.standard_normal((B, 5, UNET["cross_attention_dim"]), np.float32))


@pytest.mark.parametrize("name", [
    "mid_block",
    # The second adapter layout runs in `make test-slow` (~40 s on 2 cores).
    pytest.param("no_mid_block_2heads_2layers", marks=pytest.mark.slow),
])
def test_backbone_with_motion_adapter_matches_unet_motion_model(tmp_path, unet_dir, name):
  path, unet = unet_dir
  adapter = diffusers.MotionAdapter(block_out_channels=(32, 64), motion_layers_per_block=1,
                                    motion_norm_num_groups=8, motion_max_seq_length=16, **ADAPTERS[name])
  randomize_(adapter, seed=1)  # also makes the zero-initialised proj_out matter
  adapter.save_pretrained(tmp_path)
  ref = diffusers.UNetMotionModel.from_unet2d(unet, adapter).eval()
  backbone, params = build_backbone(path, str(tmp_path))
  x, t, ctx = _inputs()
  with torch.no_grad():  # UNetMotionModel expects the context already repeated per frame.
    want = ref(torch.from_numpy(x.transpose(0, 4, 1, 2, 3)), torch.from_numpy(t),
               torch.from_numpy(np.repeat(ctx, T, 0))).sample.numpy().transpose(0, 2, 3, 4, 1)
  got = jax.jit(lambda p: backbone.apply({"params": p}, x, t, ctx))(params)
  chex.assert_shape(got, x.shape)
  assert rel_err(got, want) <= 1e-4


def test_motion_adapter_with_other_channels_is_rejected(tmp_path, unet_dir):
  diffusers.MotionAdapter(block_out_channels=(16, 32), motion_layers_per_block=1, motion_norm_num_groups=8
                          ).save_pretrained(tmp_path)
  with pytest.raises(ValueError, match="block_out_channels"):
    load_motion_adapter(str(tmp_path), UNetConfig.from_diffusers(dict(UNET)))


@pytest.fixture(scope="module")
def full_backbone(unet_dir):
  """A fresh backbone with every extension (motion, reference, audio, expression), from SD-style weights."""
  path, _ = unet_dir
  ext = dataclasses.replace(UNetConfig.from_diffusers(dict(UNET)), motion=MotionConfig(
      num_attention_heads=4, layers_per_block=1, norm_num_groups=8, max_seq_length=16),
      reference_attention=True, audio_context_dim=24, expression_context_dim=32)
  backbone, params = build_backbone(path, config=BackboneConfig(unet=ext, expression_dim=50, expression_tokens=2))
  unet2d, params2d = load_unet2d(path)
  apply = jax.jit(lambda p, x, t, c, ref, audio, expr: backbone.apply(
      {"params": p}, x, t, c, reference=ref, audio_tokens=audio, expression=expr))
  return backbone, params, unet2d, params2d, apply


def test_init_fills_only_the_layers_it_is_not_given(full_backbone):
  backbone, params, _, _, _ = full_backbone
  flat = flax.traverse_util.flatten_dict(params)
  given = {p: v for p, v in flat.items() if not any(k.startswith("motion_modules") for k in p)}
  filled = flax.traverse_util.flatten_dict(
      init_backbone(backbone, jax.random.PRNGKey(3), params=flax.traverse_util.unflatten_dict(given)))
  assert set(filled) == set(flat)
  for p, v in given.items():
    np.testing.assert_array_equal(filled[p], v)
  fresh = [p for p in flat if p not in given and p[-1] == "kernel" and "proj_out" not in p]
  assert fresh and all(filled[p].shape == flat[p].shape and np.std(filled[p]) > 0 for p in fresh)
  assert any(not np.array_equal(filled[p], flat[p]) for p in fresh)  # drawn from the new key
  wrong = dict(given)
  path = next(p for p in given if p[-1] == "kernel")
  wrong[path] = np.zeros(given[path].shape[:-1] + (given[path].shape[-1] + 1,), np.float32)
  with pytest.raises(Exception, match="shape"):
    init_backbone(backbone, jax.random.PRNGKey(3), params=flax.traverse_util.unflatten_dict(wrong))


def _conditions(seed=1):
  rng = np.random.default_rng(seed)
  return (rng.standard_normal((B, T, 3, 24), np.float32), rng.standard_normal((B, T, 50), np.float32))


def _perturb(params, name, seed=0):
  """Random weights in every `name`/to_out_0 (the zero-initialised outputs of a new layer)."""
  key = [jax.random.PRNGKey(seed)]

  def f(path, x):
    if any(name in k for k in path) and "to_out_0" in path:
      key[0], sub = jax.random.split(key[0])
      return 0.1 * jax.random.normal(sub, x.shape)
    return x

  flat = flax.traverse_util.flatten_dict(params)
  return flax.traverse_util.unflatten_dict({p: f(p, v) for p, v in flat.items()})


def test_fresh_backbone_equals_framewise_2d_unet(full_backbone):
  _, params, unet2d, params2d, apply = full_backbone
  x, t, ctx = _inputs()
  audio, expr = _conditions()
  got = apply(params, x, t, ctx, None, audio, expr)
  frames = jax.jit(lambda p: unet2d.apply({"params": p}, x.reshape(B * T, S, S, 4), np.repeat(t, T),
                                          np.repeat(ctx, T, 0)))(params2d)
  assert rel_err(got, np.asarray(frames).reshape(x.shape)) <= 1e-5


def test_each_condition_changes_output_once_its_layers_are_trained(full_backbone):
  backbone, params, _, params2d, apply = full_backbone
  x, t, ctx = _inputs()
  audio, expr = _conditions()
  audio2, expr2 = _conditions(seed=2)
  base = apply(params, x, t, ctx, None, audio, expr)
  # Zero-initialised outputs: audio and expression have no effect yet.
  assert rel_err(apply(params, x, t, ctx, None, audio2, expr2), base) == 0.0
  trained = _perturb(_perturb(params, "attn_audio"), "attn_expr", seed=1)
  out = apply(trained, x, t, ctx, None, audio, expr)
  assert rel_err(apply(trained, x, t, ctx, None, audio2, expr), out) > 1e-3
  assert rel_err(apply(trained, x, t, ctx, None, audio, expr2), out) > 1e-3
  # Reference attention needs no new weights: features of another image change the output.
  refnet = ReferenceNet(UNetConfig.from_diffusers(dict(UNET)))
  ref_latent = np.random.default_rng(3).standard_normal((B, S, S, 4), np.float32)
  feats = refnet.apply({"params": {"unet": params2d}}, ref_latent, ctx)
  with_ref = apply(params, x, t, ctx, feats, audio, expr)
  assert rel_err(with_ref, base) > 1e-3
  feats2 = refnet.apply({"params": {"unet": params2d}}, ref_latent[::-1], ctx)
  assert rel_err(apply(params, x, t, ctx, feats2, audio, expr), with_ref) > 1e-3


def test_motion_modules_mix_frames_within_a_clip_only(full_backbone):
  _, params, _, _, apply = full_backbone
  trained = _perturb(params, "motion_modules")
  flat = flax.traverse_util.flatten_dict(trained)
  trained = flax.traverse_util.unflatten_dict(
      {p: (0.1 * jnp.ones_like(v) if any("motion_modules" in k for k in p) and "proj_out" in p else v) for p, v in flat.items()})
  x, t, ctx = _inputs()
  out = apply(trained, x, t, ctx, None, None, None)
  x2 = x.copy()
  x2[0, 3] += 1.0  # change the last frame of clip 0
  out2 = np.asarray(apply(trained, x2, t, ctx, None, None, None))
  assert np.abs(out2[0, 0] - out[0, 0]).max() > 1e-3  # frame 0 of the same clip sees it
  np.testing.assert_array_equal(out2[1], out[1])  # the other clip does not


@pytest.mark.parametrize("injection", ["add_to_audio", "none"])
def test_expression_injection_modes(full_backbone, injection):
  """The other injection modes on the full backbone's weights ('cross_attn' is covered above)."""
  backbone, params, _, _, _ = full_backbone
  c = backbone.config
  backbone = Backbone(dataclasses.replace(c, expression_injection=injection))
  trained = _perturb(params, "attn_audio")
  if injection == "add_to_audio":  # one token of the audio width, output layer perturbed from its zero init.
    proj = ExpressionProjection(1, c.unet.audio_context_dim, c.expression_hidden_dim)
    trained["expression_proj"] = proj.init(jax.random.PRNGKey(2), jnp.zeros((1, c.expression_dim)))["params"]
  x, t, ctx = _inputs()
  audio, expr = _conditions()
  run = jax.jit(lambda e: backbone.apply({"params": trained}, x, t, ctx, audio_tokens=audio, expression=e))
  changed = rel_err(run(expr), run(expr * -1.0))
  assert changed > 1e-3 if injection == "add_to_audio" else changed == 0.0
  if injection == "add_to_audio":
    with pytest.raises(ValueError, match="needs audio_tokens"):
      backbone.apply({"params": trained}, x, t, ctx, expression=expr)


def test_expression_time_embedding(full_backbone):
  """The expression also added to the time embedding: no effect at init (zero output layer), then it changes
  every frame's output, and it is a stage-2 layer that a stage-1 checkpoint without it still loads beside."""
  backbone, params, _, _, _ = full_backbone
  c = backbone.config
  timed = Backbone(dataclasses.replace(c, expression_time_embedding=True))
  x, t, ctx = _inputs()
  audio, expr = _conditions()
  filled = init_backbone(timed, jax.random.PRNGKey(4), params=params)  # only the new projection is drawn
  assert set(filled) == set(params) | {"expression_proj_time"}
  chex.assert_shape(filled["expression_proj_time"]["out"]["kernel"], (c.expression_hidden_dim,
                                                                      4 * c.unet.block_out_channels[0]))
  run = jax.jit(lambda p, e: timed.apply({"params": p}, x, t, ctx, audio_tokens=audio, expression=e))
  base = backbone.apply({"params": params}, x, t, ctx, audio_tokens=audio, expression=expr)
  assert rel_err(run(filled, expr), base) <= 1e-5 and rel_err(run(filled, -expr), run(filled, expr)) == 0.0
  out = filled["expression_proj_time"]["out"]
  trained = {**filled, "expression_proj_time": {**filled["expression_proj_time"],
                                                "out": {**out, "kernel": 0.1 * jnp.ones_like(out["kernel"])}}}
  got, flipped = np.asarray(run(trained, expr)), np.asarray(run(trained, -expr))
  assert all(rel_err(flipped[:, i], got[:, i]) > 1e-3 for i in range(T))
  assert is_stage2_layer(("backbone", "expression_proj_time", "out", "kernel"))
  # Injection 'none' ignores the expression on this pathway too (the no-expression ablation sets one field).
  off = Backbone(dataclasses.replace(c, expression_injection="none", expression_time_embedding=True))
  assert "expression_proj_time" not in init_backbone(off, jax.random.PRNGKey(5), params=params)


def test_invalid_expression_injection_is_rejected():
  with pytest.raises(ValueError, match="expression_injection"):
    BackboneConfig(unet=UNetConfig(), expression_injection="concat")
  with pytest.raises(ValueError, match="expression_context_dim"):
    BackboneConfig(unet=UNetConfig(), expression_injection="cross_attn")
