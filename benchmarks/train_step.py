"""Stage-2 training step of the spatio-temporal backbone: ours (jit, the library's train step) against
the same step in PyTorch (diffusers `UNetMotionModel`, eager, CPU), same config and weights, one run.

The step, as stage 2 trains it: forward + backward through the SD-1.5-layout UNet with AnimateDiff motion
modules on `[B, T, h, w, 4]` latents, gradients for the motion modules only (the 2D layers frozen), clip,
AdamW. Per row: step time, steps/s, frames/s, FLOPs per step (XLA cost analysis of our compiled step),
MFU (those FLOPs / our step time / the float32 matmul peak measured in this run), XLA's peak memory
estimate (arguments + outputs + temporaries), with and without per-block rematerialisation.

  python -m benchmarks.train_step [--config tiny small] [--frames 8 16 32] [--remat none nothing_saveable]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.common import print_table
from configs import common
from emodiff_jax.convert.backbone import build_backbone
from emodiff_jax.models.backbone import Backbone
from emodiff_jax.train import optimizer, state as state_lib, step as step_lib
from emodiff_jax.train.flops import compiled_flops, matmul_peak_flops, time_call
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


def _ours(unet_dir: str, adapter_dir: str, remat: str | None, x, t, ctx, noise, peak: float):
  backbone, params = build_backbone(unet_dir, adapter_dir)
  if remat is not None:  # same params, blocks rematerialised in the backward pass
    cfg = backbone.config
    backbone = Backbone(dataclasses.replace(cfg, unet=dataclasses.replace(cfg.unet, remat_policy=remat)))
  params = {"backbone": params}
  labels = jax.tree_util.tree_map_with_path(
      lambda p, _: "train" if is_stage2_layer(tuple(str(getattr(k, "key", k)) for k in p)) else "frozen", params)
  optim = common.optim()
  optim.warmup_steps = 0
  tx, schedule = optimizer.make_optimizer(optim, labels, 1000)

  def objective(p, batch, rng):
    del rng
    pred = backbone.apply({"params": p["backbone"]}, batch["x"], batch["t"], batch["ctx"])
    return jnp.mean((pred - batch["noise"]) ** 2), {}

  step = jax.jit(step_lib.make_train_step(objective, tx, labels, learning_rate=schedule),
                 donate_argnums=(0,))
  state = state_lib.create_state(params, tx, labels, jax.random.PRNGKey(0), 0.0)
  batch = {"x": x, "t": t, "ctx": ctx, "noise": noise}
  compiled = step.lower(state, batch).compile()
  mem = compiled.memory_analysis()
  peak_bytes = (mem.argument_size_in_bytes + mem.output_size_in_bytes + mem.temp_size_in_bytes) if mem else 0
  holder = [state]

  def run():
    holder[0], m = compiled(holder[0], batch)
    return m["loss"]

  seconds = time_call(run, warmup=1, repeats=3)
  flops = compiled_flops(compiled)
  return seconds, flops, flops / seconds / peak, peak_bytes


def _torch_step(ref, x, t, ctx, noise):
  import torch

  for n, p in ref.named_parameters():
    p.requires_grad_("motion_modules" in n)
  trainable = [p for p in ref.parameters() if p.requires_grad]
  opt = torch.optim.AdamW(trainable, lr=1e-5, weight_decay=1e-2)
  b, f = x.shape[:2]
  xt = torch.from_numpy(x.transpose(0, 4, 1, 2, 3).copy())
  tt = torch.from_numpy(t).long()
  ct = torch.from_numpy(np.repeat(ctx, f, 0))
  nt = torch.from_numpy(noise.transpose(0, 4, 1, 2, 3).copy())

  def step():
    opt.zero_grad(set_to_none=True)
    loss = torch.mean((ref(xt, tt, ct).sample - nt) ** 2)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(trainable, 1.0)
    opt.step()
    return loss.detach()

  return time_call(step, warmup=1, repeats=3)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--config", choices=sorted(CONFIGS), nargs="+", default=["tiny", "small"])
  parser.add_argument("--frames", type=int, nargs="+", default=[8, 16, 32])
  parser.add_argument("--remat", nargs="+", default=["none", "nothing_saveable"])
  parser.add_argument("--batch", type=int, default=1)
  parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch reference")
  args = parser.parse_args()

  import torch

  torch.set_num_threads(os.cpu_count() or 1)
  peak = matmul_peak_flops()
  rows = []
  for name in args.config:
    with tempfile.TemporaryDirectory() as tmp:
      ref, unet_dir, adapter_dir = _models(name, tmp)
      s, d = CONFIGS[name]["latent"], CONFIGS[name]["unet"]["cross_attention_dim"]
      for frames in args.frames:
        rng = np.random.default_rng(0)
        x = rng.standard_normal((args.batch, frames, s, s, 4), np.float32)
        noise = rng.standard_normal(x.shape, np.float32)
        t = rng.integers(0, 1000, (args.batch,)).astype(np.int32)
        ctx = rng.standard_normal((args.batch, 8, d), np.float32)
        torch_s = None if args.no_torch else _torch_step(ref, x, t, ctx, noise)
        for remat in args.remat:
          sec, flops, mfu, mem = _ours(unet_dir, adapter_dir, None if remat == "none" else remat, x, t, ctx, noise,
                                       peak)
          rows.append((name, frames, remat, sec * 1e3, 1 / sec, args.batch * frames / sec, flops / 1e9,
                       f"{100 * mfu:.1f}%", mem / 2**20,
                       "-" if torch_s is None else torch_s * 1e3,
                       "-" if torch_s is None else f"{torch_s / sec:.2f}x"))
          print("row", rows[-1], flush=True)  # progress: the table comes at the end
  print_table(
      f"Stage-2 backbone train step, batch {args.batch}, {jax.devices()[0].platform} ({os.cpu_count()} cores); "
      f"measured f32 matmul peak {peak / 1e9:.0f} GFLOP/s",
      ("config", "frames", "remat", "ours (ms)", "steps/s", "frames/s", "GFLOP/step", "MFU", "XLA peak MiB",
       "diffusers torch (ms)", "speed-up"),
      rows)


if __name__ == "__main__":
  main()
