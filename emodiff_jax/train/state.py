"""The train state: params of every network, optimizer state (trainable leaves only), EMA params, RNG.

`ema_params` holds the networks that have trainable leaves in this stage (stage 1: ReferenceNet and
backbone; stage 2: backbone and audio projection), complete, so they can be used for sampling as they
are; only their 'train' leaves move (`ema = d * ema + (1 - d) * params`), frozen leaves stay copies.
"""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax

Array = jax.Array


@flax.struct.dataclass
class TrainState:
  """A pytree; `step` counts applied updates, `bad_steps` consecutive skipped (non-finite) steps."""

  step: Array
  params: Any
  opt_state: Any
  ema_params: Any
  rng: Array
  bad_steps: Array
  skipped_steps: Array


def ema_modules(labels: Any) -> tuple[str, ...]:
  """Networks with at least one 'train' leaf."""
  return tuple(name for name, tree in labels.items() if "train" in jax.tree.leaves(tree))


def create_state(params: Any, tx: optax.GradientTransformation, labels: Any, rng: Array, ema_decay: float
                 ) -> TrainState:
  """A fresh state for `params` (`{network: tree}`)."""
  ema = {name: jax.tree.map(jnp.copy, params[name]) for name in ema_modules(labels)} if ema_decay > 0 else {}
  zero = lambda: jnp.zeros((), jnp.int32)  # separate buffers: the state is donated to the step
  return TrainState(step=zero(), params=params, opt_state=tx.init(params), ema_params=ema, rng=rng,
                    bad_steps=zero(), skipped_steps=zero())


def update_ema(ema: Any, params: Any, labels: Any, decay: float) -> Any:
  """One EMA step on the 'train' leaves of the networks in `ema`."""
  def one(e, p, label):
    return e + (1.0 - decay) * (p - e) if label == "train" else e
  return {name: jax.tree.map(one, tree, params[name], labels[name]) for name, tree in ema.items()}


def steps_done(state: TrainState) -> int:
  """Batches consumed: applied plus skipped updates."""
  return int(state.step) + int(state.skipped_steps)
