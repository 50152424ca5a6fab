"""Video sampling speed (random weights, one run): seconds per generated frame, and the design choices of
`emodiff_jax/sampling/video.py` against their alternatives, each pair timed in the same run:

- the `lax.scan` loop vs a Python loop over the steps (the jitted denoiser called once per step);
- guidance passes batched into one backbone call vs one call per pass;
- emotion guidance at every step vs limited to t >= 500 (its extra pass skipped at the other steps);
- the ReferenceNet (and the audio encoder) run once vs at every denoising step (both in a Python loop:
  inside one `lax.scan` XLA hoists the loop-invariant ReferenceNet out of the loop by itself).

Per config: one window of `--window` frames (batch 1), `--steps` DDIM steps, guidance scales 2 / 3 / 1.5
(reference / audio / expression: 4 passes) unless a row says otherwise; seconds per frame count the
window's sampling and the VAE decoding of its frames.

  python -m benchmarks.sampling [--config tiny synthetic small] [--steps 10] [--window 8]
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import ml_collections

from benchmarks.common import print_table
from configs import common, synthetic_stage1
from emodiff_jax.models.build import build_models, init_params
from emodiff_jax.sampling.loop import sample, sample_python_loop
from emodiff_jax.sampling.video import VideoSampler, sampling_config
from emodiff_jax.train.flops import time_call

SCALES = dict(reference=2.0, audio=3.0, expression=1.5)


def _model(name: str) -> ml_collections.ConfigDict:
  if name == "synthetic":  # the shipped checkpoint's model (4x VAE: 64x64 frames, 16x16 latents)
    return synthetic_stage1.synthetic_model()
  m = common.tiny_model()
  if name == "small":  # SD-1.5's block layout, narrower, on 128x128 frames (16x16 latents)
    m.resolution = 128
    m.unet.update(block_out_channels=(64, 128, 256, 256), layers_per_block=2, cross_attention_dim=256,
                  attention_head_dim=8, norm_num_groups=32,
                  down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                  up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)
    m.motion.update(num_attention_heads=8, layers_per_block=2, norm_num_groups=32, use_mid_block=True)
    m.audio_proj.context_dim = 256
  return m


def _sampler(model, steps: int, window: int, **changes) -> VideoSampler:
  s = sampling_config()
  s.update(num_steps=steps, window=window, decode_chunk=window)
  s.guidance.update(changes.pop("guidance", SCALES))
  s.update(changes)
  diffusion = common.diffusion()
  return VideoSampler(build_models(model), diffusion, s)


def bench(name: str, steps: int, window: int) -> list[list[object]]:
  model = _model(name)
  params = init_params(build_models(model), model, jax.random.key(0))
  m = 2
  r = model.resolution
  image = jax.random.uniform(jax.random.key(1), (1, r, r, 3), minval=-1, maxval=1)
  audio = 0.1 * jax.random.normal(jax.random.key(2), (1, (window + 2 * m) * 640))
  expression = 0.3 * jax.random.normal(jax.random.key(3), (1, window, 50))
  keys = jax.random.key(0)[None]
  rows = []

  neutral = 0.3 * jax.random.normal(jax.random.key(5), (1, window, 50))  # intensity-0 trajectory (emotion rows)

  def per_frame(sampler: VideoSampler) -> float:
    ref = sampler.reference(params, image)
    motion = jnp.zeros((1, sampler.cfg.overlap) + ref["latent"].shape[1:])

    def run():
      lat = sampler.window(params, ref, audio, expression, motion, jnp.asarray(False), keys, jnp.asarray(0),
                           neutral if sampler.guidance.needs_neutral else None)
      return sampler.decode_frames(params, lat[0])
    return time_call(run, warmup=1, repeats=3) / window

  guided = _sampler(model, steps, window)
  base = per_frame(guided)
  rows.append([name, "window: scan, batched passes, reference once (4 passes)", base, 1.0])
  unguided = dict(reference=1.0, audio=1.0, expression=1.0)
  single = per_frame(_sampler(model, steps, window, guidance=unguided))
  rows.append([name, "no guidance (1 pass)", single, single / base])
  every = per_frame(_sampler(model, steps, window, guidance=dict(unguided, emotion=3.0)))
  rows.append([name, "emotion guidance every step (2 passes; ratio to no guidance)", every, every / single])
  limited = per_frame(_sampler(model, steps, window, guidance=dict(unguided, emotion=3.0, emotion_t_min=500)))
  rows.append([name, "emotion guidance at t >= 500 (2 passes there, 1 elsewhere; ratio to no guidance)", limited,
               limited / single])
  separate = per_frame(_sampler(model, steps, window, batch_passes=False))
  rows.append([name, "guidance passes as separate calls", separate, separate / base])

  # Loops and the ReferenceNet placement, on the denoising alone (no decoding).
  ref = guided.reference(params, image)
  conds = guided.conditions(params, ref, audio, expression)
  x_T = jax.random.normal(jax.random.key(4), (1, window) + ref["latent"].shape[1:])
  kw = guided.sample_kwargs
  scan = jax.jit(lambda p, c, x: sample(guided.denoiser(p, c), guided.objective.schedule, x, **kw))
  t_scan = time_call(lambda: scan(params, conds, x_T), repeats=3) / window
  rows.append([name, "denoising only: lax.scan", t_scan, 1.0])
  step = jax.jit(lambda p, c, x, t: guided.denoiser(p, c)(x, t))
  t_loop = time_call(lambda: sample_python_loop(lambda x, t: step(params, conds, x, t), guided.objective.schedule,
                                                x_T, **kw), repeats=3) / window
  rows.append([name, "denoising only: Python loop over the jitted step", t_loop, t_loop / t_scan])
  rows.append([name, "Python loop: conditions computed once", t_loop, 1.0])

  # A Python loop cannot hoist the ReferenceNet out of the steps (XLA would, inside one scan).
  step_with_ref = jax.jit(lambda p, images, a, e, x, t: guided.denoiser(
      p, guided.conditions(p, guided.reference(p, images), a, e))(x, t))
  t_ref = time_call(lambda: sample_python_loop(lambda x, t: step_with_ref(params, image, audio, expression, x, t),
                                               guided.objective.schedule, x_T, **kw), repeats=3) / window
  rows.append([name, "Python loop: ReferenceNet and audio encoder every step", t_ref, t_ref / t_loop])
  return rows


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--config", nargs="+", default=["tiny", "small"], choices=["tiny", "synthetic", "small"])
  p.add_argument("--steps", type=int, default=10)
  p.add_argument("--window", type=int, default=8)
  args = p.parse_args()
  rows = []
  for name in args.config:
    rows += bench(name, args.steps, args.window)
  print_table(f"Video sampling, {args.steps} DDIM steps, window of {args.window} frames, batch 1 "
              f"({jax.devices()[0].platform})", ["config", "variant", "s / frame", "ratio to the row's baseline"],
              rows)


if __name__ == "__main__":
  main()
