"""orbax checkpoints of a run: the train state, the grain iterator state (when the run reads through
grain) and the config, per step.

Layout: `<workdir>/checkpoints/<step>/{state, data, config}`. Saves are asynchronous (training goes on
while arrays are written), the last `keep` are kept, and a step directory only appears once complete
(orbax writes to a temporary name and renames), so a kill mid-save never leaves a half checkpoint.
Restoring takes the abstract state of the *current* run, shardings included: a checkpoint saved on one
mesh restores onto any other (each array is read straight into its new sharding).
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Callable, Optional

import grain
import jax
import ml_collections
import orbax.checkpoint as ocp

log = logging.getLogger("emodiff_jax.train")


def abstract_with_shardings(tree: Any, shardings: Any) -> Any:
  """`jax.ShapeDtypeStruct`s of `tree` (arrays or abstract) carrying the target `shardings`."""
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)


def abstract_on_first_device(tree: Any) -> Any:
  """`abstract_with_shardings` placing every leaf on the first local device (reading a run for inference)."""
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  return abstract_with_shardings(tree, jax.tree.map(lambda _: device, tree))


def read_latest(workdir: str, wanted: Callable[[ml_collections.ConfigDict], Any]
                ) -> tuple[ml_collections.ConfigDict, Any, int]:
  """`(config, subtree, step)` from the latest checkpoint of the run in `workdir`, read onto the first device.

  `wanted(config)` gets the run's saved config and returns the abstract part of the state to read (e.g.
  `{'params': {'vae': ...}}`); it may raise when the run is of the wrong kind. FileNotFoundError when the
  run has no checkpoint.
  """
  ckpt = RunCheckpoints(workdir, read_only=True)
  try:
    step = ckpt.latest_step()
    if step is None:
      raise FileNotFoundError(f"{workdir}: no checkpoint in {ckpt.directory}")
    config = ckpt.config(step)
    return config, ckpt.restore_subtree(step, abstract_on_first_device(wanted(config))), step
  finally:
    ckpt.close()


class RunCheckpoints:
  """The `CheckpointManager` of one workdir."""

  def __init__(self, workdir: str, *, save_every: int = 1000, keep: int = 3, async_save: bool = True,
               read_only: bool = False):
    self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
    self.save_every = save_every
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=not read_only,
                                           enable_async_checkpointing=async_save, read_only=read_only)
    self.manager = ocp.CheckpointManager(self.directory, options=options, item_names=("state", "data", "config"))

  def latest_step(self) -> Optional[int]:
    return self.manager.latest_step()

  def restore_or_init(self, abstract_state: Any, shardings: Any, init: Callable[[], Any],
                      data_iterator: Any = None) -> Any:
    """The latest checkpoint's state placed in `shardings` (`data_iterator` set in place), or `init()` when
    the run has no checkpoint yet: how every training loop starts or resumes."""
    latest = self.latest_step()
    if latest is None:
      return init()
    log.info("resuming from %s step %d", self.directory, latest)
    return self.restore(latest, abstract_with_shardings(abstract_state, shardings), data_iterator)

  def save(self, step: int, state: Any, data_iterator: Optional[Any], config: ml_collections.ConfigDict, *,
           force: bool = False) -> bool:
    """Saves when `step` is a multiple of `save_every`, or when `force`d and not already saved; returns
    whether a save started."""
    if not (step % self.save_every == 0 or force) or step == self.latest_step():
      return False
    args = dict(state=ocp.args.PyTreeSave(state), config=ocp.args.JsonSave(json.loads(config.to_json_best_effort())))
    if data_iterator is not None:
      args["data"] = grain.checkpoint.CheckpointSave(data_iterator)
    return self.manager.save(step, args=ocp.args.Composite(**args), force=True)

  def restore(self, step: int, abstract_state: Any, data_iterator: Any = None) -> Any:
    """The state at `step` in the shardings of `abstract_state`; `data_iterator` is set in place."""
    args = {"state": ocp.args.PyTreeRestore(
        item=abstract_state, restore_args=ocp.checkpoint_utils.construct_restore_args(abstract_state))}
    if data_iterator is not None:
      args["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
    return self.manager.restore(step, args=ocp.args.Composite(**args))["state"]

  def restore_subtree(self, step: int, abstract_subtree: Any) -> Any:
    """Part of the saved state, e.g. `{'params': {'backbone': ...}}` (other saved entries are skipped)."""
    args = ocp.args.PyTreeRestore(item=abstract_subtree, partial_restore=True,
                                  restore_args=ocp.checkpoint_utils.construct_restore_args(abstract_subtree))
    return self.manager.restore(step, args=ocp.args.Composite(state=args))["state"]

  def config(self, step: int) -> ml_collections.ConfigDict:
    """The config a checkpoint was saved with."""
    return ml_collections.ConfigDict(self.manager.restore(step, args=ocp.args.Composite(
        config=ocp.args.JsonRestore()))["config"])

  def finish(self, step: int, state: Any, data_iterator: Optional[Any], config: ml_collections.ConfigDict) -> None:
    """End of a run (done or preempted): saves `step` unless already saved, waits for the write, closes."""
    self.save(step, state, data_iterator, config, force=True)
    self.wait()
    self.close()

  def wait(self) -> None:
    """Blocks until pending asynchronous saves are on disk."""
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.close()
