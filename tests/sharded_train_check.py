"""Run in a subprocess with 8 simulated CPU devices (see test_train_sharding.py): one stage-1 step of the
micro model on the meshes given as `1x1,2x4,...` (first: the reference), per-device bytes, and a
checkpoint saved on the last mesh restored onto (8, 1). Prints one JSON line."""

import os
import sys

os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import json  # noqa: E402
import tempfile  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402

from emodiff_jax.models.build import build_models, init_params  # noqa: E402
from emodiff_jax.train import checkpoint, optimizer, partition, sharding, state as state_lib, step as step_lib  # noqa: E402
from emodiff_jax.train.objective import DiffusionObjective  # noqa: E402
from tests.train_configs import micro_config  # noqa: E402

ALL_MESHES = "1x1,8x1,4x2,2x4,1x8"


def main(meshes: list[tuple[int, int]]) -> None:
  config = micro_config(1, batch_size=8)
  config.diffusion.latents = "precomputed"
  config.optim.warmup_steps = 0
  models = build_models(config.model)
  rng = np.random.default_rng(0)
  batch = {"latents": rng.normal(size=(8, 1, 8, 8, 4)).astype(np.float32),
           "reference_latent": rng.normal(size=(8, 8, 8, 4)).astype(np.float32)}
  objective = DiffusionObjective(models, config.diffusion, 1)
  k_init, k_state = jax.random.split(jax.random.PRNGKey(0))
  abstract = jax.eval_shape(lambda k: init_params(models, config.model, k), k_init)
  labels = partition.trainable_labels(abstract, 1)
  tx, schedule = optimizer.make_optimizer(config.optim, labels, 10)
  initial = jax.device_get(jax.jit(lambda k: state_lib.create_state(
      init_params(models, config.model, k), tx, labels, k_state, config.optim.ema_decay))(k_init))
  step = step_lib.make_train_step(objective, tx, labels, ema_decay=config.optim.ema_decay,
                                 learning_rate=schedule)
  abstract_state = jax.eval_shape(lambda: initial)
  out, states = {}, {}
  for data, fsdp in meshes:
    config.mesh.data, config.mesh.fsdp = data, fsdp
    mesh = sharding.make_mesh(config.mesh, jax.devices()[:data * fsdp])
    shardings = sharding.tree_shardings(abstract_state, mesh, config.mesh.rules)
    state = jax.device_put(initial, shardings)
    state, metrics = step_lib.jit_train_step(step, shardings, mesh)(state, sharding.global_batch(batch, mesh))
    states[(data, fsdp)] = state
    print(f"mesh {data}x{fsdp}: loss {float(metrics['loss']):.6f}", file=sys.stderr, flush=True)
    out[f"{data}x{fsdp}"] = dict(params=jax.device_get(state.params), loss=float(metrics["loss"]),
                                 param_bytes=sharding.bytes_per_device(state.params),
                                 opt_bytes=sharding.bytes_per_device(state.opt_state))
  ref = out["1x1"]["params"]
  rel = lambda a, b: float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))
  flat = lambda t: np.concatenate([np.ravel(x) for x in jax.tree.leaves(t)])
  result = {name: dict(rel_err=rel(flat(o["params"]), flat(ref)),
                       max_leaf_rel_err=max(rel(a, b) for a, b in zip(jax.tree.leaves(o["params"]), jax.tree.leaves(ref))),
                       changed=any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(o["params"]),
                                                                            jax.tree.leaves(initial.params))),
                       loss=o["loss"], param_bytes=o["param_bytes"], opt_bytes=o["opt_bytes"])
            for name, o in out.items()}

  # Save on the last mesh stepped, restore onto (8, 1).
  state = states[meshes[-1]]
  config.mesh.data, config.mesh.fsdp = 8, 1
  target_shardings = sharding.tree_shardings(abstract_state, sharding.make_mesh(config.mesh), config.mesh.rules)
  with tempfile.TemporaryDirectory() as d:
    ckpt = checkpoint.RunCheckpoints(d, save_every=1, async_save=False)
    ckpt.save(1, state, None, config)
    ckpt.wait()
    restored = ckpt.restore(1, checkpoint.abstract_with_shardings(abstract_state, target_shardings))
    ckpt.close()
  same = all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(jax.device_get(restored)),
                                                  jax.tree.leaves(jax.device_get(state))))
  on_target = all(a.sharding == s for a, s in zip(jax.tree.leaves(restored), jax.tree.leaves(target_shardings)))
  result["restore_to_8x1"] = dict(equal=same, target_shardings=on_target, saved_on="%dx%d" % meshes[-1])
  print("RESULT " + json.dumps(result))


if __name__ == "__main__":
  main([tuple(int(n) for n in m.split("x")) for m in (sys.argv[1] if len(sys.argv) > 1 else ALL_MESHES).split(",")])
