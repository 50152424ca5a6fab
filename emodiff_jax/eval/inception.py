"""InceptionV3 as used for FID (pytorch-fid's `FIDInceptionV3`), in Flax, and its weight loader.

FID's reference numbers come from the TensorFlow Inception graph of 2015-12-05; pytorch-fid
(mseitzer/pytorch-fid) ports it to torchvision's `Inception3` layout with four changes that this
module reproduces:

- the average pools inside `Mixed_5b-5d` (InceptionA), `Mixed_6b-6e` (InceptionC) and `Mixed_7b`
  (first InceptionE) exclude the zero padding from the average (`count_include_pad=False`);
- the pool branch of `Mixed_7c` (second InceptionE) is a 3x3 max pool instead of an average pool;
- BatchNorm eps is 1e-3; convolutions have no bias;
- inputs in [0, 1] are resized to 299x299 (bilinear, `align_corners=False`, no antialiasing) and mapped
  to [-1, 1].

Features are the 2048-d global average pool after `Mixed_7c`.

`load_fid_inception(path)` reads the released `pt_inception-2015-12-05-6726825d.pth` state dict (keys
`Conv2d_1a_3x3.conv.weight`, `Conv2d_1a_3x3.bn.running_mean`, `Mixed_5b.branch5x5_1.conv.weight`, ...,
`fc.weight`): module names here equal those keys, so only the unused 1008-way `fc` classifier (and the
`AuxLogits` head and `num_batches_tracked` counters if a checkpoint has them) are left out.
"""

from __future__ import annotations

from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from emodiff_jax.convert.torch_state import read_state_dict, torch_to_flax
from emodiff_jax.eval.layers import FrozenBatchNorm, resize_bilinear

FID_SIZE = 299
FEATURE_DIM = 2048


class BasicConv2d(nn.Module):
  """Conv (no bias) -> BatchNorm (eps 1e-3) -> ReLU, `[B, H, W, C]`."""

  features: int
  kernel: Sequence[int]
  strides: int = 1
  padding: Sequence[int] = (0, 0)

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = nn.Conv(self.features, tuple(self.kernel), self.strides, padding=[(p, p) for p in self.padding],
                use_bias=False, precision="highest", name="conv")(x)
    return nn.relu(FrozenBatchNorm(1e-3, name="bn")(x))


def _avg_pool_3x3(x: jax.Array) -> jax.Array:
  """3x3 stride-1 average over the unpadded pixels only (`count_include_pad=False`)."""
  return nn.avg_pool(x, (3, 3), (1, 1), ((1, 1), (1, 1)), count_include_pad=False)


def _max_pool_3x3(x: jax.Array, stride: int, pad: int = 0) -> jax.Array:
  return nn.max_pool(x, (3, 3), (stride, stride), ((pad, pad), (pad, pad)))


class InceptionA(nn.Module):
  """Mixed_5b-5d: 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | avgpool-1x1 (`pool_features`)."""

  pool_features: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    b1 = BasicConv2d(64, (1, 1), name="branch1x1")(x)
    b5 = BasicConv2d(48, (1, 1), name="branch5x5_1")(x)
    b5 = BasicConv2d(64, (5, 5), padding=(2, 2), name="branch5x5_2")(b5)
    b3 = BasicConv2d(64, (1, 1), name="branch3x3dbl_1")(x)
    b3 = BasicConv2d(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(b3)
    b3 = BasicConv2d(96, (3, 3), padding=(1, 1), name="branch3x3dbl_3")(b3)
    bp = BasicConv2d(self.pool_features, (1, 1), name="branch_pool")(_avg_pool_3x3(x))
    return jnp.concatenate([b1, b5, b3, bp], -1)


class InceptionB(nn.Module):
  """Mixed_6a, stride 2: 3x3 | 1x1-3x3-3x3 | maxpool."""

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    b3 = BasicConv2d(384, (3, 3), strides=2, name="branch3x3")(x)
    bd = BasicConv2d(64, (1, 1), name="branch3x3dbl_1")(x)
    bd = BasicConv2d(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(bd)
    bd = BasicConv2d(96, (3, 3), strides=2, name="branch3x3dbl_3")(bd)
    return jnp.concatenate([b3, bd, _max_pool_3x3(x, 2)], -1)


class InceptionC(nn.Module):
  """Mixed_6b-6e: 1x1 | 1x1-1x7-7x1 | 1x1-7x1-1x7-7x1-1x7 | avgpool-1x1, `channels_7x7` inside."""

  channels_7x7: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    c7 = self.channels_7x7
    b1 = BasicConv2d(192, (1, 1), name="branch1x1")(x)
    b7 = BasicConv2d(c7, (1, 1), name="branch7x7_1")(x)
    b7 = BasicConv2d(c7, (1, 7), padding=(0, 3), name="branch7x7_2")(b7)
    b7 = BasicConv2d(192, (7, 1), padding=(3, 0), name="branch7x7_3")(b7)
    bd = BasicConv2d(c7, (1, 1), name="branch7x7dbl_1")(x)
    bd = BasicConv2d(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_2")(bd)
    bd = BasicConv2d(c7, (1, 7), padding=(0, 3), name="branch7x7dbl_3")(bd)
    bd = BasicConv2d(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_4")(bd)
    bd = BasicConv2d(192, (1, 7), padding=(0, 3), name="branch7x7dbl_5")(bd)
    bp = BasicConv2d(192, (1, 1), name="branch_pool")(_avg_pool_3x3(x))
    return jnp.concatenate([b1, b7, bd, bp], -1)


class InceptionD(nn.Module):
  """Mixed_7a, stride 2: 1x1-3x3 | 1x1-1x7-7x1-3x3 | maxpool."""

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    b3 = BasicConv2d(192, (1, 1), name="branch3x3_1")(x)
    b3 = BasicConv2d(320, (3, 3), strides=2, name="branch3x3_2")(b3)
    b7 = BasicConv2d(192, (1, 1), name="branch7x7x3_1")(x)
    b7 = BasicConv2d(192, (1, 7), padding=(0, 3), name="branch7x7x3_2")(b7)
    b7 = BasicConv2d(192, (7, 1), padding=(3, 0), name="branch7x7x3_3")(b7)
    b7 = BasicConv2d(192, (3, 3), strides=2, name="branch7x7x3_4")(b7)
    return jnp.concatenate([b3, b7, _max_pool_3x3(x, 2)], -1)


class InceptionE(nn.Module):
  """Mixed_7b/7c: 1x1 | 1x1-(1x3, 3x1) | 1x1-3x3-(1x3, 3x1) | pool-1x1; the pool is a padding-excluding
  average (`max_pool=False`, Mixed_7b) or a max (Mixed_7c)."""

  max_pool: bool = False

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    b1 = BasicConv2d(320, (1, 1), name="branch1x1")(x)
    b3 = BasicConv2d(384, (1, 1), name="branch3x3_1")(x)
    b3 = jnp.concatenate([BasicConv2d(384, (1, 3), padding=(0, 1), name="branch3x3_2a")(b3),
                          BasicConv2d(384, (3, 1), padding=(1, 0), name="branch3x3_2b")(b3)], -1)
    bd = BasicConv2d(448, (1, 1), name="branch3x3dbl_1")(x)
    bd = BasicConv2d(384, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(bd)
    bd = jnp.concatenate([BasicConv2d(384, (1, 3), padding=(0, 1), name="branch3x3dbl_3a")(bd),
                          BasicConv2d(384, (3, 1), padding=(1, 0), name="branch3x3dbl_3b")(bd)], -1)
    pooled = _max_pool_3x3(x, 1, 1) if self.max_pool else _avg_pool_3x3(x)
    bp = BasicConv2d(192, (1, 1), name="branch_pool")(pooled)
    return jnp.concatenate([b1, b3, bd, bp], -1)


class FIDInceptionV3(nn.Module):
  """Images `[B, H, W, 3]` in [0, 1] -> pool features `[B, 2048]`.

  With `resize_input` the images are first resized to 299x299 (as pytorch-fid does); without it any
  size >= 75 runs as given.
  """

  resize_input: bool = True

  @nn.compact
  def __call__(self, images: jax.Array) -> jax.Array:
    x = jnp.asarray(images, jnp.float32)
    if self.resize_input:
      x = resize_bilinear(x, FID_SIZE, FID_SIZE)
    x = 2.0 * x - 1.0
    x = BasicConv2d(32, (3, 3), strides=2, name="Conv2d_1a_3x3")(x)
    x = BasicConv2d(32, (3, 3), name="Conv2d_2a_3x3")(x)
    x = BasicConv2d(64, (3, 3), padding=(1, 1), name="Conv2d_2b_3x3")(x)
    x = _max_pool_3x3(x, 2)
    x = BasicConv2d(80, (1, 1), name="Conv2d_3b_1x1")(x)
    x = BasicConv2d(192, (3, 3), name="Conv2d_4a_3x3")(x)
    x = _max_pool_3x3(x, 2)
    x = InceptionA(32, name="Mixed_5b")(x)
    x = InceptionA(64, name="Mixed_5c")(x)
    x = InceptionA(64, name="Mixed_5d")(x)
    x = InceptionB(name="Mixed_6a")(x)
    for name, c7 in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160), ("Mixed_6e", 192)):
      x = InceptionC(c7, name=name)(x)
    x = InceptionD(name="Mixed_7a")(x)
    x = InceptionE(max_pool=False, name="Mixed_7b")(x)
    x = InceptionE(max_pool=True, name="Mixed_7c")(x)
    return x.mean(axis=(1, 2))


def _rename(key: str) -> str | None:
  """Drops the heads FID does not use and BatchNorm's step counters; other keys are used as they are."""
  if key.startswith(("fc.", "AuxLogits.")) or key.endswith("num_batches_tracked"):
    return None
  return key


def load_fid_inception(path: str, resize_input: bool = True) -> tuple[FIDInceptionV3, dict]:
  """Model and params from pytorch-fid's `pt_inception-2015-12-05-*.pth` (or a state dict of its layout).

  Raises `convert.torch_state.CheckpointMismatchError` naming missing, unexpected or mis-shaped keys.
  """
  model = FIDInceptionV3(resize_input=resize_input)
  template = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 75, 75, 3))))["params"]
  return model, torch_to_flax(read_state_dict(path), template, source=path, rename=_rename)


def fid_feature_fn(model: FIDInceptionV3, params: dict) -> Callable[[np.ndarray], np.ndarray]:
  """`frames [B, H, W, 3]` (uint8 in [0, 255], or float in [0, 1]) -> float32 `[B, 2048]`, jitted; a
  `feature_fn` for `frechet.frechet_distance_of`."""
  apply = jax.jit(lambda x: model.apply({"params": params}, x))

  def features(frames: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames)
    x = frames.astype(np.float32) / 255.0 if frames.dtype == np.uint8 else frames.astype(np.float32)
    return np.asarray(apply(x))

  return features
