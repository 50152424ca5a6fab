"""Load a transformers wav2vec2 checkpoint folder into `emodiff_jax.models.wav2vec2.Wav2Vec2Model`.

Accepted folders: `config.json` + `model.safetensors` or `pytorch_model.bin`, saved from
`Wav2Vec2Model` (keys `feature_extractor...`) or from a model wrapping it (`Wav2Vec2ForCTC`,
`Wav2Vec2ForPreTraining`, `Wav2Vec2ForSequenceClassification`...: keys `wav2vec2....` plus head keys).

Key handling beyond the generic converter (`torch_state.torch_to_flax`):
- the leading `wav2vec2.` of a wrapped checkpoint is stripped; head keys (`HEAD_PREFIXES`) are unused;
- `masked_spec_embed` (the SpecAugment mask vector, only used when training with masking) is unused;
- the positional conv's weight norm (`weight_g`/`weight_v`, or torch parametrizations
  `parametrizations.weight.original0`/`original1`) is folded into one plain `weight` (dim=2).
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from emodiff_jax.convert.torch_state import find_weight_file, read_json, read_state_dict, torch_to_flax
from emodiff_jax.models.wav2vec2 import Wav2Vec2Config, Wav2Vec2Model

WRAPPER_PREFIX = "wav2vec2."
# Task heads of the transformers wrappers; the audio encoder does not use them.
HEAD_PREFIXES = ("lm_head.", "quantizer.", "project_hid.", "project_q.", "projector.", "classifier.",
                 "layer_weights", "dropout_features.")
UNUSED_KEYS = ("masked_spec_embed",)
_POS_CONV = "encoder.pos_conv_embed.conv."
_WEIGHT_NORM_PAIRS = (("weight_g", "weight_v"), ("parametrizations.weight.original0", "parametrizations.weight.original1"))


def fold_weight_norm(weight_g: np.ndarray, weight_v: np.ndarray, dim: int = 2) -> np.ndarray:
  """PyTorch `weight_norm(dim=dim)`: `g * v / ||v||`, the norm taken over every axis but `dim`."""
  axes = tuple(a for a in range(weight_v.ndim) if a != dim)
  v = weight_v.astype(np.float64)
  norm = np.sqrt(np.sum(np.square(v), axis=axes, keepdims=True))
  return (weight_g * v / norm).astype(np.float32)


def _fold_pos_conv(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Replaces the weight-normed positional conv's (g, v) pair by its plain `weight`."""
  state = dict(state)
  for g_name, v_name in _WEIGHT_NORM_PAIRS:
    g_key, v_key = _POS_CONV + g_name, _POS_CONV + v_name
    if g_key in state and v_key in state:
      state[_POS_CONV + "weight"] = fold_weight_norm(state.pop(g_key), state.pop(v_key))
  return state


def _strip_wrapper(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Keeps the `Wav2Vec2Model` part of a wrapped (CTC/pretraining/classification) checkpoint."""
  if not any(k.startswith(WRAPPER_PREFIX) for k in state):
    return state
  out = {}
  for k, v in state.items():
    if k.startswith(WRAPPER_PREFIX):
      out[k[len(WRAPPER_PREFIX):]] = v
    elif not k.startswith(HEAD_PREFIXES):
      out[k] = v  # Neither encoder nor a known head: left in, so the converter reports it.
  return out


def _rename(key: str) -> Optional[str]:
  return None if key in UNUSED_KEYS else key


def load_wav2vec2(path: str) -> tuple[Wav2Vec2Model, dict]:
  """Builds the module from `path/config.json` and loads its weights.

  Args:
    path: a transformers wav2vec2 checkpoint folder.

  Returns:
    `(module, params)`: call `module.apply({'params': params}, waveform[B, N])`.

  Raises:
    FileNotFoundError / ValueError: missing or malformed config or weights (the file is named).
    CheckpointMismatchError: keys or shapes that do not fit the config, listed by name.
  """
  cfg_dict = read_json(path)
  try:
    cfg = Wav2Vec2Config.from_hf(cfg_dict)
  except (TypeError, ValueError) as e:
    raise ValueError(f"{path}/config.json: not a usable wav2vec2 config ({e})") from e
  module = Wav2Vec2Model(cfg)
  template = jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), jnp.zeros((1, 400 * cfg.hop_length))))
  weights = find_weight_file(path, ("model.safetensors", "pytorch_model.bin"))
  state = _fold_pos_conv(_strip_wrapper(read_state_dict(weights)))
  params = torch_to_flax(state, template["params"], source=weights, rename=_rename)
  return module, params
