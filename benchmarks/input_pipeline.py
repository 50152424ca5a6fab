"""Stage-2 input pipeline throughput (clips/s) against what the tiny model's training step consumes.

Records come from the synthetic_talk TFDS builder (its first 32 clips per split), built on the
fly into a temp dir as ArrayRecord (PNG frames), so the pipeline does the real work: file reads,
PNG decoding, cutting, augmentation. The consumer side is the tiny config's gradient step on one
batch (VAE encode, ReferenceNet, backbone forward+backward on 64x64 clips), jitted; its clips/s is
the rate the pipeline has to beat by 3x.

  python -m benchmarks.input_pipeline [--batches 20]
"""

from __future__ import annotations

import argparse
import itertools
import os
import tempfile
import time

import jax
import jax.numpy as jnp

from benchmarks.common import print_table
from emodiff_jax.train.flops import time_call
import data
from configs import tiny
from emodiff_jax.input import pipeline
from emodiff_jax.models.build import build_models


class _FirstClips(data.synthetic_talk.Builder, skip_registration=True):
  """synthetic_talk limited to its first `NUM_CLIPS` clips per split (256 px renders ~2 s a clip)."""
  name = "synthetic_talk"
  NUM_CLIPS = 32

  def _generate_examples(self, split: str):
    return itertools.islice(super()._generate_examples(split), self.NUM_CLIPS)


def build(resolution: int, clip_frames: int, data_dir: str) -> str:
  """Builds synthetic_talk/bench<resolution> (ArrayRecord) under `data_dir`; returns its TFDS name."""
  name = f"bench{resolution}"
  config = data.synthetic_talk.SyntheticConfig(name=name, resolution=resolution, num_frames=clip_frames,
                                               clips_per_condition=1)
  _FirstClips(config=config, data_dir=data_dir).download_and_prepare(file_format="array_record")
  return f"synthetic_talk/{name}"


def pipeline_rate(name: str, data_dir: str, resolution: int, workers: int, batches: int, batch_size: int,
                  num_frames: int) -> float:
  cfg = pipeline.default_config()
  cfg.update(resolution=resolution, worker_count=workers, batch_size=batch_size, num_frames=num_frames,
             sources=[dict(name=name, data_dir=data_dir, split="train", weight=1.0)])
  it = iter(pipeline.make_dataset(cfg, split="train", process_index=0, process_count=1))
  next(it)  # start-up (worker processes) is not throughput
  start = time.perf_counter()
  for _ in range(batches):
    next(it)
  return batches * batch_size / (time.perf_counter() - start)


def train_step_rate(batch_size: int, num_frames: int) -> float:
  """Clips/s of a gradient step of the tiny model (no optimizer update), 64x64, `num_frames` frames."""
  config = tiny.get_config()
  m = build_models(config.model)
  res = config.model.resolution
  key = jax.random.PRNGKey(0)
  frames = jnp.zeros((batch_size, num_frames, res, res, 3))
  vae_p = m.vae.init(key, frames[:, 0])["params"]
  ctx = jnp.zeros((batch_size, 1, config.model.unet.cross_attention_dim))
  ap = config.model.audio_proj
  audio = jnp.zeros((batch_size, num_frames, ap.num_tokens, ap.context_dim))
  expr = jnp.zeros((batch_size, num_frames, config.model.expression.dim))
  lat = res // 8
  ref_p = m.reference_net.init(key, jnp.zeros((batch_size, lat, lat, 4)), ctx)["params"]
  bb_p = m.backbone.init(key, jnp.zeros((batch_size, num_frames, lat, lat, 4)), jnp.zeros((batch_size,)), ctx,
                         audio_tokens=audio, expression=expr)["params"]

  def loss(trainable, frames, noise):
    ref_p, bb_p = trainable
    latents = m.vae.apply({"params": vae_p}, frames.reshape((-1,) + frames.shape[2:]), method=m.vae.encode).mean
    latents = jax.lax.stop_gradient(latents.reshape(frames.shape[:2] + latents.shape[1:]))
    feats = m.reference_net.apply({"params": ref_p}, latents[:, 0], ctx)
    pred = m.backbone.apply({"params": bb_p}, latents + noise, jnp.full((batch_size,), 500), ctx,
                            reference=feats, audio_tokens=audio, expression=expr)
    return jnp.mean((pred - noise) ** 2)

  step = jax.jit(jax.grad(loss))
  noise = jnp.ones((batch_size, num_frames, lat, lat, 4))
  seconds = time_call(lambda: step((ref_p, bb_p), frames, noise), repeats=5)
  return batch_size / seconds


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--batches", type=int, default=20)
  parser.add_argument("--batch_size", type=int, default=4)
  parser.add_argument("--num_frames", type=int, default=8)
  parser.add_argument("--clip_frames", type=int, default=24, help="frames per stored clip")
  args = parser.parse_args()
  consume = train_step_rate(args.batch_size, args.num_frames)
  rows = []
  with tempfile.TemporaryDirectory() as data_dir:
    for res in (64, 256):
      name = build(res, args.clip_frames, data_dir)
      for workers in (0, 2):
        rate = pipeline_rate(name, data_dir, res, workers, args.batches, args.batch_size, args.num_frames)
        rows.append((f"{res}x{res}", workers, rate, consume, rate / consume))
  print_table(f"Stage-2 clips/s ({args.num_frames} frames, batch {args.batch_size}, {os.cpu_count()} cores; "
              "synthetic_talk built on the fly to ArrayRecord, PNG frames) vs the tiny training step",
              ("resolution", "workers", "pipeline clips/s", "tiny step clips/s", "ratio"), rows)


if __name__ == "__main__":
  main()
