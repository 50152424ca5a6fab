"""Parameter tables: counts per network and, inside the backbone, per kind of layer."""

from __future__ import annotations

from typing import Any, Mapping

import flax
import numpy as np

# Backbone param paths containing one of these names belong to the named group; the rest is the
# SD-1.5 2D UNet that the backbone shares with ReferenceNet's layout.
BACKBONE_GROUPS = (
    ("motion_modules", "temporal (motion modules)"),
    ("attn_audio", "audio cross-attention"),
    ("norm_audio", "audio cross-attention"),
    ("attn_expr", "expression cross-attention"),
    ("norm_expr", "expression cross-attention"),
    ("expression_proj", "expression projection"),
)


def count(tree: Any) -> int:
  """Number of scalars in a param tree of arrays or `ShapeDtypeStruct`s."""
  return int(sum(np.prod(x.shape) for x in flax.traverse_util.flatten_dict(flax.core.unfreeze(tree)).values()))


def backbone_groups(params: Mapping) -> dict[str, int]:
  """Backbone parameter counts per group (`BACKBONE_GROUPS`, else '2D UNet')."""
  out: dict[str, int] = {}
  for path, leaf in flax.traverse_util.flatten_dict(flax.core.unfreeze(params)).items():
    group = next((g for key, g in BACKBONE_GROUPS if any(key in p for p in path)), "2D UNet (SD-1.5 layout)")
    out[group] = out.get(group, 0) + int(np.prod(leaf.shape))
  return out


def param_table(abstract: Mapping[str, Any]) -> list[tuple[str, int, float]]:
  """Rows `(name, parameters, float32 MiB)`: each network, the backbone's groups, and the total."""
  rows = []
  for name, tree in abstract.items():
    n = count(tree)
    rows.append((name, n, n * 4 / 2**20))
    if name == "backbone":
      rows += [(f"  backbone: {g}", c, c * 4 / 2**20) for g, c in backbone_groups(tree).items()]
  total = sum(count(t) for t in abstract.values())
  rows.append(("total", total, total * 4 / 2**20))
  return rows
