"""DECA / EMOCA image encoders in Flax: ResNet-50 features -> an MLP regressor of FLAME codes.

Follows DECA (Feng et al., SIGGRAPH 2021; `decalib/models/encoders.py` `ResnetEncoder` and
`decalib/models/resnet.py`) and EMOCA's expression encoder (Danecek et al., CVPR 2022), which EMOdiffhead
uses to obtain per-frame FLAME expression codes:

- `ResNet`: torchvision's ResNet-50 layout as DECA builds it (`conv1`/`bn1`, 3x3 max pool, `layer1`..`layer4`
  of bottleneck blocks with the stride on the 3x3 `conv2` and a `downsample` 1x1 conv + BN shortcut on the
  first block of each stage), BatchNorm in inference mode with running statistics (collection
  `batch_stats`), then the average pool (DECA's `AvgPool2d(7)` on the 7x7 map of a 224 input, i.e. the
  global mean) -> `[B, 2048]`.
- `ResnetEncoder`: `encoder` (the ResNet) and the regressor `layers`: Linear(2048, 1024) -> ReLU ->
  Linear(1024, outsize). DECA's `E_flame` has `outsize` 236 = shape 100, tex 50, exp 50, pose 6, cam 3,
  light 27 (in that order, `decompose_code`); EMOCA's `E_expression` regresses the 50 expression
  coefficients only.

Input: face crops `[B, 224, 224, 3]`, RGB in [0, 1], channels-last (DECA does not normalise them further).
Parameter names mirror the PyTorch keys (`encoder.layer1.0.downsample.0.weight` ->
`encoder/layer1_0/downsample_0/kernel`), so `convert/deca.py` maps checkpoints one to one.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

DECA_CODES = (("shape", 100), ("tex", 50), ("exp", 50), ("pose", 6), ("cam", 3), ("light", 27))
DECA_OUTSIZE = sum(n for _, n in DECA_CODES)  # 236
EMOCA_OUTSIZE = 50
IMAGE_SIZE = 224


@dataclasses.dataclass(frozen=True)
class ResNetConfig:
  """Stem width, bottleneck widths per stage (outputs are 4x) and blocks per stage; ResNet-50 by default."""

  stem_features: int = 64
  planes: Sequence[int] = (64, 128, 256, 512)
  depths: Sequence[int] = (3, 4, 6, 3)

  @property
  def feature_size(self) -> int:
    return 4 * self.planes[-1]


def _batch_norm(name: str) -> nn.BatchNorm:
  """PyTorch `BatchNorm2d` in eval mode (running statistics, eps 1e-5)."""
  return nn.BatchNorm(use_running_average=True, momentum=0.9, epsilon=1e-5, name=name)


def _conv(features: int, kernel: int, name: str, stride: int = 1) -> nn.Conv:
  """A bias-free convolution with PyTorch's symmetric `kernel // 2` padding."""
  pad = kernel // 2
  return nn.Conv(features, (kernel, kernel), strides=(stride, stride), padding=((pad, pad), (pad, pad)),
                 use_bias=False, name=name)


class Bottleneck(nn.Module):
  """1x1 -> 3x3 (strided) -> 1x1 (4x planes) with BN, ReLU, and a residual (projected when `downsample`)."""

  planes: int
  stride: int = 1
  downsample: bool = False

  @nn.compact
  def __call__(self, x: Array) -> Array:
    """`[B, H, W, Cin]` -> `[B, H / stride, W / stride, 4 * planes]`."""
    h = nn.relu(_batch_norm("bn1")(_conv(self.planes, 1, "conv1")(x)))
    h = nn.relu(_batch_norm("bn2")(_conv(self.planes, 3, "conv2", self.stride)(h)))
    h = _batch_norm("bn3")(_conv(4 * self.planes, 1, "conv3")(h))
    if self.downsample:
      x = _batch_norm("downsample_1")(_conv(4 * self.planes, 1, "downsample_0", self.stride)(x))
    return nn.relu(h + x)


class ResNet(nn.Module):
  """DECA's `ResNet` (torchvision ResNet-50 layout without `fc`)."""

  config: ResNetConfig = ResNetConfig()

  @nn.compact
  def __call__(self, images: Array) -> Array:
    """`[B, H, W, 3]` -> pooled features `[B, 4 * planes[-1]]` (2048 for ResNet-50)."""
    c = self.config
    x = nn.relu(_batch_norm("bn1")(_conv(c.stem_features, 7, "conv1", stride=2)(images)))
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    in_features = c.stem_features
    for stage, (planes, depth) in enumerate(zip(c.planes, c.depths)):
      for block in range(depth):
        stride = 2 if stage > 0 and block == 0 else 1
        downsample = block == 0 and (stride != 1 or in_features != 4 * planes)
        x = Bottleneck(planes, stride, downsample, name=f"layer{stage + 1}_{block}")(x)
        in_features = 4 * planes
    return x.mean(axis=(1, 2))


class ResnetEncoder(nn.Module):
  """DECA's `ResnetEncoder`: `encoder` (ResNet-50) + regressor `layers` (Linear, ReLU, Linear).

  Attributes:
    outsize: number of regressed values (`DECA_OUTSIZE` for DECA's `E_flame`, `EMOCA_OUTSIZE` for EMOCA's
      `E_expression`).
    hidden: width of the regressor's hidden layer (1024 in DECA and EMOCA).
    resnet: the backbone's layout.
  """

  outsize: int = DECA_OUTSIZE
  hidden: int = 1024
  resnet: ResNetConfig = ResNetConfig()

  @nn.compact
  def __call__(self, images: Array) -> Array:
    """Face crops `[B, 224, 224, 3]` in [0, 1] -> codes `[B, outsize]`."""
    features = ResNet(self.resnet, name="encoder")(images)
    return nn.Dense(self.outsize, name="layers_2")(nn.relu(nn.Dense(self.hidden, name="layers_0")(features)))


def decompose_code(code: Array) -> dict[str, Array]:
  """DECA's 236-d code `[B, 236]` -> `{'shape': [B, 100], 'tex', 'exp', 'pose', 'cam', 'light': [B, 9, 3]}`."""
  if code.shape[-1] != DECA_OUTSIZE:
    raise ValueError(f"DECA code has {DECA_OUTSIZE} values ({DECA_CODES}), got {code.shape[-1]}")
  out, start = {}, 0
  for name, size in DECA_CODES:
    out[name] = code[..., start:start + size]
    start += size
  out["light"] = out["light"].reshape(*code.shape[:-1], 9, 3)
  return out


def expression_extractor(encoder: ResnetEncoder, variables: Any,
                         batch_size: int = 32) -> Callable[[np.ndarray], np.ndarray]:
  """Wraps a DECA or EMOCA encoder as `frames uint8 [T, H, W, 3] -> expression float32 [T, 50]`
  (`input.records.set_expression_extractor`); frames are face crops, resized to 224 bilinearly."""

  @jax.jit
  def run(frames: Array) -> Array:
    images = jax.image.resize(frames.astype(jnp.float32) / 255.0, (frames.shape[0], IMAGE_SIZE, IMAGE_SIZE, 3),
                              "bilinear")
    code = encoder.apply(variables, images)
    return decompose_code(code)["exp"] if encoder.outsize == DECA_OUTSIZE else code[:, :EMOCA_OUTSIZE]

  def extract(frames: np.ndarray) -> np.ndarray:
    chunks = [np.asarray(run(jnp.asarray(frames[i:i + batch_size]))) for i in range(0, len(frames), batch_size)]
    return np.concatenate(chunks).astype(np.float32) if chunks else np.zeros((0, EMOCA_OUTSIZE), np.float32)

  return extract
