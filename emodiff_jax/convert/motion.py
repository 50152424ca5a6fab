"""Load AnimateDiff motion modules from a diffusers `MotionAdapter` folder and merge them into backbone
params.

MotionAdapter keys `down_blocks.i.motion_modules.j.*`, `mid_block.motion_modules.j.*`,
`up_blocks.i.motion_modules.j.*` land at the same paths under the backbone's `unet` subtree (the
positions of diffusers' `UNetMotionModel`). The `pos_embed.pe` buffers are the fixed sinusoid table that
`motion_module.sinusoidal_positions` recomputes; they are checked against it, not loaded.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np

from emodiff_jax.convert.torch_state import find_weight_file, read_json, read_state_dict, torch_to_flax
from emodiff_jax.models.motion_module import MotionConfig, sinusoidal_positions
from emodiff_jax.models.unet import UNet
from emodiff_jax.models.unet_config import UNetConfig


def motion_template(unet_config: UNetConfig) -> dict:
  """Abstract params of the motion modules only, for a UNet config with `motion` set."""
  c = unet_config
  size = 8 * 2 ** (len(c.block_out_channels) - 1)
  params = jax.eval_shape(lambda: UNet(c).init(
      jax.random.PRNGKey(0), jnp.zeros((2, size, size, c.in_channels)), jnp.zeros((2,)),
      jnp.zeros((2, 1, c.cross_attention_dim)), num_frames=2))["params"]
  flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(params))
  return flax.traverse_util.unflatten_dict({k: v for k, v in flat.items() if any("motion_modules" in p for p in k)})


def load_motion_adapter(path: str, unet_config: UNetConfig) -> tuple[MotionConfig, dict]:
  """Reads a MotionAdapter folder for a UNet of `unet_config`'s 2D layout.

  Returns `(MotionConfig, motion_params)` where `motion_params` holds only the `motion_modules_j`
  subtrees, nested like the backbone's `unet` params.
  """
  cfg = read_json(path)
  adapter_channels = tuple(cfg.get("block_out_channels", (320, 640, 1280, 1280)))
  if adapter_channels != tuple(unet_config.block_out_channels):
    raise ValueError(f"{path}: motion adapter block_out_channels {adapter_channels} do not match the UNet's "
                     f"{tuple(unet_config.block_out_channels)}")
  motion = MotionConfig.from_diffusers(cfg)
  for i, n in enumerate(unet_config.layers):
    if motion.layers(i) != n:
      raise ValueError(f"{path}: motion_layers_per_block {motion.layers_per_block} does not match the UNet's "
                       f"layers_per_block {unet_config.layers_per_block}")
  weights = find_weight_file(path)
  state = read_state_dict(weights)

  def rename(key: str):
    if key.endswith("pos_embed.pe"):
      table = state[key][0]
      if not np.allclose(table, sinusoidal_positions(*table.shape), atol=1e-5):
        raise ValueError(f"{weights}: {key} is not the standard sinusoid table")
      return None
    return key

  template = motion_template(dataclasses.replace(unet_config, motion=motion))
  return motion, torch_to_flax(state, template, source=weights, rename=rename)


def merge_params(base: Any, update: Any) -> dict:
  """`base` with the leaves of `update` (same nesting, a subset of paths) put in; shapes must agree."""
  flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(base))
  for path, value in flax.traverse_util.flatten_dict(flax.core.unfreeze(update)).items():
    if path not in flat or tuple(flat[path].shape) != tuple(value.shape):
      got = None if path not in flat else tuple(flat[path].shape)
      raise ValueError(f"cannot merge {'/'.join(path)} {tuple(value.shape)} into params (there: {got})")
    flat[path] = value
  return flax.traverse_util.unflatten_dict(flat)
