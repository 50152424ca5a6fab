"""ReferenceNet (Hu et al. 2023, "Animate Anyone"; EMOdiffhead Fig. 2b): a 2D UNet of the backbone's
layout run once on the reference latent; the normed inputs of its spatial self-attentions are handed to
the backbone's matching layers, which concatenate them to their keys and values (identity).

It runs at timestep 0 (the reference is clean), as in Animate Anyone's training code. The full UNet is
evaluated so that SD-1.5 checkpoints load unchanged; its output head is unused.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from emodiff_jax.models.unet import UNet
from emodiff_jax.models.unet_config import UNetConfig

Array = jax.Array


class ReferenceNet(nn.Module):
  """`reference_latent [B, h, w, 4]`, `encoder_hidden_states [B, L, D]` -> features for the backbone.

  Params live under `unet` (SD-1.5 keys). Returns the nested dict
  `{'down_blocks_i': {'attentions_j': {'transformer_blocks_k': [B, h_i*w_i, C_i]}}, 'mid_block': ...,
  'up_blocks_i': ...}`, the `reference` argument of the backbone's `UNet`.
  """

  config: UNetConfig
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, reference_latent: Array, encoder_hidden_states: Array) -> dict[str, Any]:
    b = reference_latent.shape[0]
    _, features = UNet(self.config, self.dtype, name="unet")(
        reference_latent, jnp.zeros((b,), jnp.int32), encoder_hidden_states, return_reference_features=True)
    return features
