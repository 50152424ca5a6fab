"""Stage 2 on the synthetic world: the synthetic model (tiny, 4x VAE) on 8-frame 64x64 clips; motion,
audio and expression layers train, the stage-1 layers stay frozen.

  python -m launch.train --config=configs/synthetic_stage2.py --workdir=/tmp/emodiff/stage2 \
      --config.init.stage1_checkpoint=/tmp/emodiff/stage1
"""

import ml_collections

from configs.synthetic_stage1 import synthetic_training


def get_config() -> ml_collections.ConfigDict:
  config = synthetic_training(stage=2, num_frames=8, batch_size=4)
  # MEAD-like clips (the only emotional ones) three times as often as HDTF-like ones.
  mead, = [s for s in config.data.sources if s["name"] == "synth_world/mead_like"]
  mead["weight"] = 3.0
  config.train.steps = 7600  # the shipped checkpoint's stage 2 (Makefile `checkpoint`, README)
  return config
