"""Stage-2 training step of the spatio-temporal backbone: ours (jit, the library's train step) against
the same step in PyTorch (diffusers `UNetMotionModel`, eager), same config and weights, on the same chip
(CPU, or CUDA when JAX runs on a GPU), one run.

The step, as stage 2 trains it: forward + backward through the SD-1.5-layout UNet with AnimateDiff motion
modules on `[B, T, h, w, 4]` latents, gradients for the motion modules only (the 2D layers frozen), clip,
AdamW. Per row: step time, steps/s, frames/s, matmul FLOPs per step (counted on our step's jaxpr),
MFU (those FLOPs / our step time / the matmul peak in the compute dtype measured in this run), XLA's
peak memory estimate (arguments + outputs + temporaries), with and without per-block rematerialisation;
`--dtype bfloat16` computes in bfloat16 on both sides (params and optimizer state float32; PyTorch:
autocast), `--attention` picks `UNetConfig.attention_impl` ('cudnn': GPU, bfloat16). The first step's
loss of both sides is compared (same weights, same inputs) as a check that they compute the same step.
`sd15` is SD-1.5's UNet with AnimateDiff's motion modules at 512x512 (64x64 latents): for accelerators.

  python -m benchmarks.train_step [--config tiny small] [--frames 8 16 32] [--remat none nothing_saveable]
                                  [--dtype float32] [--attention xla] [--profile]

`--profile` also profiles the step on both sides and prints where its time goes, by kind of work
(`benchmarks/op_profile.py`), with the speed-up ours would have if its attention core took no time.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.common import DTYPES, print_table, torch_autocast, torch_device, torch_synced
from benchmarks.op_profile import comparison_rows, jax_op_times, torch_op_times
from configs import common
from emodiff_jax.convert.backbone import build_backbone
from emodiff_jax.models.backbone import Backbone
from emodiff_jax.train import optimizer, state as state_lib, step as step_lib
from emodiff_jax.train.flops import jaxpr_flops, matmul_peak_flops, time_call
from emodiff_jax.train.partition import is_stage2_layer

CONFIGS = {
    "tiny": dict(unet=dict(block_out_channels=(32, 64), layers_per_block=1, cross_attention_dim=32,
                           attention_head_dim=4, norm_num_groups=8,
                           down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                           up_block_types=("UpBlock2D", "CrossAttnUpBlock2D")),
                 motion=dict(motion_layers_per_block=1, motion_norm_num_groups=8, motion_num_attention_heads=4,
                             use_motion_mid_block=False),
                 latent=8),
    # SD-1.5's block layout (3 cross-attention down blocks + 1 plain, 2 layers each), narrower.
    "small": dict(unet=dict(block_out_channels=(64, 128, 256, 256), layers_per_block=2, cross_attention_dim=256,
                            attention_head_dim=8, norm_num_groups=32),
                  motion=dict(motion_layers_per_block=2, motion_norm_num_groups=32, motion_num_attention_heads=8,
                              use_motion_mid_block=True),
                  latent=16),
    # SD-1.5 (runwayml config) + AnimateDiff v2-style motion modules (with a motion mid block), 512x512.
    "sd15": dict(unet=dict(block_out_channels=(320, 640, 1280, 1280), layers_per_block=2, cross_attention_dim=768,
                           attention_head_dim=8, norm_num_groups=32),
                 motion=dict(motion_layers_per_block=2, motion_norm_num_groups=32, motion_num_attention_heads=8,
                             use_motion_mid_block=True),
                 latent=64),
}


def _models(name: str, tmp: str):
  """diffusers UNetMotionModel and our backbone with the same weights."""
  import diffusers
  import torch

  cfg = CONFIGS[name]
  torch.manual_seed(0)
  unet = diffusers.UNet2DConditionModel(in_channels=4, out_channels=4, sample_size=cfg["latent"], **cfg["unet"])
  adapter = diffusers.MotionAdapter(block_out_channels=cfg["unet"]["block_out_channels"], motion_max_seq_length=32,
                                    **cfg["motion"])
  unet.save_pretrained(os.path.join(tmp, "unet"))
  adapter.save_pretrained(os.path.join(tmp, "adapter"))
  ref = diffusers.UNetMotionModel.from_unet2d(unet, adapter)
  return ref, os.path.join(tmp, "unet"), os.path.join(tmp, "adapter")


def _ours(built: tuple[Backbone, dict], remat: str | None, attention: str, dtype: str, x, t, ctx, noise,
          peak: float, count_only: bool = False, profile: bool = False):
  """Our step from `build_backbone`'s `(backbone, params)`: (seconds, FLOPs, MFU, XLA peak bytes, first-step loss,
  time by kind of work or None).

  FLOPs are counted on the step traced with XLA attention whatever `attention` runs (`flops.jaxpr_flops`),
  so every backend and kernel is measured against the same count. `count_only`: FLOPs alone, nothing compiled
  (seconds, MFU, peak bytes and loss NaN).
  """
  backbone, params = built
  params = {"backbone": params}
  labels = jax.tree_util.tree_map_with_path(
      lambda p, _: "train" if is_stage2_layer(tuple(str(getattr(k, "key", k)) for k in p)) else "frozen", params)
  optim = common.optim()
  optim.warmup_steps = 0
  tx, schedule = optimizer.make_optimizer(optim, labels, 1000)

  def jitted_step(impl: str | None):
    """The jitted train step with blocks rematerialised by `remat` and attention kernel `impl`."""
    cfg = backbone.config
    net = Backbone(dataclasses.replace(cfg, unet=dataclasses.replace(cfg.unet, remat_policy=remat,
                                                                      attention_impl=impl)), DTYPES[dtype])

    def objective(p, batch, rng):
      del rng
      pred = net.apply({"params": p["backbone"]}, batch["x"], batch["t"], batch["ctx"])
      return jnp.mean((pred.astype(jnp.float32) - batch["noise"]) ** 2), {}

    return jax.jit(step_lib.make_train_step(objective, tx, labels, learning_rate=schedule), donate_argnums=(0,))

  state = state_lib.create_state(params, tx, labels, jax.random.PRNGKey(0), 0.0)
  batch = {"x": x, "t": t, "ctx": ctx, "noise": noise}
  counted = jitted_step(None).trace(state, batch)
  flops = jaxpr_flops(counted.jaxpr)
  if count_only:
    return float("nan"), flops, float("nan"), float("nan"), float("nan"), None
  start = time.perf_counter()
  timed = counted if attention == "xla" else jitted_step(attention).trace(state, batch)
  compiled = timed.lower().compile()
  print(f"compiled in {time.perf_counter() - start:.0f} s", flush=True)
  mem = compiled.memory_analysis()
  peak_bytes = (mem.argument_size_in_bytes + mem.output_size_in_bytes + mem.temp_size_in_bytes) if mem else 0
  holder, losses = [state], []

  def run():
    holder[0], m = compiled(holder[0], batch)
    losses.append(m["loss"])
    return m["loss"]

  seconds = time_call(run, warmup=1, repeats=3)
  first_loss = float(losses[0])
  work = jax_op_times(run, compiled.as_text()) if profile else None
  return seconds, flops, flops / seconds / peak, peak_bytes, first_loss, work


def _torch_step(ref, device: str, dtype: str, x, t, ctx, noise, profile: bool = False):
  """The PyTorch step: (seconds, first-step loss, peak CUDA bytes or None, time by kind of work or None)."""
  import torch

  initial = {k: v.clone() for k, v in ref.state_dict().items()}  # restored below: each dtype starts from these
  ref = ref.to(device)
  for n, p in ref.named_parameters():
    p.requires_grad_("motion_modules" in n)
  trainable = [p for p in ref.parameters() if p.requires_grad]
  opt = torch.optim.AdamW(trainable, lr=1e-5, weight_decay=1e-2)
  b, f = x.shape[:2]
  xt = torch.from_numpy(x.transpose(0, 4, 1, 2, 3).copy()).to(device)
  tt = torch.from_numpy(t).long().to(device)
  ct = torch.from_numpy(np.repeat(ctx, f, 0)).to(device)
  nt = torch.from_numpy(noise.transpose(0, 4, 1, 2, 3).copy()).to(device)
  losses = []

  def step():
    opt.zero_grad(set_to_none=True)
    with torch_autocast(device, dtype):
      pred = ref(xt, tt, ct).sample
    loss = torch.mean((pred.float() - nt) ** 2)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(trainable, 1.0)
    opt.step()
    losses.append(loss.detach())
    return loss.detach()

  if device == "cuda":
    torch.cuda.reset_peak_memory_stats()
  seconds = time_call(torch_synced(step, device), warmup=1, repeats=3)
  peak = torch.cuda.max_memory_allocated() if device == "cuda" else None
  first_loss = float(losses[0])
  work = torch_op_times(torch_synced(step, device)) if profile else None
  ref.to("cpu").load_state_dict(initial)
  if device == "cuda":
    torch.cuda.empty_cache()
  return seconds, first_loss, peak, work


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--config", choices=sorted(CONFIGS), nargs="+", default=["tiny", "small"])
  parser.add_argument("--frames", type=int, nargs="+", default=[8, 16, 32])
  parser.add_argument("--remat", nargs="+", default=["none", "nothing_saveable"])
  parser.add_argument("--dtype", choices=sorted(DTYPES), nargs="+", default=["float32"])
  parser.add_argument("--attention", nargs="+", default=["xla"], help="UNetConfig.attention_impl values")
  parser.add_argument("--batch", type=int, default=1)
  parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch reference")
  parser.add_argument("--count-only", action="store_true",
                      help="count each row's FLOPs, time nothing (a config too big for this machine)")
  parser.add_argument("--profile", action="store_true", help="also print each step's time by kind of work (CPU)")
  args = parser.parse_args()

  import torch

  torch.set_num_threads(os.cpu_count() or 1)
  device = torch_device()
  peaks = {d: matmul_peak_flops(dtype=DTYPES[d]) for d in args.dtype}
  print("measured matmul peak " + ", ".join(f"{k} {v / 1e12:.3g} TFLOP/s" for k, v in peaks.items()), flush=True)
  rows, profile_rows = [], []
  mib = lambda b: "-" if b is None else b / 2**20
  for name in args.config:
    with tempfile.TemporaryDirectory() as tmp:
      start = time.perf_counter()
      ref, unet_dir, adapter_dir = _models(name, tmp)
      backbone, params = build_backbone(unet_dir, adapter_dir)
      print(f"{name}: models built in {time.perf_counter() - start:.0f} s", flush=True)
      built = (backbone, jax.device_get(params))  # host copy: each step donates the device state built from it
      s, d = CONFIGS[name]["latent"], CONFIGS[name]["unet"]["cross_attention_dim"]
      for frames, dtype in ((f, dt) for f in args.frames for dt in args.dtype):
        rng = np.random.default_rng(0)
        x = rng.standard_normal((args.batch, frames, s, s, 4), np.float32)
        noise = rng.standard_normal(x.shape, np.float32)
        t = rng.integers(0, 1000, (args.batch,)).astype(np.int32)
        ctx = rng.standard_normal((args.batch, 8, d), np.float32)
        torch_s, torch_loss, torch_mem, torch_work = None, None, None, None
        if not (args.no_torch or args.count_only):
          start = time.perf_counter()
          torch_s, torch_loss, torch_mem, torch_work = _torch_step(ref, device, dtype, x, t, ctx, noise, args.profile)
          print(f"PyTorch step timed in {time.perf_counter() - start:.0f} s", flush=True)
        for attention, remat in ((a, r) for a in args.attention for r in args.remat):
          sec, flops, mfu, mem, loss, work = _ours(built, None if remat == "none" else remat, attention, dtype, x,
                                                   t, ctx, noise, peaks[dtype], args.count_only, args.profile)
          if work and torch_work:
            profile_rows += [(name, frames, dtype, attention, remat) + row
                             for row in comparison_rows(work, torch_work)]
          rows.append((name, frames, dtype, attention, remat, sec * 1e3, args.batch * frames / sec, flops / 1e9,
                       f"{100 * mfu:.1f}%", mem / 2**20, mib(torch_mem),
                       "-" if torch_s is None else torch_s * 1e3,
                       "-" if torch_s is None else f"{torch_s / sec:.2f}x",
                       "-" if torch_loss is None else f"{abs(loss - torch_loss) / torch_loss:.1e}"))
          print("row", rows[-1], flush=True)  # progress: the table comes at the end
  print_table(
      f"Stage-2 backbone train step, batch {args.batch}, JAX on {jax.devices()[0].device_kind}, diffusers on "
      f"{device} ({os.cpu_count()} cores); measured matmul peak "
      + ", ".join(f"{k} {v / 1e12:.3g} TFLOP/s" for k, v in peaks.items()),
      ("config", "frames", "dtype", "attention", "remat", "ours (ms)", "frames/s", "GFLOP/step", "MFU",
       "XLA peak MiB", "torch CUDA peak MiB", "diffusers torch (ms)", "speed-up", "loss rel. diff"),
      rows)
  if profile_rows:
    print_table(
        "Train step by kind of work (profiled op time per step, ms; benchmarks/op_profile.py)",
        ("config", "frames", "dtype", "attention", "remat", "work", "ours (ms)", "diffusers (ms)", "diffusers / ours"),
        profile_rows)


if __name__ == "__main__":
  main()
