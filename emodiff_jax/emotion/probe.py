"""An expression probe for the synthetic world: a small CNN from a 64x64 frame to its expression code.

The synthetic world's stand-in for DECA/EMOCA (`models/deca.py`): it regresses the 18 named coefficients
of `synth.expression.COEFFICIENTS` from a rendered frame, and pads them with zeros to the 50-d code the
records hold, so clips without ground truth can be labelled the way real clips are by EMOCA.

- `probe_specs` / `probe_dataset`: frames and ground-truth coefficients of `synth.world.generate_clip` for
  the identities of a split ('train' for training, the held-out 'test' identities for evaluation).
- `ExpressionProbe`: 2x2 stride-2 convolutions (64 -> 4 pixels) and a 2-layer MLP head; it predicts
  coefficients standardised by the training set's mean and standard deviation, so each counts equally.
- `train_probe`: AdamW with cosine decay on the mean squared error of the standardised targets, with colour
  augmentation.
- `evaluate_probe`: R^2 per coefficient on a split, and its mean over the coefficients that vary there.

Measured (2-core CPU shared with other jobs): trained on the 168 'train' identities x 22 conditions x 12
frames (44,352 frames, rendered in 330 s) for 4000 steps of batch 64 (915 s), mean R^2 0.955 on the 42
held-out identities x 22 conditions (11,088 frames; lowest: lip_stretch 0.82, lip_press 0.90, brow_lower
0.90) and 0.899 on `list_clips('test')` of both partitions (50-frame clips); 0.992 on training frames.
- `save_probe` / `load_probe`: params and target statistics as flax msgpack, written atomically.
- `probe_extractor`: `frames uint8 [T, H, W, 3] -> float32 [T, 50]`, for
  `input.records.set_expression_extractor`; `probe_features`: the hidden activations `[T, 256]` (FID space).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Sequence

import flax.linen as nn
import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax

from emodiff_jax.atomic_io import write_bytes
from emodiff_jax.synth.expression import COEFFICIENTS, EXPRESSION_DIM
from emodiff_jax.synth.identity import identity_indices
from emodiff_jax.synth.world import ClipSpec, generate_clip, list_clips

RESOLUTION = 64
NUM_COEFFS = len(COEFFICIENTS)  # 18
PARTITIONS = ("mead_like", "hdtf_like")


class ExpressionProbe(nn.Module):
  """Frames `[B, 64, 64, 3]` in [0, 1] -> standardised coefficients `[B, 18]`, or with `features=True` the
  head's hidden activations `[B, hidden]` (the layer before the output, as FID takes InceptionV3's pool
  features rather than its logits).

  Four 2x2 stride-2 convolutions (non-overlapping patches, 64 -> 4 pixels) and a 2-layer MLP head. On a
  2-core CPU a training step of batch 64 took 0.21 s, against 0.71 s with 3x3 stride-2 convolutions.
  """

  widths: Sequence[int] = (32, 64, 128, 256)
  hidden: int = 256

  @nn.compact
  def __call__(self, frames: jax.Array, features: bool = False) -> jax.Array:
    x = frames * 2.0 - 1.0
    for i, width in enumerate(self.widths):
      x = nn.relu(nn.Conv(width, (2, 2), strides=(2, 2), padding="VALID", name=f"conv{i}")(x))
    x = nn.relu(nn.Dense(self.hidden, name="dense0")(x.reshape(x.shape[0], -1)))
    if features:
      return x
    return nn.Dense(NUM_COEFFS, name="dense1")(x)


@dataclasses.dataclass
class ProbeState:
  """Trained probe: `params` and the training targets' `mean`, `std` `[18]` (predictions are de-standardised
  with them)."""

  params: Any
  mean: np.ndarray
  std: np.ndarray


def probe_specs(split: str, conditions_per_identity: int = 22, seed: int = 0) -> list[ClipSpec]:
  """Clips of every identity of `split` in both partitions, each in `conditions_per_identity` (emotion, level)
  conditions drawn from MEAD's 22 (all by default). The 'hdtf_like' identities (neutral in the datasets) are rendered with
  emotions too, so that the probe sees every coefficient on many faces and does not learn them per identity."""
  conditions = sorted({(s.emotion, s.level) for s in list_clips(split, "mead_like")})
  rng = np.random.default_rng(seed)
  specs = []
  for partition in PARTITIONS:
    for identity in identity_indices(partition, split):
      for c in rng.choice(len(conditions), min(conditions_per_identity, len(conditions)), replace=False):
        specs.append(ClipSpec(split, partition, identity, *conditions[c]))
  return specs


def probe_dataset(specs: Sequence[ClipSpec], num_frames: int = 12, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """Frames `[N, 64, 64, 3]` uint8 and ground-truth coefficients `[N, 18]` float32 of `specs`, rendered by
  `generate_clip` as `num_frames`-frame clips (their onset ramps give intermediate intensities)."""
  clips = [generate_clip(spec, num_frames=num_frames, resolution=RESOLUTION, seed=seed) for spec in specs]
  return (np.concatenate([c.frames for c in clips]),
          np.concatenate([c.expression[:, :NUM_COEFFS] for c in clips]).astype(np.float32))


def _batched(run: Callable[[jax.Array], jax.Array], size: int, batch_size: int) -> Callable[[np.ndarray], np.ndarray]:
  """Applies a jitted `run(frames [B, H, W, 3]) -> [B, size]` to any number of frames in chunks of
  `batch_size` (the last one padded, so each frame size compiles once)."""

  def apply(frames: np.ndarray) -> np.ndarray:
    out = np.zeros((len(frames), size), np.float32)
    for i in range(0, len(frames), batch_size):
      chunk = frames[i:i + batch_size]
      padded = np.concatenate([chunk, np.zeros((batch_size - len(chunk), *chunk.shape[1:]), chunk.dtype)])
      out[i:i + len(chunk)] = np.asarray(run(jnp.asarray(padded)))[:len(chunk)]
    return out

  return apply


def _probe_input(frames: jax.Array) -> jax.Array:
  """uint8 `[B, H, W, 3]` -> float `[B, 64, 64, 3]` in [0, 1] (bilinear resize when H, W differ)."""
  x = frames.astype(jnp.float32) / 255.0
  if x.shape[1:3] != (RESOLUTION, RESOLUTION):
    x = jax.image.resize(x, (x.shape[0], RESOLUTION, RESOLUTION, 3), "linear")
  return x


def make_predictor(state: ProbeState, batch_size: int = 256) -> Callable[[np.ndarray], np.ndarray]:
  """`frames uint8 [T, H, W, 3] -> coefficients float32 [T, 18]`, jitted once; frames are resized to 64 if
  needed and run in chunks of `batch_size`."""
  model, mean, std = ExpressionProbe(), jnp.asarray(state.mean), jnp.asarray(state.std)
  run = jax.jit(lambda frames: model.apply({"params": state.params}, _probe_input(frames)) * std + mean)
  return _batched(run, NUM_COEFFS, batch_size)


def probe_features(state: ProbeState, batch_size: int = 256) -> Callable[[np.ndarray], np.ndarray]:
  """`frames uint8 [T, H, W, 3] -> float32 [T, hidden]`: the probe's hidden activations, the feature space of
  the harness's FID on probe features (`eval.harness`)."""
  model = ExpressionProbe()
  run = jax.jit(lambda frames: model.apply({"params": state.params}, _probe_input(frames), features=True))
  return _batched(run, model.hidden, batch_size)


def _augment(key: jax.Array, x: jax.Array) -> jax.Array:
  """Random per-channel gain in [0.8, 1.2] and brightness offset in [-0.1, 0.1] on `[B, H, W, 3]` in [0, 1].

  Colour only: skin, hair and background colours vary with identity, while a shift of the image would
  change what head yaw/pitch look like (they move the face).
  """
  k_gain, k_bias = jax.random.split(key)
  gain = jax.random.uniform(k_gain, (x.shape[0], 1, 1, 3), minval=0.8, maxval=1.2)
  bias = jax.random.uniform(k_bias, (x.shape[0], 1, 1, 1), minval=-0.1, maxval=0.1)
  return jnp.clip(x * gain + bias, 0.0, 1.0)


def train_probe(frames: np.ndarray, targets: np.ndarray, steps: int = 4000, batch_size: int = 64,
                learning_rate: float = 1e-3, seed: int = 0, log_every: int = 0) -> ProbeState:
  """Fits `ExpressionProbe` to `frames [N, 64, 64, 3]` uint8 and `targets [N, 18]` (e.g. `probe_dataset`)."""
  mean, std = targets.mean(0), np.maximum(targets.std(0), 1e-3)
  model = ExpressionProbe()
  rng = np.random.default_rng(seed)
  key, init_key = jax.random.split(jax.random.PRNGKey(seed))
  params = model.init(init_key, jnp.zeros((1, RESOLUTION, RESOLUTION, 3)))["params"]
  tx = optax.adamw(optax.warmup_cosine_decay_schedule(0.0, learning_rate, min(200, steps // 10), steps),
                   weight_decay=1e-4)
  opt_state = tx.init(params)
  norm_targets = (targets - mean) / std

  @jax.jit
  def step(params, opt_state, key, x, y):
    x = _augment(key, x.astype(jnp.float32) / 255.0)

    def loss_fn(p):
      return jnp.mean((model.apply({"params": p}, x) - y) ** 2)

    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  start = time.time()
  for i in range(steps):
    idx = rng.integers(0, len(frames), batch_size)
    params, opt_state, loss = step(params, opt_state, jax.random.fold_in(key, i), frames[idx], norm_targets[idx])
    if log_every and (i + 1) % log_every == 0:
      print(f"probe step {i + 1}/{steps}: loss {float(loss):.4f} ({time.time() - start:.0f} s)")
  return ProbeState(jax.device_get(params), mean, std)


def r2_scores(pred: np.ndarray, target: np.ndarray, min_std: float = 1e-3) -> tuple[np.ndarray, float]:
  """R^2 per coefficient `[18]` (NaN where the target does not vary) and their mean over the varying ones."""
  sse = ((pred - target) ** 2).sum(0)
  sst = ((target - target.mean(0)) ** 2).sum(0)
  varies = target.std(0) > min_std
  r2 = np.where(varies, 1.0 - sse / np.maximum(sst, 1e-12), np.nan)
  return r2, float(np.nanmean(r2))


def evaluate_probe(state: ProbeState, frames: np.ndarray, targets: np.ndarray) -> dict[str, float]:
  """R^2 by coefficient name for the ones that vary in `targets`, plus their mean under 'mean'."""
  r2, mean = r2_scores(make_predictor(state)(frames), targets)
  return {**{name: float(v) for name, v in zip(COEFFICIENTS, r2) if not np.isnan(v)}, "mean": mean}


def probe_extractor(state: ProbeState, batch_size: int = 256) -> Callable[[np.ndarray], np.ndarray]:
  """`frames uint8 [T, H, W, 3] -> float32 [T, 50]` (18 predicted coefficients, zeros after), for
  `input.records.set_expression_extractor`."""
  predict = make_predictor(state, batch_size)

  def extract(frames: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
      raise ValueError(f"expected uint8 frames [T, H, W, 3], got {frames.dtype} {frames.shape}")
    out = np.zeros((len(frames), EXPRESSION_DIM), np.float32)
    out[:, :NUM_COEFFS] = predict(frames)
    return out

  return extract


def save_probe(state: ProbeState, path: str) -> None:
  """Writes `state` as flax msgpack to `path` atomically (`atomic_io.write_bytes`)."""
  data = flax.serialization.msgpack_serialize(
      {"params": state.params, "mean": np.asarray(state.mean), "std": np.asarray(state.std)})
  write_bytes(path, data)


def load_probe(path: str) -> ProbeState:
  """Reads a probe written by `save_probe`, checking its params against `ExpressionProbe`'s shapes."""
  with open(path, "rb") as f:
    try:
      data = flax.serialization.msgpack_restore(f.read())
    except Exception as e:  # msgpack raises several unrelated exception types on corrupt input.
      raise ValueError(f"{path}: not a probe file ({e})") from e
  template = jax.eval_shape(lambda: ExpressionProbe().init(jax.random.PRNGKey(0),
                                                           jnp.zeros((1, RESOLUTION, RESOLUTION, 3))))["params"]
  try:
    params = flax.serialization.from_state_dict(template, data["params"])
  except (KeyError, ValueError, TypeError) as e:
    raise ValueError(f"{path}: probe params do not match ExpressionProbe ({e})") from e
  shapes = jax.tree_util.tree_map(lambda t, p: t.shape == np.shape(p), template, params)
  if not all(jax.tree_util.tree_leaves(shapes)):
    raise ValueError(f"{path}: probe params have the wrong shapes for ExpressionProbe")
  return ProbeState(params, np.asarray(data["mean"], np.float32), np.asarray(data["std"], np.float32))
