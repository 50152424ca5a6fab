"""DECA / EMOCA encoders vs a PyTorch reference built from transformers' `ResNetModel`.

torchvision does not import here, so the reference backbone is transformers' ResNet in the torchvision
layout (bottleneck, stride on the 3x3 conv: `downsample_in_bottleneck=False`), at reduced width, with
random weights and BatchNorm statistics, renamed to DECA's `encoder.*` keys and followed by DECA's
regressor `layers` (Linear, ReLU, Linear).
"""

import re

import jax
import numpy as np
import pytest
import torch
from transformers import ResNetConfig, ResNetModel

from emodiff_jax.convert.deca import load_deca, load_emoca
from emodiff_jax.convert.torch_state import CheckpointMismatchError
from emodiff_jax.models.deca import DECA_OUTSIZE, decompose_code, expression_extractor
from tests.parity import randomize_, rel_err

HIDDEN = 64  # DECA's regressor has 1024; reduced like the backbone.


def _deca_key(key: str) -> str:
  """transformers ResNet key -> DECA's (torchvision) key, under `encoder.`."""
  key = re.sub(r"^embedder\.embedder\.convolution", "conv1", key)
  key = re.sub(r"^embedder\.embedder\.normalization", "bn1", key)
  m = re.match(r"encoder\.stages\.(\d+)\.layers\.(\d+)\.(.*)$", key)
  if m:
    stage, block, rest = int(m.group(1)), m.group(2), m.group(3)
    rest = re.sub(r"^shortcut\.convolution", "downsample.0", rest)
    rest = re.sub(r"^shortcut\.normalization", "downsample.1", rest)
    rest = re.sub(r"^layer\.(\d)\.convolution", lambda c: f"conv{int(c.group(1)) + 1}", rest)
    rest = re.sub(r"^layer\.(\d)\.normalization", lambda c: f"bn{int(c.group(1)) + 1}", rest)
    key = f"layer{stage + 1}.{block}.{rest}"
  return f"encoder.{key}"


def _reference(outsize: int, seed: int):
  """(ResNet, regressor, DECA-layout state dict) with random weights and BN statistics."""
  config = ResNetConfig(num_channels=3, embedding_size=16, hidden_sizes=[32, 64, 128, 256], depths=[3, 4, 6, 3],
                        layer_type="bottleneck", downsample_in_bottleneck=False, downsample_in_first_stage=False)
  torch.manual_seed(seed)
  resnet = ResNetModel(config).eval()
  regressor = torch.nn.Sequential(torch.nn.Linear(256, HIDDEN), torch.nn.ReLU(), torch.nn.Linear(HIDDEN, outsize))
  randomize_(resnet, seed=seed)
  gen = torch.Generator().manual_seed(seed + 1)
  with torch.no_grad():
    for m in resnet.modules():
      if isinstance(m, torch.nn.BatchNorm2d):
        m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen) * 0.1)
        m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)
  state = {_deca_key(k): v for k, v in resnet.state_dict().items()}
  state.update({f"layers.{k}": v for k, v in regressor.state_dict().items()})
  return resnet, regressor, state


def _torch_forward(resnet, regressor, images: np.ndarray) -> np.ndarray:
  with torch.no_grad():
    pixels = torch.from_numpy(images).permute(0, 3, 1, 2)
    return regressor(resnet(pixels).pooler_output.flatten(1)).numpy()


@pytest.fixture(scope="module")
def images():
  return np.random.default_rng(0).uniform(0, 1, (2, 224, 224, 3)).astype(np.float32)


def test_deca_matches_pytorch(tmp_path, images):
  resnet, regressor, state = _reference(DECA_OUTSIZE, seed=0)
  assert set(k for k in state if k.startswith("encoder.layer1.0.")) >= {
      "encoder.layer1.0.conv1.weight", "encoder.layer1.0.downsample.0.weight", "encoder.layer1.0.bn3.running_var"}
  path = str(tmp_path / "deca_model.tar")
  torch.save({"E_flame": state, "E_detail": {"layers.0.weight": torch.zeros(3, 3)}}, path)
  encoder, variables = load_deca(path)
  assert encoder.resnet.depths == (3, 4, 6, 3) and encoder.hidden == HIDDEN
  ours = np.asarray(jax.jit(encoder.apply)(variables, images))
  ref = _torch_forward(resnet, regressor, images)
  assert ours.shape == (2, DECA_OUTSIZE)
  err = rel_err(ours, ref)
  assert err <= 1e-4, err
  codes = decompose_code(ours)
  assert {k: v.shape for k, v in codes.items()} == {
      "shape": (2, 100), "tex": (2, 50), "exp": (2, 50), "pose": (2, 6), "cam": (2, 3), "light": (2, 9, 3)}
  np.testing.assert_array_equal(codes["exp"], ours[:, 150:200])


def test_emoca_expression_extractor_matches_pytorch(tmp_path, images):
  resnet, regressor, state = _reference(50, seed=1)
  path = str(tmp_path / "emoca.ckpt")
  torch.save({"state_dict": {f"deca.E_expression.{k}": v for k, v in state.items()}}, path)
  encoder, variables = load_emoca(path)
  frames = np.round(images * 255).astype(np.uint8)  # 224x224 already: the extractor's resize is the identity.
  extracted = expression_extractor(encoder, variables, batch_size=1)(frames)
  assert extracted.shape == (2, 50) and extracted.dtype == np.float32
  err = rel_err(extracted, _torch_forward(resnet, regressor, frames.astype(np.float32) / 255))
  assert err <= 1e-4, err


def test_mismatched_checkpoint_names_the_keys(tmp_path):
  _, _, state = _reference(DECA_OUTSIZE, seed=2)
  state.pop("encoder.layer2.0.downsample.1.running_var")
  state["encoder.layer5.0.conv1.weight"] = torch.zeros(1)
  state["layers.2.bias"] = torch.zeros(7)
  path = str(tmp_path / "broken.tar")
  torch.save({"E_flame": state}, path)
  with pytest.raises(CheckpointMismatchError) as info:
    load_deca(path)
  message = str(info.value)
  assert "missing (2): batch_stats/encoder/layer2_0/downsample_1/var, params/layers_2/bias" in message
  assert "unexpected (1): encoder.layer5.0.conv1.weight" in message
  assert "mis-shaped (1): layers.2.bias" in message
  torch.save({"E_detail": state}, path)
  with pytest.raises(CheckpointMismatchError, match="no E_flame weights; top-level keys: E_detail"):
    load_deca(path)
