"""The training run: `train(config, workdir)` builds, restores or initialises, and steps until
`train.steps`, checkpointing, logging and previewing on the way.

- Resume: a workdir with checkpoints continues from its latest one (state, data iterator position,
  onto this run's mesh) with no flag; the config saved beside it is the run's record.
- Preemption: SIGTERM finishes the current step, saves a checkpoint and returns cleanly.
- Non-finite steps are skipped by the step itself; after `train.max_bad_steps` in a row the run stops
  with `NonFiniteError`, saving nothing more, so the last checkpoint is the last good state.
- Logs (process 0): loss, grad norm, learning rate, steps/s, examples/s, MFU (the step's matmul
  FLOPs over the devices' measured matmul peak, `flops.py`) and skipped steps to TensorBoard
  (`<workdir>/tb`) and the console; a preview PNG every `train.preview_every` steps
  (`<workdir>/previews/step_<n>.png`, also in TensorBoard).
"""

from __future__ import annotations

import logging
import os
from typing import Any, Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from emodiff_jax.atomic_io import write_png
from emodiff_jax.input import pipeline
from emodiff_jax.models.build import build_models, init_params
from emodiff_jax.train import flops, preview
from emodiff_jax.train.checkpoint import RunCheckpoints
from emodiff_jax.train.init import initial_params, uses_loaded_weights
from emodiff_jax.train.objective import DiffusionObjective
from emodiff_jax.train.step_loop import StepLoop, train_scalars
from emodiff_jax.train.optimizer import make_optimizer
from emodiff_jax.train.partition import count_by_label, trainable_labels
from emodiff_jax.train.sharding import global_batch, make_mesh, tree_shardings
from emodiff_jax.train.state import TrainState, create_state, steps_done
from emodiff_jax.train.step import jit_train_step, make_train_step
from emodiff_jax.train.writer import MetricWriter

log = logging.getLogger("emodiff_jax.train")


class NonFiniteError(RuntimeError):
  """Too many consecutive steps with a non-finite loss or gradient."""


def save_if_good(ckpt: RunCheckpoints, done: int, state: TrainState, data_iter: Any,
                 config: ml_collections.ConfigDict) -> None:
  """After step `done`: NonFiniteError after `train.max_bad_steps` non-finite steps in a row (nothing saved,
  so the last checkpoint is the last good state); otherwise `ckpt.save` when the step was applied."""
  if int(state.bad_steps) >= config.train.max_bad_steps:
    ckpt.wait()
    raise NonFiniteError(f"{config.train.max_bad_steps} consecutive steps had a non-finite loss or gradient "
                         f"(step {done}); the last checkpoint in {ckpt.directory} is the last good state")
  if int(state.bad_steps) == 0:
    ckpt.save(done, state, data_iter, config)


def _config_checks(config: ml_collections.ConfigDict) -> None:
  want = {1: "image", 2: "clip"}.get(config.stage)
  if want is None:
    raise ValueError(f"config.stage must be 1 or 2, got {config.stage!r}")
  if config.data.stage != want:
    raise ValueError(f"stage {config.stage} trains on data.stage={want!r}, config has {config.data.stage!r}")
  if config.stage == 2 and config.data.num_frames != config.num_frames:
    raise ValueError(f"data.num_frames={config.data.num_frames} differs from num_frames={config.num_frames}")


def train(config: ml_collections.ConfigDict, workdir: str, *, devices: Optional[list] = None) -> TrainState:
  """Runs (or resumes) the training job in `workdir`; returns the final state."""
  _config_checks(config)
  os.makedirs(workdir, exist_ok=True)
  mesh = make_mesh(config.mesh, devices)
  models = build_models(config.model, jnp.dtype(config.train.compute_dtype))
  k_init, k_state = jax.random.split(jax.random.PRNGKey(config.train.seed))
  abstract_params = jax.eval_shape(lambda k: init_params(models, config.model, k), k_init)
  labels = trainable_labels(abstract_params, config.stage, config.train.get("train_2d_in_stage2", False))
  counts = count_by_label(abstract_params, labels)
  tx, schedule = make_optimizer(config.optim, labels, config.train.steps)
  make_state = lambda p: create_state(p, tx, labels, k_state, config.optim.ema_decay)
  abstract_state = jax.eval_shape(make_state, abstract_params)
  state_sh = tree_shardings(abstract_state, mesh, config.mesh.rules)
  objective = DiffusionObjective(models, config.diffusion, config.stage, config.data.frame_stride,
                                 config.data.audio_margin)

  data_iter = iter(pipeline.make_dataset(config.data, split="train"))
  ckpt = RunCheckpoints(workdir, save_every=config.train.checkpoint_every, keep=config.train.keep_checkpoints,
                        async_save=config.train.async_checkpoints)

  def init() -> TrainState:
    if uses_loaded_weights(config.init):
      return jax.jit(make_state, out_shardings=state_sh)(initial_params(config, models, k_init))
    # initialised directly in its shards: nothing is ever whole on one device
    return jax.jit(lambda k: make_state(init_params(models, config.model, k)), out_shardings=state_sh)(k_init)

  state = ckpt.restore_or_init(abstract_state, state_sh, init, data_iter)
  log.info("mesh %s; params: %s trainable, %s frozen", dict(mesh.shape), f"{counts['train']:,}",
           f"{counts['frozen']:,}")

  step_fn = jit_train_step(
      make_train_step(objective, tx, labels, accum_steps=config.optim.accum_steps,
                      ema_decay=config.optim.ema_decay, learning_rate=schedule),
      state_sh, mesh)
  preview_fn = jax.jit(lambda p, b, r: preview.sample_frames(objective, p, b, r, config.train.preview_sampling_steps))
  writer = MetricWriter(os.path.join(workdir, "tb"))
  keys = objective.batch_keys
  compiled, step_flops, peak = None, 0.0, 0.0
  loop = StepLoop(steps_done(state), config.train.steps, desc=f"stage {config.stage}")
  for done in loop:
    host_batch = next(data_iter)
    batch = global_batch({k: host_batch[k] for k in keys}, mesh)
    if compiled is None:
      traced = step_fn.trace(state, batch)  # traced once: compiled and counted
      compiled = traced.lower().compile()
      step_flops, peak = flops.jaxpr_flops(traced.jaxpr), flops.matmul_peak_flops() * jax.device_count()
      loop.restart_clock()
    state, metrics = compiled(state, batch)
    loop.record(metrics)
    save_if_good(ckpt, done, state, data_iter, config)
    if loop.log_due(config.train.log_every):
      stacked, seconds = loop.flush()
      scalars = train_scalars(stacked, seconds, state.skipped_steps)
      scalars.update(examples_per_sec=config.data.batch_size / seconds,
                     mfu=step_flops / seconds / peak if peak else 0.0)
      writer.write_scalars(done, scalars)
      loop.bar.set_postfix(loss=f"{scalars['loss']:.4f}")
    if config.train.preview_every and done % config.train.preview_every == 0:
      _write_preview(preview_fn, state, host_batch, keys, config, workdir, writer, done)
      loop.restart_clock()
  ckpt.finish(loop.done, state, data_iter, config)
  writer.close()
  return state


def _write_preview(preview_fn: Any, state: TrainState, host_batch: dict, keys: tuple, config: ml_collections.ConfigDict,
                   workdir: str, writer: MetricWriter, step: int) -> None:
  """Samples the first examples of this host's batch with the EMA params (raw ones without EMA)."""
  if "reference" not in host_batch:
    return  # precomputed latents only: no pixels to show beside the samples
  n = config.train.preview_examples
  small = {k: np.asarray(host_batch[k][:n]) for k in keys}
  params = dict(state.params)
  params.update(state.ema_params)
  sampled = np.asarray(preview_fn(params, small, jax.random.PRNGKey(step)))
  truth = host_batch["target"][:n, None] if config.stage == 1 else host_batch["frames"][:n]
  grid = preview.preview_grid(np.asarray(host_batch["reference"][:n]), np.asarray(truth), sampled)
  if jax.process_index() == 0:
    os.makedirs(os.path.join(workdir, "previews"), exist_ok=True)
    write_png(os.path.join(workdir, "previews", f"step_{step:07d}.png"), grid)
  writer.write_image(step, "preview", grid)
