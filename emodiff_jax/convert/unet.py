"""Load a diffusers `UNet2DConditionModel` folder (SD-1.5 layout) into our `UNet`.

    unet, params = load_unet2d("stable-diffusion-v1-5/unet")
    eps = unet.apply({"params": params}, sample_bhwc, timesteps, encoder_hidden_states)

Keys map one to one through `torch_state.torch_to_flax` (module names are diffusers'); only
`to_out.0` -> `to_out_0` style joins happen, and nothing is dropped.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from emodiff_jax.convert.torch_state import find_weight_file, read_json, read_state_dict, torch_to_flax
from emodiff_jax.models.unet import UNet
from emodiff_jax.models.unet_config import UNetConfig


def unet_template(unet: UNet, sample_size: int = 8) -> Any:
  """Abstract params of `unet` (`jax.eval_shape`, nothing allocated)."""
  c = unet.config
  size = sample_size * 2 ** (len(c.block_out_channels) - 1)
  return jax.eval_shape(
      lambda: unet.init(jax.random.PRNGKey(0), jnp.zeros((1, size, size, c.in_channels)), jnp.zeros((1,)),
                        jnp.zeros((1, 1, c.cross_attention_dim))))["params"]


def load_unet2d(path: str, **config_overrides: Any) -> tuple[UNet, dict]:
  """Reads `path/config.json` and its weights; returns `(UNet, params)` (numpy float32 leaves).

  `config_overrides` set `UNetConfig` fields beyond diffusers' (e.g. `attention_impl`).
  """
  unet = UNet(UNetConfig.from_diffusers(read_json(path), **config_overrides))
  weights = find_weight_file(path)
  params = torch_to_flax(read_state_dict(weights), unet_template(unet), source=weights)
  return unet, params
