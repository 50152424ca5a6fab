"""The optimizer from the `optim` config section: AdamW, warmup then constant, cosine or warmup-stable-decay,
global-norm clipping, applied only to the parameters labelled 'train' (`partition.trainable_labels`).

Frozen parameters go through `optax.set_to_zero()`, which keeps no state, so the AdamW moments exist only
for what trains, and frozen values stay bit-identical (`p + 0 == p`).
"""

from __future__ import annotations

from typing import Any

import ml_collections
import optax

SCHEDULES = ("constant", "cosine", "wsd")


def learning_rate(optim: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
  """Linear warmup from 0 over `warmup_steps`, then one of
  - 'constant';
  - 'cosine': decay to 0 at the horizon;
  - 'wsd' (warmup-stable-decay, Hägele et al. 2024): constant, then linear decay to 0 over the horizon's last
    `optim.cooldown_steps`, so a constant run resumed with `train.steps` raised and a cooldown is the same as
    one wsd run from the start.
  The horizon is `optim.decay_steps` (0 or absent: `total_steps`, the run's length; a longer horizon makes a
  run that stops early the first part of a longer one)."""
  if optim.schedule not in SCHEDULES:
    raise ValueError(f"optim.schedule must be one of {SCHEDULES}, got {optim.schedule!r}")
  warmup = int(optim.warmup_steps)
  horizon = int(optim.get("decay_steps", 0) or total_steps)
  if optim.schedule != "constant" and horizon < total_steps:
    raise ValueError(f"optim.decay_steps={horizon} is shorter than the run's {total_steps} steps: the steps "
                     "after it would train at learning rate 0")
  if optim.schedule == "constant":
    after = optax.constant_schedule(optim.learning_rate)
  elif optim.schedule == "cosine":
    after = optax.cosine_decay_schedule(optim.learning_rate, max(1, horizon - warmup))
  else:
    cooldown = int(optim.get("cooldown_steps", 0))
    if not 0 < cooldown <= horizon - warmup:
      raise ValueError(f"optim.schedule='wsd' needs 0 < optim.cooldown_steps <= {horizon - warmup} (the steps "
                       f"after warmup), got {cooldown}")
    stable = horizon - warmup - cooldown
    after = optax.join_schedules([optax.constant_schedule(optim.learning_rate),
                                  optax.linear_schedule(optim.learning_rate, 0.0, cooldown)], [stable])
  if warmup == 0:
    return after
  return optax.join_schedules([optax.linear_schedule(0.0, optim.learning_rate, warmup), after], [warmup])


def make_optimizer(optim: ml_collections.ConfigDict, labels: Any, total_steps: int
                   ) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """`(tx, schedule)`: `tx` is `optax.multi_transform` with clip + AdamW on 'train' leaves and zero updates (no
  state) on 'frozen' ones; `schedule` is its learning rate by step (the train step checks and logs it)."""
  schedule = learning_rate(optim, total_steps)
  train = optax.chain(
      optax.clip_by_global_norm(optim.clip_norm) if optim.clip_norm > 0 else optax.identity(),
      optax.adamw(schedule, b1=optim.b1, b2=optim.b2, eps=optim.eps,
                  weight_decay=optim.weight_decay),
  )
  return optax.multi_transform({"train": train, "frozen": optax.set_to_zero()}, labels), schedule
