"""The spatio-temporal backbone of EMOdiffhead (Fig. 2a): the SD-1.5 UNet applied per frame, with
AnimateDiff motion modules, reference attention on ReferenceNet features, audio cross-attention on
per-frame wav2vec2 tokens and the expression condition from per-frame FLAME vectors.

Param layout: `{'unet': <UNet params: SD-1.5 keys + motion_modules_j, attn_audio, attn_expr>,
'expression_proj': {'hidden', 'out'}}`, plus `'expression_proj_time'` with `expression_time_embedding`.

Expression injection (`BackboneConfig.expression_injection`, for ablations):
- `'cross_attn'` (default): the vector is projected to `expression_tokens` tokens attended by
  `attn_expr` in every spatial transformer block (zero-initialised output, so training starts from the
  2D UNet's behaviour);
- `'add_to_audio'`: projected to one token of the audio width and added to every audio token of the
  frame (its output layer is zero-initialised, so adding it leaves a trained audio path unchanged);
- `'none'`: expressions are ignored, by the time embedding too (the no-expression ablation sets one
  field).

`expression_time_embedding` (with `'cross_attn'` or `'add_to_audio'`) also adds a per-frame projection of
the vector to the time embedding, the global pathway every ResNet block reads (like diffusers' class
embedding), beside the attention that reads it per position; its output layer is zero-initialised.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from emodiff_jax.models.unet import UNet
from emodiff_jax.models.unet_config import UNetConfig

Array = jax.Array
INJECTIONS = ("cross_attn", "add_to_audio", "none")


@dataclasses.dataclass(frozen=True)
class BackboneConfig:
  """A `UNetConfig` with its backbone extensions set, plus the expression condition."""

  unet: UNetConfig
  expression_dim: int = 50
  expression_tokens: int = 4
  expression_hidden_dim: int = 256
  expression_injection: str = "cross_attn"
  expression_time_embedding: bool = False

  def __post_init__(self):
    if self.expression_injection not in INJECTIONS:
      raise ValueError(f"expression_injection must be one of {INJECTIONS}, got {self.expression_injection!r}")
    if self.expression_injection == "cross_attn" and self.unet.expression_context_dim is None:
      raise ValueError("expression_injection='cross_attn' needs unet.expression_context_dim")
    if self.expression_injection == "add_to_audio" and self.unet.audio_context_dim is None:
      raise ValueError("expression_injection='add_to_audio' needs unet.audio_context_dim")


class ExpressionProjection(nn.Module):
  """Per-frame MLP: `[B, T, De]` -> `[B, T, K, C]`."""

  tokens: int
  features: int
  hidden: int
  zero_init_out: bool = False
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, e: Array) -> Array:
    h = nn.silu(nn.Dense(self.hidden, dtype=self.dtype, name="hidden")(e.astype(self.dtype)))
    init = nn.initializers.zeros if self.zero_init_out else nn.initializers.lecun_normal()
    out = nn.Dense(self.tokens * self.features, kernel_init=init, dtype=self.dtype, name="out")(h)
    return out.reshape(e.shape[:-1] + (self.tokens, self.features))


class Backbone(nn.Module):
  """Denoiser on latent clips `[B, T, h, w, 4]`."""

  config: BackboneConfig
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, latents: Array, timesteps: Array, encoder_hidden_states: Array, *,
               reference: Optional[dict[str, Any]] = None, audio_tokens: Optional[Array] = None,
               expression: Optional[Array] = None) -> Array:
    """Predicts noise for every frame.

    Args:
      latents: `[B, T, h, w, C]`.
      timesteps: `[B]` (or a scalar), shared by the frames of a clip.
      encoder_hidden_states: `[B, L, D]` context of the SD cross-attention, shared by the frames.
      reference: ReferenceNet features (entries `[B, L, C]`), or None for no reference attention; ignored
        when the config has no reference attention (the ablation `configs/ablations/no_reference_attention.py`).
      audio_tokens: `[B, T, Ka, Ca]` from `AudioProjection`, or None.
      expression: `[B, T, De]` FLAME expression vectors, or None.

    Returns:
      `[B, T, h, w, C]`.
    """
    c = self.config
    b, t = latents.shape[:2]
    frames = lambda a: None if a is None else a.reshape((b * t,) + a.shape[2:])
    audio = frames(audio_tokens)
    expr_tokens = time_emb = None
    if expression is not None and c.expression_injection != "none":
      if expression.shape[-1] != c.expression_dim:
        raise ValueError(f"expression vectors have {expression.shape[-1]} dims, config says {c.expression_dim}")
      if c.expression_injection == "cross_attn":
        expr_tokens = frames(ExpressionProjection(c.expression_tokens, c.unet.expression_context_dim,
                                                  c.expression_hidden_dim, dtype=self.dtype,
                                                  name="expression_proj")(expression))
      else:
        if audio is None:
          raise ValueError("expression_injection='add_to_audio' needs audio_tokens")
        audio = audio + frames(ExpressionProjection(1, c.unet.audio_context_dim, c.expression_hidden_dim,
                                                    zero_init_out=True, dtype=self.dtype,
                                                    name="expression_proj")(expression))
      if c.expression_time_embedding:
        time_emb = frames(ExpressionProjection(1, 4 * c.unet.block_out_channels[0], c.expression_hidden_dim,
                                               zero_init_out=True, dtype=self.dtype,
                                               name="expression_proj_time")(expression))[:, 0]
    out = UNet(c.unet, self.dtype, name="unet")(
        latents.reshape((b * t,) + latents.shape[2:]),
        jnp.repeat(jnp.broadcast_to(jnp.asarray(timesteps), (b,)), t),
        jnp.repeat(encoder_hidden_states, t, axis=0),
        num_frames=t, reference=reference if c.unet.reference_attention else None, audio_context=audio,
        expression_context=expr_tokens, added_time_embedding=time_emb)
    return out.reshape((b, t) + out.shape[1:])
