"""Writes a PNG of a trained expression generator's trajectories per emotion at alpha 0.25 / 0.5 / 1.0
(see emodiff_jax/emotion/plot.py), from the workdir's latest checkpoint.

  python -m launch.plot_expr --workdir=/tmp/emodiff/expr_gan --out=expr.png
"""

from absl import app, flags

_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory of launch.train_expr.", required=True)
_OUT = flags.DEFINE_string("out", "expr.png", "Output PNG path.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the shared noise and loudness track.")


def main(argv) -> None:
  del argv
  from emodiff_jax.emotion.plot import plot_run

  plot_run(_WORKDIR.value, _OUT.value, seed=_SEED.value)


if __name__ == "__main__":
  app.run(main)
