"""Trains the synthetic world's expression probe (see emodiff_jax/emotion/probe.py), saves it and prints its
R^2 on the held-out identities.

  python -m launch.train_probe --out=/tmp/emodiff/probe.msgpack                 # the full recipe (~21 min, 2 CPUs)
  python -m launch.train_probe --out=/tmp/probe.msgpack --conditions=6 --steps=500 --eval_conditions=2   # quick
"""

from absl import app, flags

_OUT = flags.DEFINE_string("out", None, "Where to write the probe (flax msgpack).", required=True)
_CONDITIONS = flags.DEFINE_integer("conditions", 22, "(emotion, level) conditions per training identity (of 22).")
_FRAMES = flags.DEFINE_integer("frames", 12, "Frames per rendered clip.")
_STEPS = flags.DEFINE_integer("steps", 4000, "Training steps (batch 64).")
_EVAL_CONDITIONS = flags.DEFINE_integer("eval_conditions", 22, "Conditions per held-out identity (0: skip).")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the condition draw and the training.")


def main(argv) -> None:
  del argv
  from emodiff_jax.emotion import probe

  frames, targets = probe.probe_dataset(probe.probe_specs("train", _CONDITIONS.value, _SEED.value), _FRAMES.value)
  print(f"training on {len(frames)} frames")
  state = probe.train_probe(frames, targets, steps=_STEPS.value, seed=_SEED.value, log_every=max(1, _STEPS.value // 10))
  probe.save_probe(state, _OUT.value)
  if _EVAL_CONDITIONS.value:
    frames, targets = probe.probe_dataset(probe.probe_specs("test", _EVAL_CONDITIONS.value, _SEED.value), _FRAMES.value)
    r2 = probe.evaluate_probe(state, frames, targets)
    print(f"held-out R^2: mean {r2.pop('mean'):.3f}; " + ", ".join(f"{k} {v:.2f}" for k, v in r2.items()))


if __name__ == "__main__":
  app.run(main)
