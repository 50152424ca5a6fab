"""Load a diffusers `AutoencoderKL` folder (the SD VAE) into our `AutoencoderKL`.

    vae, params = load_vae("sd-vae-ft-mse")

Old checkpoints name the mid-block attention `query/key/value/proj_attn`; they are renamed to
`to_q/to_k/to_v/to_out.0`. Everything else maps one to one.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp

from emodiff_jax.convert.torch_state import find_weight_file, read_json, read_state_dict, torch_to_flax
from emodiff_jax.models.vae import AutoencoderKL, VAEConfig

_OLD_ATTENTION = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}


def _rename(key: str) -> str:
  return re.sub(r"\.(query|key|value|proj_attn)\.", lambda m: f".{_OLD_ATTENTION[m.group(1)]}.", key)


def load_vae(path: str) -> tuple[AutoencoderKL, dict]:
  """Reads `path/config.json` and its weights; returns `(AutoencoderKL, params)`."""
  vae = AutoencoderKL(VAEConfig.from_diffusers(read_json(path)))
  size = 2 ** len(vae.config.block_out_channels)
  template = jax.eval_shape(lambda: vae.init(jax.random.PRNGKey(0), jnp.zeros((1, size, size, 3))))["params"]
  weights = find_weight_file(path)
  state = read_state_dict(weights)
  # Old attention weights were 1x1 convs `[out, in, 1, 1]`; the renamed Linear layers take `[out, in]`.
  state = {k: (v[:, :, 0, 0] if v.ndim == 4 and "attentions" in k else v) for k, v in state.items()}
  return vae, torch_to_flax(state, template, source=weights, rename=_rename)
