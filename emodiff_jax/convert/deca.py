"""Load DECA's and EMOCA's released PyTorch encoders into `models.deca.ResnetEncoder`.

    encoder, variables = load_deca("deca_model.tar")          # E_flame: [B, 224, 224, 3] -> [B, 236]
    codes = decompose_code(encoder.apply(variables, images))  # shape, tex, exp, pose, cam, light
    encoder, variables = load_emoca("emoca.ckpt")             # E_expression: -> [B, 50]

Formats: DECA's `deca_model.tar` is a `torch.save`d dict whose `E_flame` entry is the `ResnetEncoder` state
dict (`encoder.conv1.weight`, `encoder.bn1.running_mean`, `encoder.layer1.0.conv1.weight`,
`encoder.layer1.0.downsample.0.weight`, ..., `layers.0.weight`, `layers.2.weight`; DECA
`decalib/deca.py`). EMOCA's checkpoints hold the same layout under `E_expression` (e.g.
`state_dict.deca.E_expression.encoder.conv1.weight`); whatever precedes the module name is ignored. Files
are read with `weights_only=True`, so a Lightning checkpoint that pickles its config objects must first be
re-saved as its `state_dict`.

Mapping: `weight` of convs and Linears -> `kernel` (transposed), BatchNorm `weight`/`bias` -> `scale`/`bias`
in `params`, `running_mean`/`running_var` -> `mean`/`var` in `batch_stats`; `num_batches_tracked` is unused.
The backbone's widths and depths and the regressor's sizes are read from the tensors' shapes (ResNet-50 and
1024 in the releases). Missing, unexpected or mis-shaped keys raise `CheckpointMismatchError` naming them.
"""

from __future__ import annotations

import re
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from emodiff_jax.convert.torch_state import CheckpointMismatchError, read_state_dict, torch_to_flax
from emodiff_jax.models.deca import DECA_OUTSIZE, EMOCA_OUTSIZE, IMAGE_SIZE, ResNetConfig, ResnetEncoder

_STATS = {"running_mean": "mean", "running_var": "var"}


def _submodule(state: dict[str, np.ndarray], name: str, path: str) -> dict[str, np.ndarray]:
  """The entries under the module `name` (any prefix before it dropped), keys relative to it."""
  out = {}
  for key, value in state.items():
    parts = key.split(".")
    if name in parts:
      out[".".join(parts[parts.index(name) + 1:])] = value
  if not out:
    roots = sorted({k.split(".")[0] for k in state})
    raise CheckpointMismatchError(f"{path}: no {name} weights; top-level keys: {', '.join(roots)}")
  return out


def _infer_encoder(state: dict[str, np.ndarray]) -> ResnetEncoder:
  """Builds the `ResnetEncoder` whose sizes the state dict's shapes imply (defaults where keys are absent)."""
  default = ResNetConfig()
  depths, planes = [], []
  for stage in range(1, 5):
    blocks = {int(m.group(1)) for k in state if (m := re.match(rf"encoder\.layer{stage}\.(\d+)\.", k))}
    depths.append(max(blocks) + 1 if blocks else default.depths[stage - 1])
    first = state.get(f"encoder.layer{stage}.0.conv1.weight")
    planes.append(first.shape[0] if first is not None else default.planes[stage - 1])
  conv1 = state.get("encoder.conv1.weight")
  resnet = ResNetConfig(conv1.shape[0] if conv1 is not None else default.stem_features, tuple(planes), tuple(depths))
  hidden, out = state.get("layers.0.weight"), state.get("layers.2.weight")
  return ResnetEncoder(outsize=out.shape[0] if out is not None else DECA_OUTSIZE,
                       hidden=hidden.shape[0] if hidden is not None else 1024, resnet=resnet)


def _rename(key: str) -> Optional[str]:
  """`encoder.bn1.running_mean` -> `batch_stats.encoder.bn1.mean`; parameters go under `params.`."""
  *parent, leaf = key.split(".")
  if leaf == "num_batches_tracked":
    return None
  if leaf in _STATS:
    return ".".join(["batch_stats", *parent, _STATS[leaf]])
  return f"params.{key}"


def load_encoder(path: str, module: str) -> tuple[ResnetEncoder, dict]:
  """The `ResnetEncoder` stored under `module` (e.g. 'E_flame', 'E_expression') in the checkpoint at `path`.

  Returns `(encoder, variables)` with variables `{'params', 'batch_stats'}` of numpy float32 arrays.
  """
  state = _submodule(read_state_dict(path), module, path)
  encoder = _infer_encoder(state)
  template = jax.eval_shape(lambda: encoder.init(jax.random.PRNGKey(0), jnp.zeros((1, IMAGE_SIZE, IMAGE_SIZE, 3))))
  return encoder, torch_to_flax(state, template, source=f"{path} ({module})", rename=_rename)


def load_deca(path: str) -> tuple[ResnetEncoder, dict]:
  """DECA's coarse encoder `E_flame` (236 outputs: shape, tex, exp, pose, cam, light) from `deca_model.tar`."""
  encoder, variables = load_encoder(path, "E_flame")
  if encoder.outsize != DECA_OUTSIZE:
    raise CheckpointMismatchError(f"{path}: E_flame regresses {encoder.outsize} values; DECA's has {DECA_OUTSIZE}")
  return encoder, variables


def load_emoca(path: str) -> tuple[ResnetEncoder, dict]:
  """EMOCA's expression encoder `E_expression` (first 50 outputs: FLAME expression) from an EMOCA checkpoint."""
  encoder, variables = load_encoder(path, "E_expression")
  if encoder.outsize < EMOCA_OUTSIZE:
    raise CheckpointMismatchError(f"{path}: E_expression regresses {encoder.outsize} values; expected at least "
                                  f"{EMOCA_OUTSIZE} expression coefficients")
  return encoder, variables
