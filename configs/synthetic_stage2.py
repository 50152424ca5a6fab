"""Stage 2 on the synthetic world: the tiny model on 8-frame 64x64 clips; motion, audio and expression
layers train, the stage-1 layers stay frozen.

  python -m launch.train --config=configs/synthetic_stage2.py --workdir=/tmp/emodiff/stage2 \
      --config.init.stage1_checkpoint=/tmp/emodiff/stage1
"""

import ml_collections

from configs import common
from configs.synthetic_stage1 import synthetic_data


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.stage = 2
  config.num_frames = 8
  config.model = common.tiny_model()
  config.data = synthetic_data("clip", 8, 4)
  config.diffusion = common.diffusion()
  config.optim = common.optim()
  config.optim.learning_rate = 3e-4
  config.optim.warmup_steps = 20
  config.optim.ema_decay = 0.99
  config.mesh = common.mesh()
  config.init = common.init()
  config.train = common.train_loop()
  config.train.steps = 300
  config.train.compute_dtype = "float32"
  config.train.log_every = 10
  config.train.checkpoint_every = 100
  config.train.preview_every = 100
  config.train.preview_sampling_steps = 10
  return config
