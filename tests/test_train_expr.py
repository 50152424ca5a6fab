"""The expression GAN's training run (`emotion/gan_loop.py`) and its plot (`emotion/plot.py`)."""

import os
import signal

import jax
import numpy as np
from PIL import Image

from configs import expr_gan_synthetic
from emodiff_jax.emotion import gan_loop
from emodiff_jax.emotion.plot import ALPHAS, plot_run
from emodiff_jax.synth.expression import EMOTIONS, EXPRESSION_DIM

STEPS = 20


def tiny_config():
  config = expr_gan_synthetic.get_config()
  config.model.update(noise_dim=4, embed_dim=4, hidden_size=16, num_layers=1, disc_channels=16, disc_layers=2,
                      disc_kernel=3)
  config.data.update(clips_per_condition=1, num_frames=16)
  config.train.update(steps=STEPS, batch_size=8, log_every=5, checkpoint_every=4, keep_checkpoints=2)
  return config


def leaves(state):
  return jax.tree.leaves(jax.device_get(state.replace(rng=jax.random.key_data(state.rng))))


def test_sigterm_resume_reproduces_params_and_data_order_and_plot_is_written(tmp_path, monkeypatch):
  data = gan_loop.training_data(tiny_config())
  assert data.expression.shape == (len(data), 16, EXPRESSION_DIM)
  monkeypatch.setattr(gan_loop, "training_data", lambda config: data)  # built once for the three runs
  straight = gan_loop.train_expression_gan(tiny_config(), str(tmp_path / "straight"))
  assert int(straight.step) == STEPS
  assert sorted(os.listdir(tmp_path / "straight" / "checkpoints")) == ["16", "20"]  # every 4, last 2 kept
  assert any(f.startswith("events.out.tfevents") for f in os.listdir(tmp_path / "straight" / "tb"))

  # SIGTERM during step 10's batch: that step finishes, is saved (not a multiple of 4), and the run returns.
  local_batch, batches = gan_loop._local_batch, []

  def terminate_at_half(data, config, step, p):
    batches.append(step)
    if step == STEPS // 2 - 1:
      os.kill(os.getpid(), signal.SIGTERM)
    return local_batch(data, config, step, p)

  monkeypatch.setattr(gan_loop, "_local_batch", terminate_at_half)
  interrupted = gan_loop.train_expression_gan(tiny_config(), str(tmp_path / "resumed"))
  assert int(interrupted.step) == STEPS // 2 and batches == list(range(STEPS // 2))
  assert sorted(os.listdir(tmp_path / "resumed" / "checkpoints")) == ["10", "8"]
  batches.clear()
  resumed = gan_loop.train_expression_gan(tiny_config(), str(tmp_path / "resumed"))
  assert int(resumed.step) == STEPS and batches == list(range(STEPS // 2, STEPS))  # went on from step 10
  for a, b in zip(leaves(straight), leaves(resumed), strict=True):
    np.testing.assert_array_equal(a, b)
  # The generator a run hands on (to bundles, `launch.eval_expr`) is its EMA, read as saved.
  config, g = gan_loop.load_generator(str(tmp_path / "resumed"))
  assert config.train.ema_decay > 0
  ema, raw = (jax.tree.leaves(jax.device_get(t)) for t in (resumed.g_ema, resumed.g_params))
  for a, b in zip(jax.tree.leaves(g), ema, strict=True):
    np.testing.assert_array_equal(a, b)
  assert any(np.abs(a - b).max() > 0 for a, b in zip(ema, raw))

  out = tmp_path / "expr.png"
  image = plot_run(str(tmp_path / "resumed"), str(out))
  with open(out, "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  assert 10_000 < os.path.getsize(out) < 2_000_000
  with Image.open(out) as png:
    assert png.size == (image.shape[1], image.shape[0]) and png.mode == "RGB"
  assert image.shape[0] > 100 * len(EMOTIONS) and image.shape[1] > 200 * len(ALPHAS)
  assert (image < 128).any(axis=-1).mean() > 0.01  # curves and labels were drawn, not a blank page
