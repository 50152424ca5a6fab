"""The SD VAE and its diffusers loader: parity of encode and decode, old key names, SD size."""

import chex
import diffusers
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from emodiff_jax.convert.torch_state import CheckpointMismatchError, param_count
from emodiff_jax.convert.vae import load_vae
from emodiff_jax.models.vae import AutoencoderKL, DiagonalGaussian, VAEConfig
from tests.parity import randomize_, rel_err

CONFIGS = {
    "two_levels_1layer": dict(block_out_channels=(32, 64), layers_per_block=1, norm_num_groups=8, latent_channels=4),
    "three_levels_2layers": dict(block_out_channels=(16, 32, 32), layers_per_block=2, norm_num_groups=4,
                                 latent_channels=3),
}


def _save(path, cfg, safe=True):
  n = len(cfg["block_out_channels"])
  model = diffusers.AutoencoderKL(down_block_types=("DownEncoderBlock2D",) * n,
                                  up_block_types=("UpDecoderBlock2D",) * n, **cfg).eval()
  randomize_(model)
  model.save_pretrained(path, safe_serialization=safe)
  return model


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_load_vae_matches_diffusers_encode_and_decode(tmp_path, name):
  cfg = CONFIGS[name]
  model = _save(tmp_path, cfg, safe=name == "two_levels_1layer")
  vae, params = load_vae(str(tmp_path))
  f = 2 ** (len(cfg["block_out_channels"]) - 1)
  rng = np.random.default_rng(0)
  x = rng.uniform(-1, 1, (2, 16, 16, 3)).astype(np.float32)
  z = rng.standard_normal((2, 16 // f, 16 // f, cfg["latent_channels"])).astype(np.float32)
  with torch.no_grad():
    dist = model.encode(torch.from_numpy(x.transpose(0, 3, 1, 2))).latent_dist
    dec = model.decode(torch.from_numpy(z.transpose(0, 3, 1, 2))).sample.numpy().transpose(0, 2, 3, 1)
  ours = jax.jit(lambda p, x: vae.apply({"params": p}, x, method=vae.encode))(params, x)
  chex.assert_shape(ours.mean, (2, 16 // f, 16 // f, cfg["latent_channels"]))
  assert rel_err(ours.mean, dist.mean.numpy().transpose(0, 2, 3, 1)) <= 1e-4
  assert rel_err(ours.logvar, dist.logvar.numpy().transpose(0, 2, 3, 1)) <= 1e-4
  ours_dec = jax.jit(lambda p, z: vae.apply({"params": p}, z, method=vae.decode))(params, z)
  assert rel_err(ours_dec, dec) <= 1e-4


def test_old_attention_key_names_load_to_the_same_model(tmp_path):
  from safetensors.torch import load_file, save_file

  _save(tmp_path / "new", CONFIGS["two_levels_1layer"])
  state = load_file(str(tmp_path / "new" / "diffusion_pytorch_model.safetensors"))
  old_names = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}
  old = {}
  for k, v in state.items():
    for new, was in old_names.items():
      if f".attentions.0.{new}." in k:
        k, v = k.replace(f".{new}.", f".{was}."), (v[:, :, None, None] if v.ndim == 2 else v)
    old[k] = v
  (tmp_path / "old").mkdir()
  save_file(old, str(tmp_path / "old" / "diffusion_pytorch_model.safetensors"))
  (tmp_path / "old" / "config.json").write_text((tmp_path / "new" / "config.json").read_text())
  _, new_params = load_vae(str(tmp_path / "new"))
  _, old_params = load_vae(str(tmp_path / "old"))
  chex.assert_trees_all_close(new_params, old_params)


def test_missing_and_misshaped_vae_keys_are_named(tmp_path):
  from safetensors.torch import load_file, save_file

  _save(tmp_path, CONFIGS["two_levels_1layer"])
  path = tmp_path / "diffusion_pytorch_model.safetensors"
  state = load_file(str(path))
  del state["decoder.mid_block.attentions.0.to_k.bias"]
  state["encoder.conv_in.weight"] = state["encoder.conv_in.weight"][:16]
  save_file(state, str(path))
  with pytest.raises(CheckpointMismatchError) as err:
    load_vae(str(tmp_path))
  msg = str(err.value)
  assert str(path) in msg
  assert "missing" in msg and "decoder/mid_block/attentions_0/to_k/bias" in msg
  assert "mis-shaped" in msg and "encoder.conv_in.weight: checkpoint (16, 3, 3, 3)" in msg


def test_posterior_matches_diffusers_and_samples_its_distribution():
  from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

  rng = np.random.default_rng(0)
  moments = rng.standard_normal((2, 3, 3, 8)).astype(np.float32)
  moments[0, 0, 0, 4:] = [-50.0, 25.0, 19.0, -29.0]  # logvar outside [-30, 20] is clipped.
  ref = DiagonalGaussianDistribution(torch.from_numpy(moments.transpose(0, 3, 1, 2)))
  dist = DiagonalGaussian.from_moments(jnp.asarray(moments))
  to_nhwc = lambda t: t.numpy().transpose(0, 2, 3, 1)
  np.testing.assert_allclose(dist.logvar, to_nhwc(ref.logvar), rtol=1e-6)
  np.testing.assert_allclose(dist.std, to_nhwc(ref.std), rtol=1e-5)
  np.testing.assert_array_equal(dist.mode(), to_nhwc(ref.mean))
  np.testing.assert_allclose(dist.kl(), ref.kl().numpy(), rtol=1e-5)

  mean = jnp.broadcast_to(jnp.array([-1.0, 0.0, 2.0]), (4, 64, 64, 3))
  wide = DiagonalGaussian(mean, jnp.broadcast_to(jnp.log(jnp.array([0.25, 1.0, 4.0])), mean.shape))
  x = wide.sample(jax.random.PRNGKey(1))
  np.testing.assert_allclose(x.mean((0, 1, 2)), [-1.0, 0.0, 2.0], atol=0.05)
  np.testing.assert_allclose(x.std((0, 1, 2)), [0.5, 1.0, 2.0], rtol=0.03)
  assert not np.allclose(x, wide.sample(jax.random.PRNGKey(2)))


def test_sd_vae_ft_mse_has_83653863_parameters():
  vae = AutoencoderKL(VAEConfig())  # defaults are sd-vae-ft-mse's config
  shapes = jax.eval_shape(lambda: vae.init(jax.random.PRNGKey(0), jnp.zeros((1, 256, 256, 3))))
  assert param_count(shapes["params"]) == 83_653_863


def test_bfloat16_compute_tracks_float32():
  cfg = VAEConfig(block_out_channels=(16, 32), layers_per_block=1, norm_num_groups=4)
  f32, bf16 = AutoencoderKL(cfg), AutoencoderKL(cfg, dtype=jnp.bfloat16)
  x = jax.random.uniform(jax.random.PRNGKey(0), (1, 16, 16, 3), minval=-1, maxval=1)
  rng = np.random.default_rng(1)  # random params without compiling `init`'s many random ops (slow on CPU).
  shapes = jax.eval_shape(f32.init, jax.random.PRNGKey(1), x)["params"]
  params = jax.tree_util.tree_map(lambda s: rng.normal(0.0, 0.2, s.shape).astype(np.float32), shapes)
  run = lambda m: jax.jit(lambda p, x: m.apply({"params": p}, x))(params, x)[0]
  ref, low = run(f32), run(bf16)
  assert low.dtype == jnp.bfloat16 and ref.dtype == jnp.float32
  assert 0 < rel_err(low, ref) <= 3e-2
