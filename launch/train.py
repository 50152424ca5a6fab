"""Trains stage 1 or stage 2 (see emodiff_jax/train/loop.py); resumes from the workdir if it has checkpoints.

  python -m launch.train --config=configs/synthetic_stage1.py --workdir=/tmp/emodiff/stage1
  python -m launch.train --config=configs/sd15_stage2.py --workdir=gs://bucket/run --config.mesh.fsdp=8

On several hosts, every process runs the same command; `jax.distributed.initialize()` reads the
cluster from the environment (TPU pod slices, SLURM, or JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES /
JAX_PROCESS_ID). See launch/README.md.
"""

import logging
import os

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", "configs/synthetic_stage1.py", "Training config file.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (checkpoints, TensorBoard, previews).", required=True)
_DISTRIBUTED = flags.DEFINE_enum("distributed", "auto", ["auto", "on", "off"],
                                 "Call jax.distributed.initialize(): auto = when the environment describes a cluster.")


def _cluster_env() -> bool:
  """True when the environment describes a multi-process job JAX can join."""
  if os.environ.get("JAX_COORDINATOR_ADDRESS") or os.environ.get("TPU_WORKER_HOSTNAMES", "").count(",") > 0:
    return True
  return int(os.environ.get("SLURM_NTASKS", "1")) > 1 or int(os.environ.get("OMPI_COMM_WORLD_SIZE", "1")) > 1


def main(argv) -> None:
  del argv
  import jax

  if _DISTRIBUTED.value == "on" or (_DISTRIBUTED.value == "auto" and _cluster_env()):
    jax.distributed.initialize()
  logging.getLogger("emodiff_jax").setLevel(logging.INFO)
  from emodiff_jax.train.loop import train

  train(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
  app.run(main)
