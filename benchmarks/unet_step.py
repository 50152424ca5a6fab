"""2D UNet forward and forward+backward: ours (jax.jit) against diffusers (PyTorch eager).

Both run the same config and the same weights (the diffusers model is saved with `save_pretrained` and
loaded with `load_unet2d`), on the same chip (CPU, or CUDA when JAX runs on a GPU), in one run, so the
ratio is meaningful. `--dtype bfloat16` computes in bfloat16 on both sides (ours: the modules' compute
dtype, params float32; PyTorch: autocast).

  python -m benchmarks.unet_step [--config small|tiny] [--batch 4] [--repeats 5] [--dtype float32 bfloat16]
      [--profile]

`--profile` then profiles one forward+backward on each side and prints where its time goes, by kind of
work (`benchmarks/op_profile.py`), with the speed-up ours would have if its attention core took no time:
what the rest of the step allows.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.common import DTYPES, print_table, torch_autocast, torch_device, torch_synced
from benchmarks.op_profile import comparison_rows, jax_op_times, torch_op_times
from emodiff_jax.convert.unet import load_unet2d
from emodiff_jax.models.unet import UNet
from emodiff_jax.train.flops import time_call

CONFIGS = {
    # Same block layout as SD-1.5 (3 cross-attention down blocks + 1 plain), scaled down.
    "small": dict(block_out_channels=(64, 128, 256, 256), layers_per_block=2, cross_attention_dim=256,
                  attention_head_dim=8, norm_num_groups=32, sample_size=32),
    "tiny": dict(block_out_channels=(32, 64), layers_per_block=1, cross_attention_dim=64,
                 attention_head_dim=4, norm_num_groups=8, sample_size=16,
                 down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                 up_block_types=("UpBlock2D", "CrossAttnUpBlock2D")),
}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--config", choices=sorted(CONFIGS), nargs="+", default=["tiny", "small"])
  parser.add_argument("--batch", type=int, default=4)
  parser.add_argument("--tokens", type=int, default=16, help="encoder_hidden_states length")
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--attention", nargs="+", default=["xla", "matmul", "chunked"],
                      help="UNetConfig.attention_impl values to time ('cudnn' needs a GPU and --dtype bfloat16)")
  parser.add_argument("--dtype", choices=sorted(DTYPES), nargs="+", default=["float32"])
  parser.add_argument("--profile", action="store_true",
                      help="also print the forward+backward time by kind of work (CPU)")
  args = parser.parse_args()

  import diffusers
  import torch

  torch.set_num_threads(os.cpu_count() or 1)
  device = torch_device()
  rows, profile_rows = [], []
  for name, dtype in ((n, d) for n in args.config for d in args.dtype):
    cfg = CONFIGS[name]
    start = time.perf_counter()
    torch.manual_seed(0)
    ref = diffusers.UNet2DConditionModel(in_channels=4, out_channels=4, **cfg).float()
    with tempfile.TemporaryDirectory() as tmp:
      ref.save_pretrained(tmp)
      unets = {impl: load_unet2d(tmp, attention_impl=impl) for impl in args.attention}
    unets = {impl: (UNet(unet.config, DTYPES[dtype]), p) for impl, (unet, p) in unets.items()}
    ref = ref.to(device)
    params = jax.tree_util.tree_map(jnp.asarray, next(iter(unets.values()))[1])
    s, b, d = cfg["sample_size"], args.batch, cfg["cross_attention_dim"]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((b, s, s, 4), np.float32)
    t = rng.integers(0, 1000, (b,)).astype(np.int32)
    ctx = rng.standard_normal((b, args.tokens, d), np.float32)
    print(f"{name} {dtype}: models built in {time.perf_counter() - start:.0f} s", flush=True)

    ours = {}
    for impl, (unet, _) in unets.items():
      start = time.perf_counter()
      fwd = jax.jit(lambda p, x, t, c, unet=unet: unet.apply({"params": p}, x, t, c))
      loss = lambda p, x, t, c, unet=unet: jnp.mean(unet.apply({"params": p}, x, t, c).astype(jnp.float32) ** 2)
      fwd_bwd = jax.jit(jax.value_and_grad(loss))
      run_fwd_bwd = lambda: fwd_bwd(params, x, t, ctx)
      work = (jax_op_times(run_fwd_bwd, fwd_bwd.lower(params, x, t, ctx).compile().as_text())
              if args.profile else None)
      ours[impl] = (time_call(lambda: fwd(params, x, t, ctx), repeats=args.repeats),
                    time_call(run_fwd_bwd, repeats=args.repeats), np.asarray(fwd(params, x, t, ctx), np.float32), work)
      print(f"{impl}: compiled and timed in {time.perf_counter() - start:.0f} s", flush=True)

    xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()).to(device)
    tt, ct = torch.from_numpy(t).long().to(device), torch.from_numpy(ctx).to(device)

    def torch_fwd():
      with torch.no_grad(), torch_autocast(device, dtype):
        return ref(xt, tt, ct).sample

    def torch_fwd_bwd():
      ref.zero_grad(set_to_none=True)
      with torch_autocast(device, dtype):
        out = ref(xt, tt, ct).sample
      (out.float()**2).mean().backward()
      return out

    start = time.perf_counter()
    ref_f = time_call(torch_synced(torch_fwd, device), repeats=args.repeats)
    ref_fb = time_call(torch_synced(torch_fwd_bwd, device), repeats=args.repeats)
    ref_out = torch_fwd().float().cpu().numpy().transpose(0, 2, 3, 1)
    ref_profile = torch_op_times(torch_synced(torch_fwd_bwd, device)) if args.profile else None
    print(f"PyTorch timed in {time.perf_counter() - start:.0f} s", flush=True)
    for impl, (ours_f, ours_fb, out, profile) in ours.items():
      if profile:
        profile_rows += [(name, dtype, impl) + row for row in comparison_rows(profile, ref_profile)]
      err = f"{np.linalg.norm(out - ref_out) / np.linalg.norm(ref_out):.1e}"
      rows.append((name, dtype, b, f"{s}x{s}", impl, "forward", ours_f * 1e3, ref_f * 1e3, ref_f / ours_f, err))
      rows.append((name, dtype, b, f"{s}x{s}", impl, "forward+backward", ours_fb * 1e3, ref_fb * 1e3,
                   ref_fb / ours_fb, err))
      print("row", rows[-2:], flush=True)
  print_table(
      f"2D UNet step, JAX on {jax.devices()[0].device_kind}, diffusers on {device} ({os.cpu_count()} cores), "
      f"median of {args.repeats}",
      ("config", "dtype", "batch", "latent", "attention", "pass", "ours jit (ms)", "diffusers torch (ms)",
       "speed-up", "output rel. diff"),
      rows,
  )
  if profile_rows:
    print_table(
        "Forward+backward by kind of work (profiled op time per call, ms; benchmarks/op_profile.py)",
        ("config", "dtype", "attention", "work", "ours (ms)", "diffusers (ms)", "diffusers / ours"),
        profile_rows,
    )


if __name__ == "__main__":
  main()
