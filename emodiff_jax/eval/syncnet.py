"""SyncNet (Chung & Zisserman 2016, "Out of time: automated lip sync in the wild") in Flax, its loader,
and the Sync-C / Sync-D lip-sync scores.

Architecture and input conventions follow the released model of joonson/syncnet_python
(`syncnet_v2.model`, the `S` network with 1024-d outputs), which the Wav2Lip evaluation (Prajwal et al.
2020, "A lip sync expert is all you need") uses as LSE-C / LSE-D:

- audio stream (`netcnnaud` + `netfcaud`): MFCC windows `[B, 13, 20, 1]` (13 cepstra x 20 steps of
  10 ms = 0.2 s, i.e. 5 video frames at 25 fps; `python_speech_features.mfcc` defaults at 16 kHz);
- video stream (`netcnnlip` + `netfclip`): 5 consecutive face-crop frames `[B, 5, 224, 224, 3]`, raw
  values in [0, 255] in the order OpenCV reads them (BGR). The 2016 paper fed 5 stacked grey mouth crops;
  the released v2 model takes colour frames through a 5x7x7 3-D convolution, and its weights fix that.

`load_syncnet(path)` reads that state dict (`netcnnaud.0.weight`, `netcnnaud.1.running_mean`, ...,
`netfclip.3.bias`): Flax module names are the PyTorch `Sequential` indices (`netcnnaud_0`), so every key
maps without renaming.

Scores, from per-window embeddings of one clip (window i: frames i..i+4, MFCC steps 4i..4i+19):
for each offset k in [-vshift, vshift] the mean over windows of `|v_i - a_{i+k} + 1e-6|_2` (audio
embeddings zero-padded at both ends, as syncnet_python's `calc_pdist`); Sync-D (LSE-D) is the minimum
of these mean distances, Sync-C (LSE-C) their median minus that minimum, and the AV offset is the
negated arg-min offset. The Wav2Lip evaluation uses vshift = 15.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from emodiff_jax.convert.torch_state import read_state_dict, torch_to_flax
from emodiff_jax.eval.layers import FrozenBatchNorm
from emodiff_jax.eval.mfcc import FRAME_STEP, SAMPLE_RATE, syncnet_mfcc

FPS = 25
MFCC_STEPS_PER_FRAME = SAMPLE_RATE // FRAME_STEP // FPS  # 100 Hz MFCC / 25 fps video = 4
WINDOW_FRAMES = 5
FACE_SIZE = 224


def _max_pool(x: jax.Array, window: tuple[int, ...], strides: tuple[int, ...],
              pad: tuple[int, ...] | None = None) -> jax.Array:
  return nn.max_pool(x, window, strides, tuple((p, p) for p in pad) if pad else "VALID")


class SyncNet(nn.Module):
  """The two SyncNet streams; `embed_audio` and `embed_video` give `[B, embed_dim]`, `__call__` both."""

  embed_dim: int = 1024

  def setup(self) -> None:
    def conv(features: int, kernel: tuple[int, ...], strides: int | tuple[int, ...] = 1,
             pad: tuple[int, ...] = ()) -> nn.Conv:
      padding = [(p, p) for p in pad] if pad else "VALID"
      return nn.Conv(features, kernel, strides, padding=padding, precision="highest")

    self.netcnnaud_0 = conv(64, (3, 3), pad=(1, 1))
    self.netcnnaud_4 = conv(192, (3, 3), pad=(1, 1))
    self.netcnnaud_8 = conv(384, (3, 3), pad=(1, 1))
    self.netcnnaud_11 = conv(256, (3, 3), pad=(1, 1))
    self.netcnnaud_14 = conv(256, (3, 3), pad=(1, 1))
    self.netcnnaud_18 = conv(512, (5, 4))
    self.netcnnlip_0 = conv(96, (5, 7, 7), (1, 2, 2))
    self.netcnnlip_4 = conv(256, (1, 5, 5), (1, 2, 2), pad=(0, 1, 1))
    self.netcnnlip_8 = conv(256, (1, 3, 3), pad=(0, 1, 1))
    self.netcnnlip_11 = conv(256, (1, 3, 3), pad=(0, 1, 1))
    self.netcnnlip_14 = conv(256, (1, 3, 3), pad=(0, 1, 1))
    self.netcnnlip_18 = conv(512, (1, 6, 6))
    for stream in ("aud", "lip"):
      for i in (1, 5, 9, 12, 15, 19):
        setattr(self, f"netcnn{stream}_{i}", FrozenBatchNorm())
      setattr(self, f"netfc{stream}_0", nn.Dense(512, precision="highest"))
      setattr(self, f"netfc{stream}_1", FrozenBatchNorm())
      setattr(self, f"netfc{stream}_3", nn.Dense(self.embed_dim, precision="highest"))

  def _block(self, stream: str, i: int, x: jax.Array) -> jax.Array:
    """Conv `i` -> BatchNorm `i + 1` -> ReLU."""
    return nn.relu(getattr(self, f"netcnn{stream}_{i + 1}")(getattr(self, f"netcnn{stream}_{i}")(x)))

  def _head(self, stream: str, x: jax.Array) -> jax.Array:
    x = x.reshape(x.shape[0], -1)
    x = nn.relu(getattr(self, f"netfc{stream}_1")(getattr(self, f"netfc{stream}_0")(x)))
    return getattr(self, f"netfc{stream}_3")(x)

  def embed_audio(self, mfcc: jax.Array) -> jax.Array:
    """MFCC windows `[B, 13, 20, 1]` -> `[B, embed_dim]`."""
    x = self._block("aud", 0, mfcc)
    x = _max_pool(self._block("aud", 4, x), (3, 3), (1, 2))
    x = self._block("aud", 11, self._block("aud", 8, x))
    x = _max_pool(self._block("aud", 14, x), (3, 3), (2, 2))
    return self._head("aud", self._block("aud", 18, x))

  def embed_video(self, frames: jax.Array) -> jax.Array:
    """Face frames `[B, 5, 224, 224, 3]` (values in [0, 255]) -> `[B, embed_dim]`."""
    x = _max_pool(self._block("lip", 0, frames), (1, 3, 3), (1, 2, 2))
    x = _max_pool(self._block("lip", 4, x), (1, 3, 3), (1, 2, 2), (0, 1, 1))
    x = self._block("lip", 11, self._block("lip", 8, x))
    x = _max_pool(self._block("lip", 14, x), (1, 3, 3), (1, 2, 2))
    return self._head("lip", self._block("lip", 18, x))

  def __call__(self, mfcc: jax.Array, frames: jax.Array) -> tuple[jax.Array, jax.Array]:
    return self.embed_audio(mfcc), self.embed_video(frames)


def _rename(key: str) -> str | None:
  return None if key.endswith("num_batches_tracked") else key


def load_syncnet(path: str) -> tuple[SyncNet, dict]:
  """Model and params from syncnet_python's `syncnet_v2.model` (or a state dict of its layout).

  Raises `convert.torch_state.CheckpointMismatchError` naming missing, unexpected or mis-shaped keys.
  """
  model = SyncNet()
  template = jax.eval_shape(lambda: model.init(
      jax.random.PRNGKey(0), jnp.zeros((1, 13, 20, 1)), jnp.zeros((1, WINDOW_FRAMES, FACE_SIZE, FACE_SIZE, 3))))
  return model, torch_to_flax(read_state_dict(path), template["params"], source=path, rename=_rename)


def sync_windows(frames: np.ndarray, mfcc: np.ndarray, num_audio_frames: int) -> tuple[np.ndarray, np.ndarray]:
  """Cuts a clip into SyncNet inputs as syncnet_python does.

  Args:
    frames: face crops `[T, 224, 224, 3]`.
    mfcc: `[13, M]` at 100 Hz.
    num_audio_frames: video frames' worth of audio (samples // 640 at 16 kHz, 25 fps).

  Returns:
    video windows `[N, 5, 224, 224, 3]` and audio windows `[N, 13, 20, 1]`, N = min(T, num_audio_frames) - 5.
  """
  n = min(len(frames), num_audio_frames) - WINDOW_FRAMES
  steps = WINDOW_FRAMES * MFCC_STEPS_PER_FRAME
  if n < 1 or (n - 1) * MFCC_STEPS_PER_FRAME + steps > mfcc.shape[1]:
    raise ValueError(f"clip too short for SyncNet windows: {len(frames)} frames, {mfcc.shape[1]} MFCC steps")
  video = np.stack([frames[i:i + WINDOW_FRAMES] for i in range(n)])
  audio = np.stack([mfcc[:, i * MFCC_STEPS_PER_FRAME:i * MFCC_STEPS_PER_FRAME + steps] for i in range(n)])
  return video, audio[..., None]


@dataclasses.dataclass(frozen=True)
class SyncScores:
  """Sync-D (LSE-D, lower is better), Sync-C (LSE-C, higher is better), AV offset in frames, and the
  mean distance per offset `[2 vshift + 1]` (offsets -vshift..vshift)."""

  distance: float
  confidence: float
  offset: int
  mean_distances: np.ndarray


def sync_scores(video_emb: np.ndarray, audio_emb: np.ndarray, vshift: int = 15) -> SyncScores:
  """Scores of one clip from per-window embeddings `[N, D]` of each stream."""
  v, a = np.asarray(video_emb, np.float64), np.asarray(audio_emb, np.float64)
  if v.shape != a.shape or v.ndim != 2:
    raise ValueError(f"expected video and audio embeddings [N, D] of one shape, got {v.shape} and {a.shape}")
  padded = np.pad(a, ((vshift, vshift), (0, 0)))
  window = 2 * vshift + 1
  dists = np.stack([np.linalg.norm(v[i] - padded[i:i + window] + 1e-6, axis=-1) for i in range(len(v))])
  mean = dists.mean(0)
  best = int(np.argmin(mean))
  return SyncScores(distance=float(mean[best]), confidence=float(np.median(mean) - mean[best]),
                    offset=vshift - best, mean_distances=mean)


def clip_sync_scores(model: SyncNet, params: dict, frames: np.ndarray, wave: np.ndarray, vshift: int = 15,
                     batch_size: int = 20) -> SyncScores:
  """Sync-C / Sync-D of one clip, end to end as syncnet_python's `evaluate`.

  Args:
    model, params: from `load_syncnet`.
    frames: face crops `[T, 224, 224, 3]` at 25 fps, values in [0, 255], BGR.
    wave: its 16 kHz mono audio `[N]`, int16-scaled values.
    vshift: offsets searched either side (15 in the Wav2Lip evaluation, 10 in syncnet_python's demo).
    batch_size: windows per SyncNet call.
  """
  video, audio = sync_windows(np.asarray(frames, np.float32), syncnet_mfcc(wave), len(wave) // (SAMPLE_RATE // FPS))
  embed = jax.jit(lambda a, v: model.apply({"params": params}, a, v))
  embeddings = [embed(audio[i:i + batch_size], video[i:i + batch_size]) for i in range(0, len(video), batch_size)]
  audio_emb = np.concatenate([np.asarray(a) for a, _ in embeddings])
  video_emb = np.concatenate([np.asarray(v) for _, v in embeddings])
  return sync_scores(video_emb, audio_emb, vshift)
