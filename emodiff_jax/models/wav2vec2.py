"""wav2vec 2.0 speech encoder (Baevski et al. 2020, arXiv 2006.11477) in Flax, for audio conditioning.

Layout and parameter names follow `transformers.Wav2Vec2Model` (numeric segments joined with '_'),
so a HF checkpoint loads with the generic converter (`emodiff_jax.convert.wav2vec2.load_wav2vec2`):

  feature_extractor.conv_layers_N.{conv, layer_norm}   strided Conv1d stack on the raw waveform
  feature_projection.{layer_norm, projection}          512 -> hidden_size
  encoder.pos_conv_embed.conv                          grouped 'same' conv (weight norm folded at load)
  encoder.layer_norm
  encoder.layers_N.{attention.{q,k,v,out}_proj, layer_norm, feed_forward.{intermediate,output}_dense,
                    final_layer_norm}

Both layouts are supported: the base one (post-LN layers, group norm on the first conv only,
`do_stable_layer_norm=False`) and the large/XLSR one (pre-LN layers, layer norm on every conv,
`do_stable_layer_norm=True`). Inference only: no SpecAugment masking, no dropout, no padding mask
(batches hold equal-length waveforms).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from emodiff_jax.models.attention import dot_product_attention

Array = jax.Array

_ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "gelu": lambda x: nn.gelu(x, approximate=False),
    "gelu_new": lambda x: nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: nn.gelu(x, approximate=True),
    "relu": nn.relu,
    "silu": nn.silu,
    "swish": nn.silu,
}

# Epsilon of `Wav2Vec2FeatureExtractor.zero_mean_unit_var_norm`.
NORMALIZE_EPS = 1e-7


def _activation(name: str) -> Callable[[Array], Array]:
  if name not in _ACTIVATIONS:
    raise ValueError(f"unsupported wav2vec2 activation {name!r}; expected one of {sorted(_ACTIVATIONS)}")
  return _ACTIVATIONS[name]


@dataclasses.dataclass(frozen=True)
class Wav2Vec2Config:
  """wav2vec2 hyper-parameters; defaults are facebook/wav2vec2-base (= `transformers.Wav2Vec2Config()`)."""

  conv_dim: tuple[int, ...] = (512,) * 7
  conv_kernel: tuple[int, ...] = (10, 3, 3, 3, 3, 2, 2)
  conv_stride: tuple[int, ...] = (5, 2, 2, 2, 2, 2, 2)
  conv_bias: bool = False
  feat_extract_norm: str = "group"
  feat_extract_activation: str = "gelu"
  hidden_size: int = 768
  num_hidden_layers: int = 12
  num_attention_heads: int = 12
  intermediate_size: int = 3072
  hidden_act: str = "gelu"
  layer_norm_eps: float = 1e-5
  num_conv_pos_embeddings: int = 128
  num_conv_pos_embedding_groups: int = 16
  do_stable_layer_norm: bool = False

  def __post_init__(self):
    if not len(self.conv_dim) == len(self.conv_kernel) == len(self.conv_stride):
      raise ValueError(f"conv_dim/conv_kernel/conv_stride lengths differ: {self}")
    if self.feat_extract_norm not in ("group", "layer"):
      raise ValueError(f"feat_extract_norm must be 'group' or 'layer', got {self.feat_extract_norm!r}")
    if self.hidden_size % self.num_attention_heads:
      raise ValueError(f"hidden_size {self.hidden_size} not divisible by {self.num_attention_heads} heads")
    _activation(self.hidden_act)
    _activation(self.feat_extract_activation)

  @property
  def hop_length(self) -> int:
    """Waveform samples per output frame (320 for every released wav2vec2: 50 Hz at 16 kHz)."""
    return math.prod(self.conv_stride)

  @classmethod
  def from_hf(cls, cfg: Any) -> "Wav2Vec2Config":
    """From a `transformers.Wav2Vec2Config` or its `config.json` dict (missing keys take HF defaults)."""
    if isinstance(cfg, Mapping):
      import transformers  # Only to fill HF defaults for keys absent from an old config.json.

      cfg = transformers.Wav2Vec2Config(**cfg)
    for unsupported in ("add_adapter", "adapter_attn_dim"):
      if getattr(cfg, unsupported, None):
        raise ValueError(f"wav2vec2 config sets {unsupported}={getattr(cfg, unsupported)!r}; adapters are not supported")
    kw = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cls)}
    for name in ("conv_dim", "conv_kernel", "conv_stride"):
      kw[name] = tuple(int(v) for v in kw[name])
    return cls(**kw)


def normalize_waveform(waveform: Array, do_normalize: bool = True) -> Array:
  """Zero-mean unit-variance per utterance, as `transformers.Wav2Vec2FeatureExtractor` does.

  Args:
    waveform: `[..., N]` float waveform(s) at 16 kHz, one utterance per leading index.
    do_normalize: the feature extractor's `do_normalize` (True for wav2vec2-base/large-960h-lv60).

  Returns:
    `[..., N]` float32: `(x - mean) / sqrt(var + 1e-7)` along the last axis, or `x` unchanged.
  """
  x = jnp.asarray(waveform, jnp.float32)
  if not do_normalize:
    return x
  mean = jnp.mean(x, axis=-1, keepdims=True)
  var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
  return (x - mean) / jnp.sqrt(var + NORMALIZE_EPS)


def _layer_norm(eps: float, name: str) -> nn.LayerNorm:
  return nn.LayerNorm(epsilon=eps, use_fast_variance=False, name=name)


class ConvLayer(nn.Module):
  """One feature-extractor layer: VALID strided Conv1d -> optional norm -> activation, `[B, N, C]`."""

  cfg: Wav2Vec2Config
  layer_id: int

  @nn.compact
  def __call__(self, x: Array) -> Array:
    cfg, i = self.cfg, self.layer_id
    x = nn.Conv(cfg.conv_dim[i], (cfg.conv_kernel[i],), strides=(cfg.conv_stride[i],), padding="VALID",
                use_bias=cfg.conv_bias, name="conv")(x)
    if cfg.feat_extract_norm == "layer":
      x = _layer_norm(1e-5, "layer_norm")(x)  # torch nn.LayerNorm default eps, not config eps.
    elif i == 0:  # 'group': GroupNorm with one group per channel, i.e. per-channel norm over time.
      x = nn.GroupNorm(num_groups=cfg.conv_dim[0], epsilon=1e-5, use_fast_variance=False, name="layer_norm")(x)
    return _activation(cfg.feat_extract_activation)(x)


class FeatureExtractor(nn.Module):
  """Waveform `[B, N]` -> conv features `[B, Na, conv_dim[-1]]`."""

  cfg: Wav2Vec2Config

  @nn.compact
  def __call__(self, waveform: Array) -> Array:
    x = waveform[..., None]
    for i in range(len(self.cfg.conv_dim)):
      x = ConvLayer(self.cfg, i, name=f"conv_layers_{i}")(x)
    return x


class FeatureProjection(nn.Module):
  """LayerNorm + Linear to `hidden_size`."""

  cfg: Wav2Vec2Config

  @nn.compact
  def __call__(self, x: Array) -> Array:
    x = _layer_norm(self.cfg.layer_norm_eps, "layer_norm")(x)
    return nn.Dense(self.cfg.hidden_size, name="projection")(x)


class PositionalConvEmbedding(nn.Module):
  """Grouped 'same' Conv1d + activation; an even kernel drops the last output frame like HF's SamePad."""

  cfg: Wav2Vec2Config

  @nn.compact
  def __call__(self, x: Array) -> Array:
    k = self.cfg.num_conv_pos_embeddings
    pad = (k // 2, k // 2 - (1 if k % 2 == 0 else 0))
    x = nn.Conv(self.cfg.hidden_size, (k,), padding=(pad,), feature_group_count=self.cfg.num_conv_pos_embedding_groups,
                name="conv")(x)
    return _activation(self.cfg.feat_extract_activation)(x)


class SelfAttention(nn.Module):
  """Multi-head self-attention with HF's q_proj/k_proj/v_proj/out_proj names (all biased)."""

  cfg: Wav2Vec2Config

  @nn.compact
  def __call__(self, x: Array) -> Array:
    d, h = self.cfg.hidden_size, self.cfg.num_attention_heads
    split = lambda t: t.reshape(t.shape[:-1] + (h, d // h))
    q, k, v = (split(nn.Dense(d, name=f"{n}_proj")(x)) for n in ("q", "k", "v"))
    out = dot_product_attention(q, k, v)
    return nn.Dense(d, name="out_proj")(out.reshape(x.shape))


class FeedForward(nn.Module):
  cfg: Wav2Vec2Config

  @nn.compact
  def __call__(self, x: Array) -> Array:
    x = _activation(self.cfg.hidden_act)(nn.Dense(self.cfg.intermediate_size, name="intermediate_dense")(x))
    return nn.Dense(self.cfg.hidden_size, name="output_dense")(x)


class EncoderLayer(nn.Module):
  """Transformer layer: post-LN (base) or pre-LN (`do_stable_layer_norm`), `[B, Na, D]` -> same."""

  cfg: Wav2Vec2Config

  @nn.compact
  def __call__(self, x: Array) -> Array:
    eps = self.cfg.layer_norm_eps
    attn, ff = SelfAttention(self.cfg, name="attention"), FeedForward(self.cfg, name="feed_forward")
    ln, final_ln = _layer_norm(eps, "layer_norm"), _layer_norm(eps, "final_layer_norm")
    if self.cfg.do_stable_layer_norm:
      x = x + attn(ln(x))
      return x + ff(final_ln(x))
    x = ln(x + attn(x))
    return final_ln(x + ff(x))


class Encoder(nn.Module):
  """Positional conv + transformer layers; returns `(hidden_states, last_hidden_state)`."""

  cfg: Wav2Vec2Config

  @nn.compact
  def __call__(self, x: Array) -> tuple[tuple[Array, ...], Array]:
    x = x + PositionalConvEmbedding(self.cfg, name="pos_conv_embed")(x)
    ln = _layer_norm(self.cfg.layer_norm_eps, "layer_norm")
    if not self.cfg.do_stable_layer_norm:
      x = ln(x)
    hidden = [x]
    for i in range(self.cfg.num_hidden_layers):
      x = EncoderLayer(self.cfg, name=f"layers_{i}")(x)
      hidden.append(x)
    last = ln(x) if self.cfg.do_stable_layer_norm else x
    return tuple(hidden), last


class Wav2Vec2Model(nn.Module):
  """wav2vec2 encoder returning every hidden state.

  `apply({'params': p}, waveform[B, N])` returns a tuple of `num_hidden_layers + 1` arrays
  `[B, Na, hidden_size]`, Na = number of 20 ms frames: the encoder input (embeddings) first, then the
  output of each layer, in the order of transformers 5 `Wav2Vec2Model(output_hidden_states=True)`.
  With `do_stable_layer_norm` transformers 5 returns the last layer's output *before* the final
  `encoder.layer_norm` (transformers 4 returned it after); `normalize_last=True` applies that norm to
  the last element, which then equals HF's `last_hidden_state`. The waveform should already be
  normalised with `normalize_waveform` when the checkpoint's feature extractor has `do_normalize`.
  """

  cfg: Wav2Vec2Config

  @nn.compact
  def __call__(self, waveform: Array, normalize_last: bool = False) -> tuple[Array, ...]:
    x = FeatureExtractor(self.cfg, name="feature_extractor")(waveform)
    x = FeatureProjection(self.cfg, name="feature_projection")(x)
    hidden, last = Encoder(self.cfg, name="encoder")(x)
    return hidden[:-1] + (last,) if normalize_last else hidden

  def num_frames(self, num_samples: int) -> int:
    """Frames produced from a waveform of `num_samples` samples."""
    n = num_samples
    for k, s in zip(self.cfg.conv_kernel, self.cfg.conv_stride):
      n = (n - k) // s + 1
    if n < 1:
      raise ValueError(f"waveform of {num_samples} samples is too short for wav2vec2 (receptive field)")
    return int(n)

