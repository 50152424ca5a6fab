"""The expression GAN's training run: `train_expression_gan(config, workdir)` builds or resumes the GAN
state (`emotion/gan_train.py`) and steps until `train.steps`, checkpointing and logging on the way.

- Data: `config.data.source` 'synthetic' (trajectories straight from the synthetic world) or 'records'
  (windows of a built ArrayRecord dataset, `config.data.records`: name, data_dir, split). Step `n`'s
  batch is drawn from `(config.seed, n)` alone, so a resumed run sees exactly the batches of an
  uninterrupted one.
- Sharding: the state is placed by `train.sharding.tree_shardings` on the `config.mesh` mesh, the batch
  is split over `data` x `fsdp`, and the step is jitted with those shardings (`train.step.jit_train_step`).
- Checkpoints: `<workdir>/checkpoints/<step>/{state, config}` (`train.checkpoint.RunCheckpoints`' layout,
  no data item) every `train.checkpoint_every` steps, the last `train.keep_checkpoints` kept. A workdir
  with checkpoints resumes from its latest one with no flag; SIGTERM saves the current step and returns.
- Logs: the step's metrics averaged over `train.log_every` steps to TensorBoard (`<workdir>/tb`) and the
  console, and a tqdm progress bar.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import jax
import ml_collections
import numpy as np

from emodiff_jax.emotion.expression_data import ExpressionData, record_trajectories, synthetic_trajectories
from emodiff_jax.emotion.gan_train import GANState, batch_indices, create_gan_state, make_gan_step, model_config
from emodiff_jax.models.expression_gan import init_params
from emodiff_jax.train.checkpoint import RunCheckpoints, read_latest
from emodiff_jax.train.step_loop import StepLoop, means
from emodiff_jax.train.sharding import global_batch, make_mesh, tree_shardings
from emodiff_jax.train.step import jit_train_step
from emodiff_jax.train.writer import MetricWriter

log = logging.getLogger("emodiff_jax.train")


def training_data(config: ml_collections.ConfigDict) -> ExpressionData:
  """The train trajectories `config.data` describes (`source`: 'synthetic' or 'records')."""
  data = config.data
  if data.source == "synthetic":
    return synthetic_trajectories("train", data.clips_per_condition, data.num_frames, data.seed, data.partitions,
                                  config.model.expression_dim)
  if data.source == "records":
    from emodiff_jax.input.records import RecordReader  # TFDS is only imported for record sources.
    return record_trajectories(RecordReader(data.records.name, data.records.split, data.records.data_dir),
                               data.num_frames)
  raise ValueError(f"config.data.source must be 'synthetic' or 'records', got {data.source!r}")


def _local_batch(data: ExpressionData, config: ml_collections.ConfigDict, step: int,
                 p: np.ndarray | None) -> dict[str, np.ndarray]:
  """This process's contiguous share of step `step`'s global batch (row probabilities `p [N]`, or uniform)."""
  index = batch_indices(config.seed, step, len(data), config.train.batch_size, p)
  share = config.train.batch_size // jax.process_count()
  return data.batch(index[jax.process_index() * share:(jax.process_index() + 1) * share])


def train_expression_gan(config: ml_collections.ConfigDict, workdir: str) -> GANState:
  """Runs (or resumes) the expression GAN's training in `workdir`; returns the final state."""
  os.makedirs(workdir, exist_ok=True)
  mesh = make_mesh(config.mesh)
  rng = jax.random.key(config.seed)
  abstract_state = jax.eval_shape(lambda k: create_gan_state(config, k), rng)
  state_sh = tree_shardings(abstract_state, mesh, config.mesh.rules)
  ckpt = RunCheckpoints(workdir, save_every=config.train.checkpoint_every, keep=config.train.keep_checkpoints,
                        async_save=config.train.async_checkpoints)
  state = ckpt.restore_or_init(abstract_state, state_sh,
                               lambda: jax.jit(lambda k: create_gan_state(config, k), out_shardings=state_sh)(rng))
  data = training_data(config)
  p = data.sampling_weights(config.train.get("balance_emotions", False))
  log.info("mesh %s; %d training trajectories %s", dict(mesh.shape), len(data), data.expression.shape[1:])

  step_fn = jit_train_step(make_gan_step(config), state_sh, mesh)
  writer = MetricWriter(os.path.join(workdir, "tb"))
  loop = StepLoop(int(state.step), config.train.steps, desc="expression GAN")
  for done in loop:
    state, metrics = step_fn(state, global_batch(_local_batch(data, config, done - 1, p), mesh))
    loop.record(metrics)
    ckpt.save(done, state, None, config)
    if loop.log_due(config.train.log_every):
      stacked, seconds = loop.flush()
      scalars = dict(means(stacked), steps_per_sec=1.0 / seconds)
      writer.write_scalars(done, scalars)
      loop.bar.set_postfix(d_loss=f"{scalars['d_loss']:.3f}", g_loss=f"{scalars['g_loss']:.3f}")
  ckpt.finish(loop.done, state, None, config)
  writer.close()
  return state


def load_generator(workdir: str) -> tuple[ml_collections.ConfigDict, Any]:
  """The config and generator params of `workdir`'s latest checkpoint: the EMA (`g_ema`) when the run kept one
  (`train.ema_decay > 0`), else `g_params`; only that tree is read."""
  key = lambda config: "g_ema" if config.train.get("ema_decay", 0.0) > 0 else "g_params"
  wanted = lambda config: {key(config): jax.eval_shape(lambda k: init_params(model_config(config), k)[0],
                                                       jax.random.key(0))}
  config, restored, _ = read_latest(workdir, wanted)
  return config, restored[key(config)]
