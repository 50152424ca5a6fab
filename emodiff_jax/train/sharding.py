"""Device mesh, logical-axis sharding of the train state, and global batches.

Every array leaf gets logical axis names from its path and rank: a kernel or embedding `[..., in, out]`
is `(None, ..., 'embed', 'mlp')` (conv windows unnamed); biases, norms and scalars are unnamed. The
`mesh.rules` of the config map logical names to mesh axes as Flax's `logical_to_mesh_axes` does (first
rule whose mesh axis is still free wins), with one addition: a dimension is only sharded when the mesh
axis size divides it, otherwise the next rule is tried, and failing all it stays replicated. With the
default rules `(('embed', 'fsdp'), ('mlp', 'fsdp'))` this is ZeRO-3 / FSDP: each kernel is split over
`fsdp` along its input (else output) dimension, and AdamW moments, which mirror the param paths, are
split the same way. The batch is split over `data` x `fsdp`.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import jax
import ml_collections
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

MESH_AXES = ("data", "fsdp")
BATCH_AXES = ("data", "fsdp")
Rules = Sequence[tuple[str, Optional[str]]]


def make_mesh(mesh_cfg: ml_collections.ConfigDict, devices: Optional[Sequence[jax.Device]] = None) -> Mesh:
  """A `('data', 'fsdp')` mesh over `devices` (default: all); one size may be -1 (the rest)."""
  devices = list(jax.devices() if devices is None else devices)
  sizes = [int(mesh_cfg[a]) for a in MESH_AXES]
  if sizes.count(-1) > 1:
    raise ValueError(f"mesh: at most one axis may be -1, got {dict(zip(MESH_AXES, sizes))}")
  known = int(np.prod([s for s in sizes if s != -1]))
  if -1 in sizes:
    if len(devices) % known:
      raise ValueError(f"mesh: {len(devices)} devices are not divisible by {known}")
    sizes[sizes.index(-1)] = len(devices) // known
  if int(np.prod(sizes)) != len(devices):
    raise ValueError(f"mesh {dict(zip(MESH_AXES, sizes))} needs {int(np.prod(sizes))} devices, have {len(devices)}")
  return Mesh(mesh_utils.create_device_mesh(sizes, devices), MESH_AXES)


def logical_axes(keys: Sequence[str], shape: Sequence[int]) -> tuple[Optional[str], ...]:
  """Logical axis names of a leaf from its path (`keys`) and shape."""
  if len(shape) >= 2 and keys and keys[-1] in ("kernel", "embedding"):
    return (None,) * (len(shape) - 2) + ("embed", "mlp")
  return (None,) * len(shape)


def logical_to_spec(names: Sequence[Optional[str]], shape: Sequence[int], mesh: Mesh, rules: Rules) -> P:
  """Logical names -> `PartitionSpec` on `mesh` (first free rule whose axis size divides the dim)."""
  used, spec = set(), []
  for name, dim in zip(names, shape):
    axis = None
    for logical, mesh_axis in rules:
      if logical != name or mesh_axis is None or mesh_axis in used:
        continue
      size = mesh.shape[mesh_axis]
      if size > 1 and dim % size == 0:
        axis = mesh_axis
        break
    if axis is not None:
      used.add(axis)
    spec.append(axis)
  return P(*spec)


def _keys(path: tuple) -> tuple[str, ...]:
  return tuple(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def tree_shardings(tree: Any, mesh: Mesh, rules: Rules) -> Any:
  """`NamedSharding` for every array leaf of `tree` (arrays or `jax.ShapeDtypeStruct`s)."""
  rules = [tuple(r) for r in rules]

  def one(path, leaf):
    shape = np.shape(leaf)
    return NamedSharding(mesh, logical_to_spec(logical_axes(_keys(path), shape), shape, mesh, rules))

  return jax.tree_util.tree_map_with_path(one, tree)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over `data` x `fsdp`."""
  return NamedSharding(mesh, P(BATCH_AXES))


def global_batch(local: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """This process's share of the batch -> global arrays sharded over `data` x `fsdp`."""
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in local.items()}


def bytes_per_device(tree: Any) -> int:
  """Bytes of `tree` held by the first addressable device (sharded arrays count their shard)."""
  total = 0
  for leaf in jax.tree.leaves(tree):
    if isinstance(leaf, jax.Array):
      total += leaf.addressable_shards[0].data.nbytes
  return total
