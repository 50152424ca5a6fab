#!/usr/bin/env bash
# GPU checks for a machine with an NVIDIA GPU and the CUDA JAX + PyTorch already installed: versions, then the
# named parts, each in its own process under its own time limit (one that fails or runs long leaves the rest).
# On an H200 one row of `train_step --config sd15` takes 150-210 s (models built 40 s, PyTorch step 10-18 s, our
# compile 80-110 s), so each part is one row; `unet_small` took 154 s (its xla variant compiled and timed in 97 s).
# sd15_xla runs out of GPU memory (README). Every row is in the README; the default parts (the cuDNN attention
# test and the 2D UNet rows, about 5 minutes) re-check a new JAX or driver.
# Logs go to $OUT (default /tmp/gpu_checks).
#
#   bash benchmarks/gpu_checks.sh [PART ...]   # parts: sd15 sd15_remat sd15_xla small unet_small attention
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
  grep -E '^\||^row|in [0-9]+ s$|peak' "$OUT/$name.log" || tail -5 "$OUT/$name.log"
}
STEP="$PY -m benchmarks.train_step --frames 16 --dtype bfloat16"
run_part() {
  case $1 in
    sd15) part sd15 200 $STEP --config sd15 --attention cudnn --remat none ;;
    sd15_remat) part sd15_remat 260 $STEP --config sd15 --attention cudnn --remat nothing_saveable ;;
    sd15_xla) part sd15_xla 200 $STEP --config sd15 --attention xla --remat none ;;
    small) part small 120 $STEP --config small --attention xla cudnn --remat none ;;
    unet_small) part unet_small 240 $PY -m benchmarks.unet_step --config small --batch 16 --dtype bfloat16 \
      --attention xla cudnn ;;
    attention) part attention 90 $PY -m pytest -q -p no:cacheprovider tests/test_attention.py ;;
    *) echo "unknown part $1"; exit 2 ;;
  esac
}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
$PY -c "import jax, flax, optax, torch, diffusers; print('jax', jax.__version__, jax.devices(), 'flax', flax.__version__,
'optax', optax.__version__, 'torch', torch.__version__, 'diffusers', diffusers.__version__)"
for name in "${@:-attention unet_small}"; do
  for p in $name; do run_part "$p"; done
done
