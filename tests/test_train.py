"""Train-step mechanics: per-stage partition, optimizer state only where training happens, frozen params
bit-identical, EMA, the non-finite guard, gradient accumulation, learning-rate schedule, sharding rules,
and the step loop the training loops share (SIGTERM, log windows)."""

import os
import signal

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import common, synthetic_stage2, synthetic_stage2_2d
from emodiff_jax.models.build import abstract_params, build_models
from emodiff_jax.train import optimizer, partition, sharding, state as state_lib, step as step_lib
from emodiff_jax.train.step_loop import StepLoop, means, train_scalars
from tests.train_configs import micro_model


@pytest.fixture(scope="module")
def micro_abstract():
  model = micro_model()
  return abstract_params(build_models(model), model, 2)


def _flat(labels):
  return {jax.tree_util.keystr(p): l for p, l in jax.tree_util.tree_leaves_with_path(labels)}


def test_stage_partition_follows_the_paper(micro_abstract):
  s1 = _flat(partition.trainable_labels(micro_abstract, 1))
  s2 = _flat(partition.trainable_labels(micro_abstract, 2))
  for k in s1:
    if k.startswith("['vae']") or k.startswith("['wav2vec2']"):
      assert s1[k] == s2[k] == "frozen", k
    elif k.startswith("['reference_net']"):
      assert (s1[k], s2[k]) == ("train", "frozen"), k
    elif k.startswith("['audio_proj']") or any(m in k for m in partition.STAGE2_MARKERS):
      assert (s1[k], s2[k]) == ("frozen", "train"), k
    else:
      assert k.startswith("['backbone']") and (s1[k], s2[k]) == ("train", "frozen"), k
  assert any("motion_modules_" in k and v == "train" for k, v in s2.items())
  assert any("attn_audio" in k and v == "train" for k, v in s2.items())
  assert any("expression_proj" in k and v == "train" for k, v in s2.items())
  with pytest.raises(ValueError, match="stage"):
    partition.trainable_labels(micro_abstract, 3)


def test_stage2_with_2d_layers_trains_the_whole_backbone_and_nothing_else(micro_abstract):
  plain = _flat(partition.trainable_labels(micro_abstract, 2))
  wide = _flat(partition.trainable_labels(micro_abstract, 2, train_2d=True))
  changed = {k for k in wide if wide[k] != plain[k]}
  assert changed and all(k.startswith("['backbone']") and wide[k] == "train" for k in changed)
  assert all(v == "train" for k, v in wide.items() if k.startswith("['backbone']"))
  assert all(v == "frozen" for k, v in wide.items() if k.startswith(("['reference_net']", "['vae']")))


def test_stage2_2d_config_continues_stage2_with_the_2d_layers():
  """`configs/synthetic_stage2_2d.py` warm-starts from a `synthetic_stage2.py` run, so the model, the
  diffusion parametrization and the data mix must be that run's; what it changes is what trains and how."""
  base, cont = synthetic_stage2.get_config(), synthetic_stage2_2d.get_config()
  assert cont.stage == base.stage == 2 and cont.train.train_2d_in_stage2 and not base.train.train_2d_in_stage2
  assert cont.model == base.model and cont.diffusion == base.diffusion
  assert cont.data.sources == base.data.sources and cont.data.seed != base.data.seed
  assert cont.optim.learning_rate < base.optim.learning_rate
  lr = optimizer.learning_rate(cont.optim, cont.train.steps)  # constant, then the cooldown to 0 at the end
  cooldown_start = cont.train.steps - cont.optim.cooldown_steps
  np.testing.assert_allclose([lr(cooldown_start), lr(cont.train.steps)], [cont.optim.learning_rate, 0.0], atol=1e-9)


def test_optimizer_state_exists_only_for_trainable_params(micro_abstract):
  labels = partition.trainable_labels(micro_abstract, 2)
  tx, _ = optimizer.make_optimizer(common.optim(), labels, 100)
  opt_state = jax.eval_shape(tx.init, micro_abstract)
  counts = partition.count_by_label(micro_abstract, labels)
  moments = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(opt_state) if x.shape)
  assert moments == 2 * counts["train"]  # AdamW mu and nu, nothing for frozen leaves
  assert counts["frozen"] > counts["train"] > 0


def _toy():
  """Params with a trainable and a frozen part; loss = mean((w * x - y)^2) + frozen * 0 (so it has grads)."""
  params = {"backbone": {"w": jnp.full((4,), 0.5)}, "vae": {"f": jnp.arange(4.0)}}
  labels = {"backbone": {"w": "train"}, "vae": {"f": "frozen"}}

  def objective(p, batch, rng):
    del rng
    return jnp.mean((p["backbone"]["w"] * batch["x"] - batch["y"]) ** 2 + p["vae"]["f"].sum() * batch["x"]), {}
  return params, labels, objective


def _optim(**kw):
  o = common.optim()
  o.warmup_steps, o.learning_rate, o.clip_norm, o.weight_decay = 0, 0.1, 0.0, 0.0
  o.update(kw)
  return o


def _tx_and_step(objective, labels, optim=None, **kw):
  """The optimizer of `optim` (default `_optim()`, 100 steps) and the (unjitted) train step using it."""
  optim = optim or _optim()
  tx, schedule = optimizer.make_optimizer(optim, labels, 100)
  return tx, step_lib.make_train_step(objective, tx, labels, learning_rate=schedule, **kw)


def _batch(seed=0, n=8):
  r = np.random.default_rng(seed)
  x = r.normal(size=(n, 4)).astype(np.float32)
  return {"x": x, "y": 2.0 * x}


def test_frozen_params_bit_identical_and_ema_moves_only_trainable():
  params, labels, objective = _toy()
  original = jax.device_get(params)  # the step donates (frees) the state's buffers
  tx, step = _tx_and_step(objective, labels, ema_decay=0.5)
  state = state_lib.create_state(params, tx, labels, jax.random.PRNGKey(0), ema_decay=0.5)
  assert set(state.ema_params) == {"backbone"}
  step = jax.jit(step, donate_argnums=(0,))  # donated like the real step: a fresh state must not hold one buffer twice
  losses = []
  for i in range(20):
    state, m = step(state, _batch(i))
    losses.append(float(m["loss"]))
  np.testing.assert_array_equal(state.params["vae"]["f"], original["vae"]["f"])
  assert not np.allclose(state.params["backbone"]["w"], 0.5)
  assert losses[-1] < 0.5 * losses[0]
  # EMA lags the params: strictly between the start and the current value.
  w, e = np.asarray(state.params["backbone"]["w"]), np.asarray(state.ema_params["backbone"]["w"])
  assert np.all(np.abs(e - 0.5) < np.abs(w - 0.5)) and np.all(np.abs(e - 0.5) > 0)
  assert int(state.step) == 20


def test_non_finite_step_is_skipped_and_counted():
  params, labels, objective = _toy()
  tx, step = _tx_and_step(objective, labels, ema_decay=0.9)
  step = jax.jit(step)
  state, _ = step(state_lib.create_state(params, tx, labels, jax.random.PRNGKey(0), 0.9), _batch(0))
  bad = _batch(1)
  bad["x"][0, 0] = np.nan
  after, m = step(state, bad)
  assert not bool(m["finite"])
  chex.assert_trees_all_equal(after.params, state.params)
  chex.assert_trees_all_equal(after.opt_state, state.opt_state)
  chex.assert_trees_all_equal(after.ema_params, state.ema_params)
  assert (int(after.step), int(after.bad_steps), int(after.skipped_steps)) == (1, 1, 1)
  after, _ = step(after, bad)
  assert int(after.bad_steps) == 2
  after, m = step(after, _batch(2))
  assert bool(m["finite"]) and (int(after.step), int(after.bad_steps), int(after.skipped_steps)) == (2, 0, 2)


def test_a_non_finite_learning_rate_skips_the_step():
  """Finite loss and gradients, NaN updates: the guard's learning-rate check keeps the state."""
  params, labels, objective = _toy()
  tx, step = _tx_and_step(objective, labels, _optim(learning_rate=float("nan")), ema_decay=0.9)
  state = state_lib.create_state(params, tx, labels, jax.random.PRNGKey(0), 0.9)
  after, m = jax.jit(step)(state, _batch(0))
  assert np.isfinite(m["loss"]) and np.isfinite(m["grad_norm"]) and not bool(m["finite"])
  chex.assert_trees_all_equal((after.params, after.opt_state, after.ema_params),
                              (state.params, state.opt_state, state.ema_params))
  assert (int(after.step), int(after.skipped_steps)) == (0, 1)


def test_gradient_accumulation_equals_the_full_batch_gradient():
  params, labels, objective = _toy()
  tx, full_step = _tx_and_step(objective, labels)
  s0 = state_lib.create_state(params, tx, labels, jax.random.PRNGKey(0), 0.0)
  full, m1 = jax.jit(full_step)(s0, _batch(0))
  acc, m4 = jax.jit(_tx_and_step(objective, labels, accum_steps=4)[1])(s0, _batch(0))
  # The objective is a mean over equal micro-batches, so the averaged gradients equal the full one.
  chex.assert_trees_all_close(acc.params, full.params, rtol=1e-6)
  np.testing.assert_allclose(m4["loss"], m1["loss"], rtol=1e-6)
  with pytest.raises(ValueError, match="accum_steps=3"):
    jax.jit(_tx_and_step(objective, labels, accum_steps=3)[1])(s0, _batch(0))


def test_learning_rate_warmup_then_cosine():
  o = _optim(warmup_steps=10, schedule="cosine")
  lr = optimizer.learning_rate(o, 110)
  np.testing.assert_allclose([lr(0), lr(5), lr(10), lr(60), lr(110)], [0.0, 0.05, 0.1, 0.05, 0.0], atol=1e-7)
  with pytest.raises(ValueError, match="schedule"):
    optimizer.learning_rate(_optim(schedule="linear"), 10)


def test_cosine_horizon_longer_than_the_run_is_the_start_of_the_longer_schedule():
  long = optimizer.learning_rate(_optim(warmup_steps=10, schedule="cosine"), 210)
  cut = optimizer.learning_rate(_optim(warmup_steps=10, schedule="cosine", decay_steps=210), 110)
  steps = [0, 5, 10, 60, 110]
  np.testing.assert_allclose([cut(s) for s in steps], [long(s) for s in steps], atol=1e-7)
  assert float(cut(110)) > 0.04  # halfway down the cosine when the run stops
  with pytest.raises(ValueError, match="decay_steps=50"):
    optimizer.learning_rate(_optim(schedule="cosine", decay_steps=50), 110)


def test_wsd_is_constant_then_linear_to_zero_and_a_resumed_constant_run_is_its_start():
  o = _optim(warmup_steps=10, schedule="wsd", cooldown_steps=40)
  lr = optimizer.learning_rate(o, 110)
  np.testing.assert_allclose([lr(s) for s in [0, 5, 10, 50, 70, 90, 110]], [0.0, 0.05, 0.1, 0.1, 0.1, 0.05, 0.0],
                             atol=1e-7)
  constant = optimizer.learning_rate(_optim(warmup_steps=10), 70)
  np.testing.assert_allclose([lr(s) for s in range(71)], [constant(s) for s in range(71)], atol=1e-7)
  for bad in (0, 101):
    with pytest.raises(ValueError, match=f"cooldown_steps <= 100.*got {bad}"):
      optimizer.learning_rate(_optim(warmup_steps=10, schedule="wsd", cooldown_steps=bad), 110)


def test_logical_rules_shard_kernels_over_fsdp_when_divisible():
  rules = common.mesh().rules

  class FakeMesh:  # shapes only: logical_to_spec reads mesh.shape
    shape = {"data": 2, "fsdp": 4}

  spec = lambda keys, shape: tuple(sharding.logical_to_spec(sharding.logical_axes(keys, shape), shape, FakeMesh, rules))
  assert spec(("proj", "kernel"), (64, 10)) == ("fsdp", None)
  assert spec(("proj", "kernel"), (10, 64)) == (None, "fsdp")  # input not divisible: output takes it
  assert spec(("conv", "kernel"), (3, 3, 8, 16)) == (None, None, "fsdp", None)
  assert spec(("conv", "kernel"), (3, 3, 3, 6)) == (None, None, None, None)  # nothing divisible: replicated
  assert spec(("norm", "scale"), (64,)) == (None,)
  assert sharding.make_mesh(common.mesh()).shape == {"data": len(jax.devices()), "fsdp": 1}
  with pytest.raises(ValueError, match="needs 3 devices"):
    m = common.mesh()
    m.data, m.fsdp = 3, 1
    sharding.make_mesh(m)


def test_step_loop_stops_after_the_step_sigterm_arrives_in_and_windows_its_metrics():
  before = signal.getsignal(signal.SIGTERM)
  loop, seen = StepLoop(3, 10, desc="test"), []
  for step in loop:
    seen.append(step)
    loop.record({"loss": np.float32(step), "grad_norm": np.float32(2 * step)})
    if step == 5:
      os.kill(os.getpid(), signal.SIGTERM)  # preemption: step 5 completes, then the loop stops
  assert seen == [4, 5] and loop.done == 5
  assert signal.getsignal(signal.SIGTERM) is before
  stacked, seconds = loop.flush()
  assert means(stacked) == {"loss": 4.5, "grad_norm": 9.0} and means(stacked, ["loss"]) == {"loss": 4.5}
  assert seconds >= 0 and loop.flush()[0] == []  # a flush starts a new window
  window = [dict(loss=1.0, grad_norm=2.0, learning_rate=0.1), dict(loss=3.0, grad_norm=4.0, learning_rate=0.2)]
  assert train_scalars(window, 0.5, 3) == dict(loss=2.0, grad_norm=3.0, learning_rate=0.2, steps_per_sec=2.0,
                                               skipped_steps=3)
  loop = StepLoop(0, 7, desc="test")
  logged = [step for step in loop if loop.log_due(3)]
  assert logged == [3, 6, 7]  # every 3 steps, and the last
