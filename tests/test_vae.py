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
from emodiff_jax.models.vae import AutoencoderKL, VAEConfig
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
  ours = vae.apply({"params": params}, x, method=vae.encode)
  chex.assert_shape(ours.mean, (2, 16 // f, 16 // f, cfg["latent_channels"]))
  assert rel_err(ours.mean, dist.mean.numpy().transpose(0, 2, 3, 1)) <= 1e-4
  assert rel_err(ours.logvar, dist.logvar.numpy().transpose(0, 2, 3, 1)) <= 1e-4
  assert rel_err(vae.apply({"params": params}, z, method=vae.decode), dec) <= 1e-4


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


def test_missing_vae_key_is_named(tmp_path):
  from safetensors.torch import load_file, save_file

  _save(tmp_path, CONFIGS["two_levels_1layer"])
  path = tmp_path / "diffusion_pytorch_model.safetensors"
  state = load_file(str(path))
  del state["decoder.mid_block.attentions.0.to_k.bias"]
  save_file(state, str(path))
  with pytest.raises(CheckpointMismatchError, match="decoder/mid_block/attentions_0/to_k/bias"):
    load_vae(str(tmp_path))


def test_posterior_sample_and_kl():
  vae = AutoencoderKL(VAEConfig(block_out_channels=(8,), layers_per_block=1, norm_num_groups=4))
  params = vae.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 3)))["params"]
  dist = vae.apply({"params": params}, jnp.ones((4, 8, 8, 3)), method=vae.encode)
  samples = jax.vmap(dist.sample)(jax.random.split(jax.random.PRNGKey(1), 2000))
  np.testing.assert_allclose(samples.mean(0), dist.mean, atol=0.15 * float(dist.std.max()))
  np.testing.assert_allclose(samples.std(0), dist.std, rtol=0.15)
  assert (dist.kl() >= 0).all()


def test_sd_vae_ft_mse_has_83653863_parameters():
  vae = AutoencoderKL(VAEConfig())  # defaults are sd-vae-ft-mse's config
  shapes = jax.eval_shape(lambda: vae.init(jax.random.PRNGKey(0), jnp.zeros((1, 256, 256, 3))))
  assert param_count(shapes["params"]) == 83_653_863
