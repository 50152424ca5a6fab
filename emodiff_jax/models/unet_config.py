"""Hyper-parameters of the SD-1.5-style UNets (diffusers `UNet2DConditionModel` fields) and of the
spatio-temporal extensions the backbone adds on top of them."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Optional, Union

import jax

from emodiff_jax.models.motion_module import MotionConfig

IntOrTuple = Union[int, tuple[int, ...]]

# `jax.checkpoint_policies` members that are policies themselves (the others build one from names).
REMAT_POLICIES = tuple(n for n in dir(jax.checkpoint_policies)
                       if n.endswith("_saveable") or n.startswith("checkpoint_dots"))

# diffusers options whose defaults we implement; any other value is rejected by `from_diffusers`.
_REQUIRED_DEFAULTS = {
    "center_input_sample": False,
    "dual_cross_attention": False,
    "class_embed_type": None,
    "addition_embed_type": None,
    "num_class_embeds": None,
    "encoder_hid_dim": None,
    "encoder_hid_dim_type": None,
    "resnet_time_scale_shift": "default",
    "resnet_skip_time_act": False,
    "resnet_out_scale_factor": 1.0,
    "time_embedding_type": "positional",
    "time_embedding_dim": None,
    "time_embedding_act_fn": None,
    "timestep_post_act": None,
    "time_cond_proj_dim": None,
    "conv_in_kernel": 3,
    "conv_out_kernel": 3,
    "attention_type": "default",
    "act_fn": "silu",
    "mid_block_type": "UNetMidBlock2DCrossAttn",
    "mid_block_scale_factor": 1,
    "only_cross_attention": False,
    "cross_attention_norm": None,
    "reverse_transformer_layers_per_block": None,
}

_FIELDS_FROM_DIFFUSERS = (
    "in_channels", "out_channels", "block_out_channels", "down_block_types", "up_block_types",
    "layers_per_block", "attention_head_dim", "num_attention_heads", "cross_attention_dim",
    "transformer_layers_per_block", "use_linear_projection", "norm_num_groups", "norm_eps",
    "flip_sin_to_cos", "freq_shift", "downsample_padding",
)


def per_block(value: IntOrTuple, n: int, name: str) -> tuple[int, ...]:
  """An int broadcast to `n` blocks, or a tuple checked to have `n` entries."""
  if isinstance(value, int):
    return (value,) * n
  if len(value) != n:
    raise ValueError(f"{name} has {len(value)} entries, expected one per block ({n})")
  return tuple(value)


@dataclasses.dataclass(frozen=True)
class UNetConfig:
  """An SD-1.5 UNet (defaults) plus optional backbone extensions (all off: the plain diffusers UNet).

  `attention_head_dim` keeps diffusers' quirk: when `num_attention_heads` is None it is the number of
  heads (8 in SD-1.5), and the head size is `channels // heads`.
  """

  in_channels: int = 4
  out_channels: int = 4
  block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280)
  down_block_types: tuple[str, ...] = ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",)
  up_block_types: tuple[str, ...] = ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3
  layers_per_block: IntOrTuple = 2
  attention_head_dim: IntOrTuple = 8
  num_attention_heads: Optional[IntOrTuple] = None
  cross_attention_dim: int = 768
  transformer_layers_per_block: IntOrTuple = 1
  use_linear_projection: bool = False
  norm_num_groups: int = 32
  norm_eps: float = 1e-5
  flip_sin_to_cos: bool = True
  freq_shift: int = 0
  downsample_padding: int = 1
  attention_impl: Optional[str] = None  # models/attention.py: None is 'chunked' on CPU, 'xla' elsewhere
  # Rematerialise every down/mid/up block in the backward pass (`nn.remat`) with this
  # `jax.checkpoint_policies` policy, e.g. "nothing_saveable" or "dots_with_no_batch_dims_saveable".
  remat_policy: Optional[str] = None
  # Backbone extensions.
  motion: Optional[MotionConfig] = None
  reference_attention: bool = False
  audio_context_dim: Optional[int] = None
  expression_context_dim: Optional[int] = None

  def __post_init__(self):
    n = len(self.block_out_channels)
    if len(self.down_block_types) != n or len(self.up_block_types) != n:
      raise ValueError(f"need one down and one up block type per entry of block_out_channels ({n})")
    for name in ("layers_per_block", "attention_head_dim", "transformer_layers_per_block"):
      per_block(getattr(self, name), n, name)
    if self.remat_policy is not None and self.remat_policy not in REMAT_POLICIES:
      raise ValueError(f"remat_policy={self.remat_policy!r} is not one of {REMAT_POLICIES}")

  @property
  def checkpoint_policy(self) -> Optional[Callable[..., bool]]:
    """The `jax.checkpoint_policies` function named by `remat_policy` (None: no rematerialisation)."""
    return None if self.remat_policy is None else getattr(jax.checkpoint_policies, self.remat_policy)

  @property
  def heads(self) -> tuple[int, ...]:
    """Attention heads per down block (diffusers: `num_attention_heads or attention_head_dim`)."""
    heads = self.num_attention_heads if self.num_attention_heads is not None else self.attention_head_dim
    return per_block(heads, len(self.block_out_channels), "num_attention_heads")

  @property
  def layers(self) -> tuple[int, ...]:
    return per_block(self.layers_per_block, len(self.block_out_channels), "layers_per_block")

  @property
  def transformer_layers(self) -> tuple[int, ...]:
    return per_block(self.transformer_layers_per_block, len(self.block_out_channels), "transformer_layers_per_block")

  @classmethod
  def from_diffusers(cls, cfg: Mapping[str, Any], **overrides: Any) -> "UNetConfig":
    """From a diffusers `UNet2DConditionModel` config.json dict; unsupported options raise."""
    # `upcast_attention` only changes fp16 numerics; attention here runs in the compute dtype.
    bad = {k: cfg[k] for k, default in _REQUIRED_DEFAULTS.items()
           if k in cfg and cfg[k] != default and not (isinstance(cfg[k], list) and not any(cfg[k]))}
    if bad:
      raise ValueError(f"unsupported UNet2DConditionModel options: {bad}")
    kwargs = {k: _as_tuple(cfg[k]) for k in _FIELDS_FROM_DIFFUSERS if k in cfg and cfg[k] is not None}
    tl = kwargs.get("transformer_layers_per_block")
    if isinstance(tl, tuple) and any(isinstance(v, (list, tuple)) for v in tl):
      raise ValueError(f"per-layer transformer_layers_per_block lists are not supported: {tl}")
    if isinstance(kwargs.get("cross_attention_dim"), tuple):
      dims = set(kwargs["cross_attention_dim"])
      if len(dims) != 1:
        raise ValueError(f"per-block cross_attention_dim is not supported: {cfg['cross_attention_dim']}")
      kwargs["cross_attention_dim"] = dims.pop()
    return cls(**{**kwargs, **overrides})


def _as_tuple(v: Any) -> Any:
  return tuple(v) if isinstance(v, list) else v
