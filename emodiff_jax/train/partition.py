"""What trains in each stage (EMOdiffhead Sec. 3.4), as a label per parameter: 'train' or 'frozen'.

Param tree: `{'vae', 'reference_net', 'backbone', 'wav2vec2', 'audio_proj'}` (`models.build`).

- Stage 1 (images): ReferenceNet and the backbone's 2D layers (the SD-1.5 UNet part). Motion modules,
  audio and expression layers stay as initialised (zero-output, so they do not affect a T=1 pass).
- Stage 2 (clips): the backbone's temporal (motion modules), audio (`attn_audio`, `norm_audio` and the
  audio projection) and expression (`attn_expr`, `norm_expr`, `expression_proj`, `expression_proj_time`)
  layers; everything of stage 1 is frozen. With `train_2d` (`config.train.train_2d_in_stage2`, beside
  the paper; `configs/synthetic_stage2_2d.py`) stage 2 also trains the backbone's 2D layers; the
  ReferenceNet stays frozen.
- The VAE and wav2vec2 are frozen in both.
"""

from __future__ import annotations

from typing import Any

import jax

STAGES = (1, 2)
# Path components that mark a backbone parameter as one of stage 2's new layers.
STAGE2_MARKERS = ("motion_modules_", "attn_audio", "norm_audio", "attn_expr", "norm_expr", "expression_proj")


def _keys(path: tuple) -> tuple[str, ...]:
  return tuple(str(getattr(k, "key", getattr(k, "name", k))) for k in path)


def is_stage2_layer(keys: tuple[str, ...]) -> bool:
  """True for the temporal / audio / expression layers of the backbone (and the audio projection)."""
  if keys[0] == "audio_proj":
    return True
  return keys[0] == "backbone" and any(k.startswith(m) for k in keys for m in STAGE2_MARKERS)


def trainable_labels(params: Any, stage: int, train_2d: bool = False) -> Any:
  """A tree like `params` of 'train' / 'frozen' strings (for `optax.multi_transform`); `train_2d` adds the
  backbone's 2D layers to stage 2's."""
  if stage not in STAGES:
    raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")

  def label(path, _):
    keys = _keys(path)
    backbone_2d = keys[0] == "backbone" and not is_stage2_layer(keys)
    if stage == 1:
      train = keys[0] == "reference_net" or backbone_2d
    else:
      train = is_stage2_layer(keys) or (train_2d and backbone_2d)
    return "train" if train else "frozen"

  return jax.tree_util.tree_map_with_path(label, params)


def count_by_label(params: Any, labels: Any) -> dict[str, int]:
  """Parameter counts per label, e.g. `{'train': ..., 'frozen': ...}`."""
  out = {"train": 0, "frozen": 0}
  for p, l in zip(jax.tree.leaves(params), jax.tree.leaves(labels)):
    out[l] += int(p.size)
  return out
