"""Metric networks vs PyTorch references written here from torch.nn (random weights, the released
state-dict key names): pytorch-fid's InceptionV3 and joonson/syncnet_python's SyncNet."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from emodiff_jax.convert.torch_state import CheckpointMismatchError
from emodiff_jax.eval.inception import fid_feature_fn, load_fid_inception
from emodiff_jax.eval.layers import resize_bilinear
from emodiff_jax.eval.mfcc import syncnet_mfcc
from emodiff_jax.eval.syncnet import clip_sync_scores, load_syncnet, sync_scores



def _rel_err(ours: np.ndarray, ref: np.ndarray) -> float:
  return float(np.abs(ours - ref).max() / np.abs(ref).max())


def _randomise(module: nn.Module, seed: int) -> None:
  """Random weights and BatchNorm statistics, scaled so activations stay O(1) through deep stacks."""
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for m in module.modules():
      if isinstance(m, (nn.Conv2d, nn.Conv3d, nn.Linear)):
        fan_in = m.weight[0].numel()
        m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (2.0 / fan_in) ** 0.5)
        if m.bias is not None:
          m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
      elif isinstance(m, nn.modules.batchnorm._BatchNorm):
        c = m.num_features
        m.weight.copy_(1.0 + 0.2 * torch.randn(c, generator=g))
        m.bias.copy_(0.2 * torch.randn(c, generator=g))
        m.running_mean.copy_(0.2 * torch.randn(c, generator=g))
        m.running_var.copy_(0.5 + torch.rand(c, generator=g))


# --- InceptionV3, FID variant (pytorch-fid), from torch.nn --------------------------------------------

class TorchBasicConv2d(nn.Module):

  def __init__(self, cin, cout, kernel, stride=1, padding=0):
    super().__init__()
    self.conv = nn.Conv2d(cin, cout, kernel, stride, padding, bias=False)
    self.bn = nn.BatchNorm2d(cout, eps=1e-3)

  def forward(self, x):
    return F.relu(self.bn(self.conv(x)))


def _avg3(x):
  return F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)


class TorchInceptionA(nn.Module):

  def __init__(self, cin, pool_features):
    super().__init__()
    self.branch1x1 = TorchBasicConv2d(cin, 64, 1)
    self.branch5x5_1 = TorchBasicConv2d(cin, 48, 1)
    self.branch5x5_2 = TorchBasicConv2d(48, 64, 5, padding=2)
    self.branch3x3dbl_1 = TorchBasicConv2d(cin, 64, 1)
    self.branch3x3dbl_2 = TorchBasicConv2d(64, 96, 3, padding=1)
    self.branch3x3dbl_3 = TorchBasicConv2d(96, 96, 3, padding=1)
    self.branch_pool = TorchBasicConv2d(cin, pool_features, 1)

  def forward(self, x):
    return torch.cat([self.branch1x1(x), self.branch5x5_2(self.branch5x5_1(x)),
                      self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                      self.branch_pool(_avg3(x))], 1)


class TorchInceptionB(nn.Module):

  def __init__(self, cin):
    super().__init__()
    self.branch3x3 = TorchBasicConv2d(cin, 384, 3, stride=2)
    self.branch3x3dbl_1 = TorchBasicConv2d(cin, 64, 1)
    self.branch3x3dbl_2 = TorchBasicConv2d(64, 96, 3, padding=1)
    self.branch3x3dbl_3 = TorchBasicConv2d(96, 96, 3, stride=2)

  def forward(self, x):
    return torch.cat([self.branch3x3(x), self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                      F.max_pool2d(x, 3, 2)], 1)


class TorchInceptionC(nn.Module):

  def __init__(self, cin, c7):
    super().__init__()
    self.branch1x1 = TorchBasicConv2d(cin, 192, 1)
    self.branch7x7_1 = TorchBasicConv2d(cin, c7, 1)
    self.branch7x7_2 = TorchBasicConv2d(c7, c7, (1, 7), padding=(0, 3))
    self.branch7x7_3 = TorchBasicConv2d(c7, 192, (7, 1), padding=(3, 0))
    self.branch7x7dbl_1 = TorchBasicConv2d(cin, c7, 1)
    self.branch7x7dbl_2 = TorchBasicConv2d(c7, c7, (7, 1), padding=(3, 0))
    self.branch7x7dbl_3 = TorchBasicConv2d(c7, c7, (1, 7), padding=(0, 3))
    self.branch7x7dbl_4 = TorchBasicConv2d(c7, c7, (7, 1), padding=(3, 0))
    self.branch7x7dbl_5 = TorchBasicConv2d(c7, 192, (1, 7), padding=(0, 3))
    self.branch_pool = TorchBasicConv2d(cin, 192, 1)

  def forward(self, x):
    b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
    bd = x
    for i in range(1, 6):
      bd = getattr(self, f"branch7x7dbl_{i}")(bd)
    return torch.cat([self.branch1x1(x), b7, bd, self.branch_pool(_avg3(x))], 1)


class TorchInceptionD(nn.Module):

  def __init__(self, cin):
    super().__init__()
    self.branch3x3_1 = TorchBasicConv2d(cin, 192, 1)
    self.branch3x3_2 = TorchBasicConv2d(192, 320, 3, stride=2)
    self.branch7x7x3_1 = TorchBasicConv2d(cin, 192, 1)
    self.branch7x7x3_2 = TorchBasicConv2d(192, 192, (1, 7), padding=(0, 3))
    self.branch7x7x3_3 = TorchBasicConv2d(192, 192, (7, 1), padding=(3, 0))
    self.branch7x7x3_4 = TorchBasicConv2d(192, 192, 3, stride=2)

  def forward(self, x):
    b7 = x
    for i in range(1, 5):
      b7 = getattr(self, f"branch7x7x3_{i}")(b7)
    return torch.cat([self.branch3x3_2(self.branch3x3_1(x)), b7, F.max_pool2d(x, 3, 2)], 1)


class TorchInceptionE(nn.Module):

  def __init__(self, cin, max_pool):
    super().__init__()
    self.max_pool = max_pool
    self.branch1x1 = TorchBasicConv2d(cin, 320, 1)
    self.branch3x3_1 = TorchBasicConv2d(cin, 384, 1)
    self.branch3x3_2a = TorchBasicConv2d(384, 384, (1, 3), padding=(0, 1))
    self.branch3x3_2b = TorchBasicConv2d(384, 384, (3, 1), padding=(1, 0))
    self.branch3x3dbl_1 = TorchBasicConv2d(cin, 448, 1)
    self.branch3x3dbl_2 = TorchBasicConv2d(448, 384, 3, padding=1)
    self.branch3x3dbl_3a = TorchBasicConv2d(384, 384, (1, 3), padding=(0, 1))
    self.branch3x3dbl_3b = TorchBasicConv2d(384, 384, (3, 1), padding=(1, 0))
    self.branch_pool = TorchBasicConv2d(cin, 192, 1)

  def forward(self, x):
    b3 = self.branch3x3_1(x)
    b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
    bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
    bd = torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], 1)
    pooled = F.max_pool2d(x, 3, 1, 1) if self.max_pool else _avg3(x)
    return torch.cat([self.branch1x1(x), b3, bd, self.branch_pool(pooled)], 1)


class TorchFIDInception(nn.Module):
  """Inputs in [0, 1], no resize; the `fc` classifier exists only so the state dict has its keys."""

  def __init__(self):
    super().__init__()
    self.Conv2d_1a_3x3 = TorchBasicConv2d(3, 32, 3, stride=2)
    self.Conv2d_2a_3x3 = TorchBasicConv2d(32, 32, 3)
    self.Conv2d_2b_3x3 = TorchBasicConv2d(32, 64, 3, padding=1)
    self.Conv2d_3b_1x1 = TorchBasicConv2d(64, 80, 1)
    self.Conv2d_4a_3x3 = TorchBasicConv2d(80, 192, 3)
    self.Mixed_5b = TorchInceptionA(192, 32)
    self.Mixed_5c = TorchInceptionA(256, 64)
    self.Mixed_5d = TorchInceptionA(288, 64)
    self.Mixed_6a = TorchInceptionB(288)
    self.Mixed_6b = TorchInceptionC(768, 128)
    self.Mixed_6c = TorchInceptionC(768, 160)
    self.Mixed_6d = TorchInceptionC(768, 160)
    self.Mixed_6e = TorchInceptionC(768, 192)
    self.Mixed_7a = TorchInceptionD(768)
    self.Mixed_7b = TorchInceptionE(1280, max_pool=False)
    self.Mixed_7c = TorchInceptionE(2048, max_pool=True)
    self.fc = nn.Linear(2048, 1008)

  def forward(self, x):
    x = 2 * x - 1
    x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
    x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(F.max_pool2d(x, 3, 2)))
    x = F.max_pool2d(x, 3, 2)
    for name in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"):
      x = getattr(self, f"Mixed_{name}")(x)
    return F.adaptive_avg_pool2d(x, 1).flatten(1)


@pytest.fixture(scope="module")
def inception_checkpoint(tmp_path_factory):
  torch_model = TorchFIDInception().eval()
  _randomise(torch_model, seed=0)
  path = str(tmp_path_factory.mktemp("fid") / "pt_inception-2015-12-05-random.pth")
  torch.save(torch_model.state_dict(), path)
  return torch_model, path


def test_fid_inception_matches_torch_reference_on_pool_features(inception_checkpoint):
  torch_model, path = inception_checkpoint
  model, params = load_fid_inception(path, resize_input=False)
  # 139x139 leaves 3x3 maps at Mixed_7b/7c (75x75 leaves 1x1, where their pool branches cannot differ).
  frames = np.random.default_rng(0).integers(0, 256, (2, 139, 139, 3), dtype=np.uint8)
  with torch.no_grad():
    ref = torch_model(torch.from_numpy(frames.transpose(0, 3, 1, 2).astype(np.float32) / 255.0)).numpy()
  ours = fid_feature_fn(model, params)(frames)
  assert ours.shape == (2, 2048)
  assert np.abs(ref).max() > 1e-2  # features are not all dead after the random stack
  assert _rel_err(ours, ref) <= 1e-4


def test_fid_resize_matches_torch_bilinear_without_antialiasing():
  x = np.random.default_rng(1).uniform(0, 1, (2, 37, 53, 3)).astype(np.float32)
  for size in ((75, 75), (20, 31)):
    ref = F.interpolate(torch.from_numpy(x.transpose(0, 3, 1, 2)), size=size, mode="bilinear",
                        align_corners=False).numpy().transpose(0, 2, 3, 1)
    np.testing.assert_allclose(np.asarray(resize_bilinear(jnp.asarray(x), *size)), ref, atol=1e-5)


def test_fid_inception_loader_uses_every_key_and_names_a_missing_one(inception_checkpoint, tmp_path):
  torch_model, path = inception_checkpoint
  state = torch_model.state_dict()
  used = {k for k in state if not k.startswith("fc.") and not k.endswith("num_batches_tracked")}
  _, params = load_fid_inception(path)
  assert len(jax.tree_util.tree_leaves(params)) == len(used)
  broken = dict(state)
  del broken["Mixed_6c.branch7x7dbl_3.bn.running_var"]
  broken["Mixed_6c.extra.weight"] = torch.zeros(3)
  bad = str(tmp_path / "bad.pth")
  torch.save(broken, bad)
  with pytest.raises(CheckpointMismatchError, match="branch7x7dbl_3/bn/running_var") as err:
    load_fid_inception(bad)
  assert "Mixed_6c.extra.weight" in str(err.value)


# --- SyncNet (syncnet_python's `S`, 1024-d), from torch.nn ---------------------------------------------

def _conv_bn(conv: nn.Module, bn: nn.Module) -> list[nn.Module]:
  return [conv, bn, nn.ReLU()]


class TorchSyncNet(nn.Module):
  """Sequential indices as in the released `syncnet_v2.model` (conv, bn, relu[, pool] per stage)."""

  def __init__(self):
    super().__init__()
    a = [nn.Conv2d(1, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(1, 1),
         nn.Conv2d(64, 192, 3, padding=1), nn.BatchNorm2d(192), nn.ReLU(), nn.MaxPool2d(3, (1, 2)),
         *_conv_bn(nn.Conv2d(192, 384, 3, padding=1), nn.BatchNorm2d(384)),
         *_conv_bn(nn.Conv2d(384, 256, 3, padding=1), nn.BatchNorm2d(256)),
         *_conv_bn(nn.Conv2d(256, 256, 3, padding=1), nn.BatchNorm2d(256)), nn.MaxPool2d(3, 2),
         *_conv_bn(nn.Conv2d(256, 512, (5, 4)), nn.BatchNorm2d(512))]
    v = [nn.Conv3d(3, 96, (5, 7, 7), (1, 2, 2)), nn.BatchNorm3d(96), nn.ReLU(), nn.MaxPool3d((1, 3, 3), (1, 2, 2)),
         nn.Conv3d(96, 256, (1, 5, 5), (1, 2, 2), (0, 1, 1)), nn.BatchNorm3d(256), nn.ReLU(),
         nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1)),
         *_conv_bn(nn.Conv3d(256, 256, (1, 3, 3), padding=(0, 1, 1)), nn.BatchNorm3d(256)),
         *_conv_bn(nn.Conv3d(256, 256, (1, 3, 3), padding=(0, 1, 1)), nn.BatchNorm3d(256)),
         *_conv_bn(nn.Conv3d(256, 256, (1, 3, 3), padding=(0, 1, 1)), nn.BatchNorm3d(256)),
         nn.MaxPool3d((1, 3, 3), (1, 2, 2)),
         *_conv_bn(nn.Conv3d(256, 512, (1, 6, 6)), nn.BatchNorm3d(512))]
    self.netcnnaud, self.netcnnlip = nn.Sequential(*a), nn.Sequential(*v)
    self.netfcaud = nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, 1024))
    self.netfclip = nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, 1024))

  def forward(self, mfcc, frames):
    return (self.netfcaud(self.netcnnaud(mfcc).flatten(1)), self.netfclip(self.netcnnlip(frames).flatten(1)))


@pytest.fixture(scope="module")
def syncnet_checkpoint(tmp_path_factory):
  torch_model = TorchSyncNet().eval()
  _randomise(torch_model, seed=1)
  path = str(tmp_path_factory.mktemp("syncnet") / "syncnet_v2.model")
  torch.save(torch_model.state_dict(), path)
  return torch_model, path


def test_syncnet_matches_torch_reference_on_both_embeddings(syncnet_checkpoint):
  torch_model, path = syncnet_checkpoint
  model, params = load_syncnet(path)
  rng = np.random.default_rng(2)
  mfcc = rng.normal(0, 10, (2, 13, 20, 1)).astype(np.float32)
  frames = rng.uniform(0, 255, (2, 5, 224, 224, 3)).astype(np.float32)
  with torch.no_grad():
    ref_a, ref_v = torch_model(torch.from_numpy(mfcc.transpose(0, 3, 1, 2)),
                               torch.from_numpy(frames.transpose(0, 4, 1, 2, 3)))
  ours_a, ours_v = jax.jit(lambda p, a, v: model.apply({"params": p}, a, v))(params, mfcc, frames)
  assert ours_a.shape == ours_v.shape == (2, 1024)
  assert _rel_err(np.asarray(ours_a), ref_a.numpy()) <= 1e-4
  assert _rel_err(np.asarray(ours_v), ref_v.numpy()) <= 1e-4


def test_syncnet_loader_uses_every_key_and_rejects_a_misshaped_one(syncnet_checkpoint, tmp_path):
  torch_model, path = syncnet_checkpoint
  state = torch_model.state_dict()
  _, params = load_syncnet(path)
  assert len(jax.tree_util.tree_leaves(params)) == len([k for k in state if not k.endswith("num_batches_tracked")])
  broken = dict(state)
  broken["netfclip.3.weight"] = torch.zeros(512, 512)
  bad = str(tmp_path / "bad.model")
  torch.save(broken, bad)
  with pytest.raises(CheckpointMismatchError, match="netfclip.3.weight"):
    load_syncnet(bad)


def test_clip_sync_scores_follow_the_torch_pipeline_end_to_end(syncnet_checkpoint):
  torch_model, path = syncnet_checkpoint
  model, params = load_syncnet(path)
  rng = np.random.default_rng(3)
  frames = rng.uniform(0, 255, (9, 224, 224, 3)).astype(np.float32)  # 9 frames -> 4 windows
  wave = rng.normal(0, 3000, 9 * 640)
  ours = clip_sync_scores(model, params, frames, wave, vshift=3, batch_size=2)
  mfcc = torch.from_numpy(syncnet_mfcc(wave))[None, None]  # [1, 1, 13, M]
  video = torch.from_numpy(frames.transpose(3, 0, 1, 2))[None]  # [1, 3, T, H, W]
  with torch.no_grad():
    ref_a, ref_v = torch_model(torch.cat([mfcc[..., 4 * i:4 * i + 20] for i in range(4)]),
                               torch.cat([video[:, :, i:i + 5] for i in range(4)]))
  ref = sync_scores(ref_v.numpy(), ref_a.numpy(), vshift=3)
  np.testing.assert_allclose(ours.mean_distances, ref.mean_distances, rtol=1e-4)
  assert ours.offset == ref.offset
