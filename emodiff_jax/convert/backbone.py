"""Build backbone params from public checkpoints: SD-1.5 UNet (+ AnimateDiff motion modules).

    backbone, params = build_backbone("sd15/unet", "animatediff-motion-adapter", config=BackboneConfig(...))

The 2D layers come from the UNet folder, the motion modules from the adapter (or fresh, zero-initialised
outputs, when none is given); the audio/expression attention and the expression projection are
initialised fresh with zero-initialised outputs, so the result equals the frame-wise 2D UNet (with the
adapter: diffusers' `UNetMotionModel`) until trained.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import flax
import jax
import jax.numpy as jnp

from emodiff_jax.convert.motion import load_motion_adapter, merge_params
from emodiff_jax.convert.torch_state import read_json
from emodiff_jax.convert.unet import load_unet2d
from emodiff_jax.models.backbone import Backbone, BackboneConfig
from emodiff_jax.models.motion_module import MotionConfig
from emodiff_jax.models.unet_config import UNetConfig


def init_backbone(backbone: Backbone, rng: jax.Array, num_frames: int = 2, params: Optional[dict] = None) -> dict:
  """Fresh params for every layer of `backbone` (all conditions present so every layer exists).

  With `params` (part of the tree, e.g. converted SD-1.5 layers), those keep their values and only the
  layers missing from it are initialised, so the compiled initialiser draws random numbers for those alone:
  XLA's compile time grows with the number of random draws (one per param tensor), and the full init of
  `benchmarks/train_step.py`'s `small` backbone took over two minutes to compile, on CPU and on an H200.
  """
  c = backbone.config
  u = c.unet
  size = 8 * 2 ** (len(u.block_out_channels) - 1)
  inputs = (jnp.zeros((1, num_frames, size, size, u.in_channels)), jnp.zeros((1,)),
            jnp.zeros((1, 1, u.cross_attention_dim)))
  audio = None if u.audio_context_dim is None else jnp.zeros((1, num_frames, 1, u.audio_context_dim))
  conditions = dict(audio_tokens=audio, expression=jnp.zeros((1, num_frames, c.expression_dim)))
  if params is None:
    return jax.jit(lambda r: backbone.init(r, *inputs, **conditions))(rng)["params"]
  fill = lambda p, r: backbone.apply({"params": p}, *inputs, **conditions, rngs={"params": r},
                                     mutable=["params"])[1]["params"]
  return jax.jit(fill)(params, rng)


def build_backbone(unet2d_path: str, motion_path: Optional[str] = None, config: Optional[BackboneConfig] = None,
                   rng: Optional[jax.Array] = None) -> tuple[Backbone, dict]:
  """Backbone params from a diffusers UNet folder and, optionally, a MotionAdapter folder.

  `config` supplies the backbone extensions (`unet.motion`, `reference_attention`, `audio_context_dim`,
  `expression_context_dim`, expression settings); its 2D fields are replaced by the checkpoint's. With
  `motion_path`, the adapter's motion config is used (an explicit, different `config.unet.motion` is an
  error). Default `config`: reference attention on, audio and expression off, motion from the adapter.
  """
  unet2d = UNetConfig.from_diffusers(read_json(unet2d_path))
  config = config or BackboneConfig(unet=dataclasses.replace(unet2d, reference_attention=True),
                                    expression_injection="none")
  ext = config.unet
  motion: Optional[MotionConfig] = ext.motion
  motion_params = None
  if motion_path is not None:
    adapter_motion, motion_params = load_motion_adapter(motion_path, unet2d)
    if motion is not None and motion != adapter_motion:
      raise ValueError(f"{motion_path}: adapter motion config {adapter_motion} differs from config's {motion}")
    motion = adapter_motion
  unet = dataclasses.replace(unet2d, motion=motion, reference_attention=ext.reference_attention,
                             audio_context_dim=ext.audio_context_dim,
                             expression_context_dim=ext.expression_context_dim, attention_impl=ext.attention_impl,
                             remat_policy=ext.remat_policy)
  backbone = Backbone(dataclasses.replace(config, unet=unet))
  rng = jax.random.PRNGKey(0) if rng is None else rng
  params = jax.eval_shape(lambda r: init_backbone(backbone, r), rng)  # the tree to fill, shapes only
  _, unet_params = load_unet2d(unet2d_path)
  params = merge_params(params, {"unet": unet_params})
  if motion_params is not None:
    params = merge_params(params, {"unet": motion_params})
  loaded = {k: v for k, v in flax.traverse_util.flatten_dict(params).items() if not isinstance(v, jax.ShapeDtypeStruct)}
  return backbone, init_backbone(backbone, rng, params=flax.traverse_util.unflatten_dict(loaded))
