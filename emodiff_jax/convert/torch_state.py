"""Read PyTorch checkpoints (safetensors or pickled `.bin`) and place them in Flax param trees.

Key convention shared by every loader: a PyTorch key `down_blocks.0.resnets.1.conv1.weight` maps to the
Flax path `('down_blocks_0', 'resnets_1', 'conv1', 'kernel')`: a numeric segment is joined to the name
before it, and the leaf name follows the Flax module found at that path in the template:

| PyTorch leaf | Flax leaf | layout change |
| --- | --- | --- |
| `weight` of Linear `[out, in]` | `kernel` `[in, out]` | transpose |
| `weight` of Conv2d `[out, in, kh, kw]` | `kernel` `[kh, kw, in, out]` | (2, 3, 1, 0) |
| `weight` of Conv1d `[out, in, k]` | `kernel` `[k, in, out]` | (2, 1, 0) |
| `weight` of a norm | `scale` | none |
| `weight` of an Embedding | `embedding` | none |
| `bias` | `bias` | none |

Model-specific renames (a diffusers name that differs from ours) go through the `rename` argument of
`torch_to_flax`. Every template leaf must be filled and every checkpoint key used, with the right shape;
otherwise a `CheckpointMismatchError` lists the offending keys. Nothing is dropped silently.
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable, Iterable, Mapping, Optional

import flax
import jax
import numpy as np

WEIGHT_FILES = (
    "diffusion_pytorch_model.safetensors",
    "model.safetensors",
    "diffusion_pytorch_model.bin",
    "pytorch_model.bin",
)


class CheckpointMismatchError(ValueError):
  """A checkpoint's keys or shapes do not match the module built from its config."""


def read_json(directory: str, name: str = "config.json") -> dict:
  """Loads `directory/name`, with an error naming the file when it is missing or malformed."""
  path = os.path.join(directory, name)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path}: no such file; expected a {name} beside the weights")
  try:
    with open(path) as f:
      return json.load(f)
  except json.JSONDecodeError as e:
    raise ValueError(f"{path}: not valid JSON ({e})") from e


def find_weight_file(directory: str, names: Iterable[str] = WEIGHT_FILES) -> str:
  """Returns the first existing weight file in `directory` among `names`."""
  for name in names:
    path = os.path.join(directory, name)
    if os.path.isfile(path):
      return path
  raise FileNotFoundError(f"{directory}: no weights found (looked for {', '.join(names)})")


def read_state_dict(path: str) -> dict[str, np.ndarray]:
  """Reads a `.safetensors` or pickled PyTorch `.bin`/`.pt`/`.ckpt` file into float32 numpy arrays.

  Nested checkpoints (`{'state_dict': ...}`, `{'model': ...}`) are flattened with `.`-joined keys.
  """
  if path.endswith(".safetensors"):
    from safetensors.numpy import load_file

    try:
      return {k: np.asarray(v, np.float32) for k, v in load_file(path).items()}
    except Exception as e:  # safetensors raises a bare Exception subclass on corrupt headers.
      raise ValueError(f"{path}: unreadable safetensors file ({e})") from e
  import torch  # Pickled checkpoints need torch to unpickle; safetensors does not.

  try:
    obj = torch.load(path, map_location="cpu", weights_only=True)
  except Exception as e:
    raise ValueError(f"{path}: unreadable PyTorch checkpoint ({e})") from e
  flat: dict[str, np.ndarray] = {}

  def visit(prefix: str, node: Any) -> None:
    if isinstance(node, torch.Tensor):
      flat[prefix] = node.detach().float().numpy()
    elif isinstance(node, Mapping):
      for k, v in node.items():
        visit(f"{prefix}.{k}" if prefix else str(k), v)

  visit("", obj)
  return flat


def torch_key_to_path(key: str) -> tuple[str, ...]:
  """`a.0.b.weight` -> `('a_0', 'b', 'weight')`."""
  out: list[str] = []
  for seg in key.split("."):
    if seg.isdigit() and out:
      out[-1] = f"{out[-1]}_{seg}"
    else:
      out.append(seg)
  return tuple(out)


def _to_flax_leaf(path: tuple[str, ...], value: np.ndarray, template: Mapping) -> tuple[tuple[str, ...], np.ndarray]:
  """Chooses the Flax leaf name and layout for one PyTorch tensor, guided by the template."""
  *parent, leaf = path
  node: Any = template
  for p in parent:
    node = node.get(p, {}) if isinstance(node, Mapping) else {}
  if leaf == "weight":
    if "kernel" in node:
      ndim = value.ndim
      perm = {2: (1, 0), 3: (2, 1, 0), 4: (2, 3, 1, 0), 5: (2, 3, 4, 1, 0)}.get(ndim)
      return (*parent, "kernel"), value.transpose(perm) if perm else value
    if "embedding" in node:
      return (*parent, "embedding"), value
    return (*parent, "scale"), value
  return path, value


def torch_to_flax(
    state: Mapping[str, np.ndarray],
    template: Any,
    *,
    source: str,
    rename: Optional[Callable[[str], Optional[str]]] = None,
) -> dict:
  """Places a PyTorch state dict into a Flax param tree with the template's structure.

  Args:
    state: PyTorch key -> array.
    template: Flax params (arrays or `jax.ShapeDtypeStruct`, e.g. from `jax.eval_shape`).
    source: file or directory named in errors.
    rename: maps a PyTorch key to our PyTorch-style key, or None to mark it as intentionally unused
      (e.g. buffers such as `position_ids`).

  Returns:
    A nested dict of numpy float32 arrays with exactly the template's leaves.

  Raises:
    CheckpointMismatchError: listing missing, unexpected and mis-shaped keys.
  """
  template = flax.core.unfreeze(template)
  flat_template = flax.traverse_util.flatten_dict(template)
  out: dict[tuple[str, ...], np.ndarray] = {}
  unexpected, misshaped = [], []
  for key, value in state.items():
    new_key = rename(key) if rename else key
    if new_key is None:
      continue
    path, arr = _to_flax_leaf(torch_key_to_path(new_key), np.asarray(value), template)
    if path not in flat_template:
      unexpected.append(key)
      continue
    want = tuple(flat_template[path].shape)
    if tuple(arr.shape) != want:
      misshaped.append(f"{key}: checkpoint {tuple(value.shape)} -> {tuple(arr.shape)}, model {want}")
      continue
    out[path] = np.asarray(arr, np.float32)
  missing = ["/".join(p) for p in flat_template if p not in out]
  if missing or unexpected or misshaped:
    parts = [f"{source}: checkpoint does not match the model built from its config"]
    for name, items in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped)):
      if items:
        shown = ", ".join(items[:20]) + (f" ... (+{len(items) - 20} more)" if len(items) > 20 else "")
        parts.append(f"{name} ({len(items)}): {shown}")
    raise CheckpointMismatchError("\n".join(parts))
  return flax.traverse_util.unflatten_dict(out)


def param_count(params: Any) -> int:
  """Total number of scalars in a param tree (arrays or ShapeDtypeStructs)."""
  return int(sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(params)))
