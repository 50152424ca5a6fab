"""The SD VAE (diffusers `AutoencoderKL`; Rombach et al. 2022), channels-last.

    vae = AutoencoderKL(VAEConfig())                  # sd-vae-ft-mse layout
    dist = vae.apply({'params': p}, images, method=vae.encode)     # images [B, H, W, 3] in [-1, 1]
    latents = dist.sample(rng) * vae.config.scaling_factor         # what the UNet sees
    images = vae.apply({'params': p}, latents / vae.config.scaling_factor, method=vae.decode)

Param names follow diffusers (`encoder.down_blocks_i.resnets_j`, `encoder.mid_block.attentions_0.{group_norm,
to_q,to_k,to_v,to_out_0}`, `quant_conv`, `post_quant_conv`, `decoder.up_blocks_i.upsamplers_0.conv`, ...).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Optional

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from emodiff_jax.models.attention import project_attend
from emodiff_jax.models.layers import GroupNorm
from emodiff_jax.models.resnet import Downsample2D, ResnetBlock2D, Upsample2D, conv3x3

Array = jax.Array
EPS = 1e-6  # GroupNorm epsilon everywhere in the SD VAE.


@dataclasses.dataclass(frozen=True)
class VAEConfig:
  """AutoencoderKL hyper-parameters; defaults are SD-1.5's VAE (sd-vae-ft-mse)."""

  in_channels: int = 3
  out_channels: int = 3
  latent_channels: int = 4
  block_out_channels: tuple[int, ...] = (128, 256, 512, 512)
  layers_per_block: int = 2
  norm_num_groups: int = 32
  scaling_factor: float = 0.18215
  mid_block_add_attention: bool = True

  @classmethod
  def from_diffusers(cls, cfg: Mapping[str, Any]) -> "VAEConfig":
    """From a diffusers `AutoencoderKL` config.json dict; unsupported options raise."""
    for key, ok in (("down_block_types", "DownEncoderBlock2D"), ("up_block_types", "UpDecoderBlock2D")):
      if any(t != ok for t in cfg.get(key, [ok])):
        raise ValueError(f"unsupported AutoencoderKL {key}: {cfg[key]}")
    if cfg.get("act_fn", "silu") != "silu" or not cfg.get("use_quant_conv", True) or not cfg.get(
        "use_post_quant_conv", True):
      raise ValueError("unsupported AutoencoderKL options (act_fn / use_quant_conv / use_post_quant_conv)")
    fields = {f.name for f in dataclasses.fields(cls)}
    kw = {k: (tuple(v) if isinstance(v, list) else v) for k, v in cfg.items() if k in fields and v is not None}
    return cls(**kw)


class DiagonalGaussian(flax.struct.PyTreeNode):
  """Latent posterior `N(mean, exp(logvar))`, `[B, h, w, C]`; logvar clipped to [-30, 20] as diffusers."""

  mean: Array
  logvar: Array

  @classmethod
  def from_moments(cls, moments: Array) -> "DiagonalGaussian":
    """`[B, h, w, 2C]` (mean and logvar concatenated on channels) -> posterior with logvar clipped."""
    mean, logvar = jnp.split(moments, 2, axis=-1)
    return cls(mean, jnp.clip(logvar, -30.0, 20.0))

  @property
  def std(self) -> Array:
    return jnp.exp(0.5 * self.logvar)

  def sample(self, rng: jax.Array) -> Array:
    return self.mean + self.std * jax.random.normal(rng, self.mean.shape, self.mean.dtype)

  def mode(self) -> Array:
    return self.mean

  def kl(self) -> Array:
    """KL to N(0, I) per example, `[B]`."""
    return 0.5 * jnp.sum(self.mean**2 + jnp.exp(self.logvar) - 1.0 - self.logvar, axis=(1, 2, 3))


class VAEAttention(nn.Module):
  """Single-head self-attention over pixels with `group_norm` and a residual: `[B, H, W, C]` -> same."""

  groups: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    b, h, w, c = x.shape
    y = GroupNorm(self.groups, epsilon=EPS, dtype=self.dtype, name="group_norm")(x).reshape(b, h * w, c)
    y = project_attend(y, y, heads=1, dim_head=c, out_dim=c, qkv_bias=True, dtype=self.dtype)
    return x + y.reshape(b, h, w, c)


class MidBlock(nn.Module):
  """`UNetMidBlock2D` without time embedding: resnet, attention, resnet."""

  config: VAEConfig
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    c = self.config
    x = ResnetBlock2D(None, c.norm_num_groups, EPS, dtype=self.dtype, name="resnets_0")(x)
    if c.mid_block_add_attention:
      x = VAEAttention(c.norm_num_groups, self.dtype, name="attentions_0")(x)
    return ResnetBlock2D(None, c.norm_num_groups, EPS, dtype=self.dtype, name="resnets_1")(x)


class _Stage(nn.Module):
  """One encoder down block or decoder up block: resnets, then a down- or upsampler."""

  out_channels: int
  num_layers: int
  groups: int
  resample: Optional[str]  # 'down', 'up' or None.
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    for j in range(self.num_layers):
      x = ResnetBlock2D(self.out_channels, self.groups, EPS, dtype=self.dtype, name=f"resnets_{j}")(x)
    if self.resample == "down":
      x = Downsample2D(0, self.dtype, name="downsamplers_0")(x)
    elif self.resample == "up":
      x = Upsample2D(self.dtype, name="upsamplers_0")(x)
    return x


class Encoder(nn.Module):
  """Images `[B, H, W, 3]` -> moments `[B, H/f, W/f, 2*latent]` (before `quant_conv`)."""

  config: VAEConfig
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    c = self.config
    x = conv3x3(c.block_out_channels[0], "conv_in", self.dtype)(x)
    last = len(c.block_out_channels) - 1
    for i, ch in enumerate(c.block_out_channels):
      x = _Stage(ch, c.layers_per_block, c.norm_num_groups, "down" if i < last else None, self.dtype,
                 name=f"down_blocks_{i}")(x)
    x = MidBlock(c, self.dtype, name="mid_block")(x)
    x = nn.silu(GroupNorm(c.norm_num_groups, epsilon=EPS, dtype=self.dtype, name="conv_norm_out")(x))
    return conv3x3(2 * c.latent_channels, "conv_out", self.dtype)(x)


class Decoder(nn.Module):
  """Latents `[B, h, w, latent]` (after `post_quant_conv`) -> images `[B, h*f, w*f, 3]`."""

  config: VAEConfig
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, z: Array) -> Array:
    c = self.config
    x = conv3x3(c.block_out_channels[-1], "conv_in", self.dtype)(z)
    x = MidBlock(c, self.dtype, name="mid_block")(x)
    last = len(c.block_out_channels) - 1
    for i, ch in enumerate(reversed(c.block_out_channels)):
      x = _Stage(ch, c.layers_per_block + 1, c.norm_num_groups, "up" if i < last else None, self.dtype,
                 name=f"up_blocks_{i}")(x)
    x = nn.silu(GroupNorm(c.norm_num_groups, epsilon=EPS, dtype=self.dtype, name="conv_norm_out")(x))
    return conv3x3(c.out_channels, "conv_out", self.dtype)(x)


class AutoencoderKL(nn.Module):
  """KL autoencoder: `encode` gives the latent posterior, `decode` maps latents back to images."""

  config: VAEConfig
  dtype: jnp.dtype = jnp.float32

  def setup(self):
    c = self.config
    self.encoder = Encoder(c, self.dtype)
    self.decoder = Decoder(c, self.dtype)
    self.quant_conv = nn.Conv(2 * c.latent_channels, (1, 1), dtype=self.dtype)
    self.post_quant_conv = nn.Conv(c.latent_channels, (1, 1), dtype=self.dtype)

  def encode(self, images: Array) -> DiagonalGaussian:
    """`[B, H, W, 3]` in [-1, 1] -> posterior over unscaled latents `[B, H/f, W/f, latent]`."""
    return DiagonalGaussian.from_moments(self.quant_conv(self.encoder(images.astype(self.dtype))))

  def decode(self, latents: Array) -> Array:
    """Unscaled latents `[B, h, w, latent]` -> images `[B, h*f, w*f, 3]`."""
    return self.decoder(self.post_quant_conv(latents.astype(self.dtype)))

  def __call__(self, images: Array, rng: Optional[jax.Array] = None) -> tuple[Array, DiagonalGaussian]:
    """Reconstruction through a posterior sample (`rng`) or its mean, and the posterior."""
    dist = self.encode(images)
    return self.decode(dist.mode() if rng is None else dist.sample(rng)), dist
