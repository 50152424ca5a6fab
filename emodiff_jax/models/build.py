"""Modules of the whole system from a config's `model` section, and their abstract parameters.

`build_models(config.model)` gives the five networks of the paper's figure (VAE, ReferenceNet,
backbone, wav2vec2, audio projection); `abstract_params` initialises them under `jax.eval_shape`, so
paper-scale models are sized without allocating a single weight.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from emodiff_jax.models.audio_projection import AudioProjection, AudioProjectionConfig
from emodiff_jax.models.backbone import Backbone, BackboneConfig
from emodiff_jax.models.motion_module import MotionConfig
from emodiff_jax.models.reference_net import ReferenceNet
from emodiff_jax.models.unet_config import UNetConfig
from emodiff_jax.models.vae import AutoencoderKL, VAEConfig
from emodiff_jax.models.wav2vec2 import Wav2Vec2Config, Wav2Vec2Model


@dataclasses.dataclass(frozen=True)
class Models:
  """The networks of EMOdiffhead (the expression GAN lives in `emodiff_jax.emotion`)."""

  vae: AutoencoderKL
  reference_net: ReferenceNet
  backbone: Backbone
  wav2vec2: Wav2Vec2Model
  audio_proj: AudioProjection


def _tuples(d: Any) -> dict:
  """ConfigDict/dict -> dict with lists turned into tuples (dataclass fields are hashable)."""
  d = d.to_dict() if isinstance(d, ml_collections.ConfigDict) else dict(d)
  return {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}


def build_models(model: ml_collections.ConfigDict, dtype: Any = jnp.float32) -> Models:
  """Builds every network from a `model` config section (see `configs/common.py`).

  `dtype` is the compute dtype of the VAE, ReferenceNet and backbone (e.g. bfloat16 for mixed
  precision); params are float32 whatever it is. wav2vec2 and the audio projection compute in float32.
  """
  unet_fields = _tuples(model.unet)
  for k in ("in_channels", "out_channels"):  # the UNets denoise the VAE's latents: their widths follow it
    if unet_fields.setdefault(k, model.vae.latent_channels) != model.vae.latent_channels:
      raise ValueError(f"model.unet.{k}={unet_fields[k]} but model.vae.latent_channels="
                       f"{model.vae.latent_channels}: the UNets denoise the VAE's latents")
  unet2d = UNetConfig(**unet_fields)
  backbone_unet = dataclasses.replace(
      unet2d,
      motion=None if model.motion is None else MotionConfig(**_tuples(model.motion)),  # None: no temporal layers
      reference_attention=model.reference_attention,
      audio_context_dim=model.audio_proj.context_dim,
      expression_context_dim=unet2d.cross_attention_dim if model.expression.injection == "cross_attn" else None,
  )
  backbone = BackboneConfig(
      unet=backbone_unet,
      expression_dim=model.expression.dim,
      expression_tokens=model.expression.tokens,
      expression_injection=model.expression.injection,
      expression_time_embedding=model.expression.get("time_embedding", False),  # absent in older bundles
  )
  return Models(
      vae=AutoencoderKL(VAEConfig(**_tuples(model.vae)), dtype),
      reference_net=ReferenceNet(unet2d, dtype),
      backbone=Backbone(backbone, dtype),
      wav2vec2=Wav2Vec2Model(Wav2Vec2Config(**_tuples(model.wav2vec2))),
      audio_proj=AudioProjection(AudioProjectionConfig(**_tuples(model.audio_proj))),
  )


def _init_fns(models: Models, model: ml_collections.ConfigDict, num_frames: int) -> dict[str, Any]:
  """`{name: key -> variables}` initialising each network on dummy inputs of the config's shapes."""
  res = model.resolution
  latent = res // 2 ** (len(model.vae.block_out_channels) - 1)
  ch = model.vae.latent_channels
  ctx = model.unet.cross_attention_dim
  w2v = models.wav2vec2.cfg
  num_layers = w2v.num_hidden_layers + 1
  ap = models.audio_proj.cfg
  audio_layers = len(ap.layers) if ap.layers is not None else num_layers
  f32 = jnp.float32
  samples = num_frames * 640
  return {
      "vae": lambda key: models.vae.init(key, jnp.zeros((1, res, res, 3), f32)),
      "reference_net": lambda key: models.reference_net.init(
          key, jnp.zeros((1, latent, latent, ch), f32), jnp.zeros((1, 1, ctx), f32)),
      "backbone": lambda key: models.backbone.init(
          key, jnp.zeros((1, num_frames, latent, latent, ch), f32), jnp.zeros((1,), jnp.int32),
          jnp.zeros((1, 1, ctx), f32),
          audio_tokens=jnp.zeros((1, num_frames, ap.num_tokens, ap.context_dim), f32),
          expression=jnp.zeros((1, num_frames, model.expression.dim), f32)),
      "wav2vec2": lambda key: models.wav2vec2.init(key, jnp.zeros((1, samples), f32)),
      "audio_proj": lambda key: models.audio_proj.init(
          key, jnp.zeros((1, 2 * num_frames, audio_layers, w2v.hidden_size), f32), num_frames),
  }


def init_params(models: Models, model: ml_collections.ConfigDict, rng: jax.Array, num_frames: int = 2
                ) -> dict[str, Any]:
  """Random params of every network, `{name: params}`, deterministic in `rng`.

  The initialisers draw from an `rbg` key seeded from `fold_in(rng, i)` for network i: XLA compiles
  `RngBitGenerator` far faster than threefry's unrolled rounds (a jitted init of the test model compiles
  in 42 s instead of 153 s on 2 CPU cores). The param shapes do not depend on `num_frames`.
  """
  out = {}
  for i, (name, fn) in enumerate(_init_fns(models, model, num_frames).items()):
    seed = jax.random.bits(jax.random.fold_in(rng, i), (), jnp.uint32)
    out[name] = fn(jax.random.key(seed, impl="rbg"))["params"]
  return out


def abstract_params(models: Models, model: ml_collections.ConfigDict, num_frames: int) -> dict[str, Any]:
  """`jax.ShapeDtypeStruct` param trees of every network, via `jax.eval_shape` (nothing allocated)."""
  key = jax.random.PRNGKey(0)
  return {name: jax.eval_shape(fn, key)["params"] for name, fn in _init_fns(models, model, num_frames).items()}
