#!/usr/bin/env bash
# GPU checks in one call, for a machine with an NVIDIA GPU and the CUDA JAX + PyTorch already installed:
# versions, cuDNN attention against XLA, then the stage-2 train step and the 2D UNet step against diffusers on
# the same GPU. Each part runs under its own time limit, so one that fails or runs long leaves the rest.
# Logs go to $OUT (default /tmp/gpu_checks).
#
#   bash benchmarks/gpu_checks.sh
set -u
OUT=${OUT:-/tmp/gpu_checks}
mkdir -p "$OUT"
export PYTHONPATH=".:${PYTHONPATH:-}" PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
PY=${PY:-python3}
part() {  # part NAME SECONDS COMMAND...: runs COMMAND with a time limit, log in $OUT/NAME.log
  local name=$1 limit=$2; shift 2
  echo "== $name (limit ${limit}s) $(date +%T)"
  timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
  echo "== $name: exit $? $(date +%T)"
  grep -E '^\|' "$OUT/$name.log" || tail -5 "$OUT/$name.log"
}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
$PY -c "import jax, flax, optax, torch, diffusers; print('jax', jax.__version__, jax.devices(), 'flax', flax.__version__,
'optax', optax.__version__, 'torch', torch.__version__, 'diffusers', diffusers.__version__)"
part attention 90 $PY -m pytest -q -p no:cacheprovider tests/test_attention.py
part train_step_small 200 $PY -m benchmarks.train_step --config small --frames 16 --dtype float32 bfloat16 \
  --attention xla cudnn --remat none nothing_saveable
part train_step_sd15 230 $PY -m benchmarks.train_step --config sd15 --frames 16 --dtype bfloat16 --attention cudnn \
  --remat none nothing_saveable
part unet_step_small 120 $PY -m benchmarks.unet_step --config small --batch 16 --dtype float32 bfloat16 \
  --attention xla cudnn
