"""Initial params of a run from the `init` config section (empty entries: random init).

Order: random init of every network -> converted public checkpoints (`vae`, `wav2vec2`, `unet2d` for
ReferenceNet and the backbone's 2D layers, `motion_adapter` for the motion modules, via
`emodiff_jax.convert`) -> a VAE run (`vae_checkpoint`, `launch/train_vae.py`: its EMA VAE when it kept
EMA, else its raw one) -> a stage-1 run (`stage1_checkpoint`: its VAE, and its EMA ReferenceNet and
backbone 2D layers when it kept EMA, else its raw ones; stage 2's motion, audio and expression layers
keep their random init, see `train/partition.py`). `vae_checkpoint` excludes `vae` and `stage1_checkpoint`,
which also set the VAE. `stage2_checkpoint` (a stage-2 run: every network from its latest step, EMA where
kept) excludes every other entry and skips the random init (only shapes are traced): it warm-starts a run
with a fresh optimizer, e.g. to go on training a stage-2 run with another trainable set
(`train.train_2d_in_stage2`) or learning rate; `bundle` (an inference bundle, `sampling/bundle.py`, e.g. the
shipped `data/checkpoints/synthetic`) does the same from a bundle's float16 weights. Every loaded tree must
match the config's shapes exactly; a mismatch raises an error naming the source and the first differing
parameters. A stage-1 or stage-2 run must also have been trained with the same noise schedule and prediction
type (`DIFFUSION_FIELDS`): its layers predict in that parametrization, and a run reading them in another
would train on a silently wrong target.
"""

from __future__ import annotations

from typing import Any

import jax
import ml_collections
from flax import traverse_util

from emodiff_jax.models.build import Models, init_params
from emodiff_jax.train.partition import is_stage2_layer, trainable_labels
from emodiff_jax.train.state import ema_modules


CONVERTED = ("vae", "wav2vec2", "unet2d", "motion_adapter")  # `init` entries read through emodiff_jax.convert
RUNS = ("vae_checkpoint", "stage1_checkpoint", "stage2_checkpoint", "bundle")  # this project's runs and bundles
WARM_STARTS = ("stage2_checkpoint", "bundle")  # the RUNS entries that set every network
# `diffusion` entries that define what the layers predict; a run must use those of the run it starts from.
DIFFUSION_FIELDS = ("num_train_timesteps", "beta_schedule", "beta_start", "beta_end", "rescale_zero_terminal_snr",
                    "prediction_type")


def uses_loaded_weights(init: ml_collections.ConfigDict) -> bool:
  """True when a run starts from any converted checkpoint or a VAE, stage-1 or stage-2 run, not random init."""
  return any(init.get(k) for k in CONVERTED + RUNS)


def _check_shapes(source: str, name: str, loaded: Any, expected: Any) -> None:
  flat_l = {jax.tree_util.keystr(p): v.shape for p, v in jax.tree_util.tree_leaves_with_path(loaded)}
  flat_e = {jax.tree_util.keystr(p): v.shape for p, v in jax.tree_util.tree_leaves_with_path(expected)}
  missing, unexpected = sorted(set(flat_e) - set(flat_l)), sorted(set(flat_l) - set(flat_e))
  shapes = [f"{k}: {flat_l[k]} vs {flat_e[k]}" for k in sorted(set(flat_l) & set(flat_e)) if flat_l[k] != flat_e[k]]
  if missing or unexpected or shapes:
    raise ValueError(f"{source}: {name} params do not match config.model (missing {missing[:5]}, unexpected "
                     f"{unexpected[:5]}, shapes {shapes[:5]})")


def pretrained_params(init: ml_collections.ConfigDict, models: Models, params: dict[str, Any]) -> dict[str, Any]:
  """`params` with the networks named in `init` replaced by converted public checkpoints."""
  from emodiff_jax.convert.backbone import build_backbone
  from emodiff_jax.convert.unet import load_unet2d
  from emodiff_jax.convert.vae import load_vae
  from emodiff_jax.convert.wav2vec2 import load_wav2vec2

  out = dict(params)
  loaded = {}
  if init.vae:
    loaded["vae"] = (init.vae, load_vae(init.vae)[1])
  if init.wav2vec2:
    loaded["wav2vec2"] = (init.wav2vec2, load_wav2vec2(init.wav2vec2)[1])
  if init.unet2d:
    loaded["reference_net"] = (init.unet2d, {"unet": load_unet2d(init.unet2d)[1]})
    _, backbone = build_backbone(init.unet2d, init.motion_adapter or None, models.backbone.config)
    loaded["backbone"] = (init.unet2d, backbone)
  elif init.motion_adapter:
    raise ValueError("init.motion_adapter needs init.unet2d (the motion modules sit in the SD-1.5 UNet)")
  for name, (source, tree) in loaded.items():
    _check_shapes(source, name, tree, params[name])
    out[name] = tree
  return out


def _stage1_layers(name: str, tree: dict[str, Any]) -> dict[str, Any]:
  """The part of network `name`'s params that stage 1 trains (`partition.is_stage2_layer` is false)."""
  flat = traverse_util.flatten_dict(tree)
  return traverse_util.unflatten_dict({k: v for k, v in flat.items() if not is_stage2_layer((name,) + k)})


def _check_diffusion(entry: str, workdir: str, saved: ml_collections.ConfigDict, diffusion: ml_collections.ConfigDict
                     ) -> None:
  differ = [f"{k}={saved.diffusion[k]!r} (this config: {diffusion[k]!r})" for k in DIFFUSION_FIELDS
            if saved.diffusion[k] != diffusion[k]]
  if differ:
    raise ValueError(f"init.{entry} {workdir!r} was trained with diffusion {', '.join(differ)}; its layers "
                     "predict in that parametrization, so set the same diffusion.*")


def stage1_params(workdir: str, params: dict[str, Any], diffusion: ml_collections.ConfigDict) -> dict[str, Any]:
  """`params` with the VAE and the layers stage 1 trains (ReferenceNet, the backbone's 2D layers) from the
  latest checkpoint of a stage-1 run (its EMA when kept). Stage 2's layers (motion, audio, expression) keep
  their values in `params`, so stage 2 may change their layout (e.g. the expression-injection ablation).
  The run's `DIFFUSION_FIELDS` must equal `diffusion`'s."""
  from emodiff_jax.train.checkpoint import read_latest

  nets = {k: _stage1_layers(k, params[k]) for k in ("reference_net", "backbone")}

  def wanted(saved):
    if saved.stage != 1:
      raise ValueError(f"init.stage1_checkpoint {workdir!r} is a stage-{saved.stage} run, not stage 1")
    _check_diffusion("stage1_checkpoint", workdir, saved, diffusion)
    if saved.optim.ema_decay > 0:
      return {"params": {"vae": params["vae"]}, "ema_params": nets}
    return {"params": {"vae": params["vae"], **nets}}

  try:
    _, restored, _ = read_latest(workdir, wanted)
  except FileNotFoundError as e:
    raise FileNotFoundError(f"init.stage1_checkpoint: {e}") from None
  loaded = {"vae": restored["params"]["vae"], **(restored["ema_params"] if "ema_params" in restored else
                                                 {k: restored["params"][k] for k in nets})}
  out = dict(params)
  for name, tree in loaded.items():
    _check_shapes(workdir, name, tree, params["vae"] if name == "vae" else nets[name])
    merged = traverse_util.flatten_dict(params[name])
    merged.update(traverse_util.flatten_dict(tree))
    out[name] = traverse_util.unflatten_dict(merged)
  return out


def stage2_params(workdir: str, params: dict[str, Any], diffusion: ml_collections.ConfigDict) -> dict[str, Any]:
  """Every network of `params` (arrays or `jax.ShapeDtypeStruct`s) from the latest checkpoint of a stage-2
  run: the ones it trained (its EMA networks, `state.ema_modules`: backbone, audio projection) from its EMA
  when kept, the rest (VAE, ReferenceNet, wav2vec2) from its params. The run's `DIFFUSION_FIELDS` must equal
  `diffusion`'s and every shape `params`'."""
  from emodiff_jax.train.checkpoint import read_latest

  def wanted(saved):
    if saved.stage != 2:
      raise ValueError(f"init.stage2_checkpoint {workdir!r} is a stage-{saved.stage} run, not stage 2")
    _check_diffusion("stage2_checkpoint", workdir, saved, diffusion)
    if saved.optim.ema_decay > 0:
      ema = ema_modules(trainable_labels(params, 2, saved.train.get("train_2d_in_stage2", False)))
      return {"params": {k: v for k, v in params.items() if k not in ema}, "ema_params": {k: params[k] for k in ema}}
    return {"params": params}

  try:
    _, restored, _ = read_latest(workdir, wanted)
  except FileNotFoundError as e:
    raise FileNotFoundError(f"init.stage2_checkpoint: {e}") from None
  out = {**restored["params"], **restored.get("ema_params", {})}
  for name in params:
    _check_shapes(workdir, name, out[name], params[name])
  return out


def bundle_params(path: str, params: dict[str, Any], diffusion: ml_collections.ConfigDict | None = None
                  ) -> dict[str, Any]:
  """Every network of `params` (arrays or `jax.ShapeDtypeStruct`s) from an inference bundle folder (its
  weights as stored, float16 read as float32). Its `DIFFUSION_FIELDS` must equal `diffusion`'s (when given:
  a VAE run takes the bundle's VAE alone) and every shape `params`'."""
  from emodiff_jax.sampling.bundle import load_bundle

  bundle = load_bundle(path)
  if diffusion is not None:
    _check_diffusion("bundle", path, bundle.config, diffusion)
  for name in params:
    _check_shapes(path, name, bundle.params[name], params[name])
  return {name: bundle.params[name] for name in params}


def vae_run_params(workdir: str, params: dict[str, Any]) -> dict[str, Any]:
  """`params` with the VAE from the latest checkpoint of a VAE run (EMA when kept)."""
  from emodiff_jax.train.vae_loop import load_vae

  out = dict(params)
  out["vae"] = load_vae(workdir)[1]
  _check_shapes(workdir, "vae", out["vae"], params["vae"])
  return out


def initial_params(config: ml_collections.ConfigDict, models: Models, rng: jax.Array) -> dict[str, Any]:
  """Params of every network for the start of a run (see the module docstring)."""
  init = config.init
  if init.vae_checkpoint and (init.vae or init.stage1_checkpoint):
    raise ValueError("init.vae_checkpoint sets the VAE: leave init.vae and init.stage1_checkpoint empty")
  for warm in WARM_STARTS:
    others = [k for k in CONVERTED + RUNS if init.get(k) and k != warm]
    if init.get(warm) and others:
      raise ValueError(f"init.{warm} sets every network: leave init.{', init.'.join(others)} empty")
  if any(init.get(k) for k in WARM_STARTS):
    # Every network comes from the run or bundle: only the shapes are needed (eager random init of each leaf
    # cost 92 s before the checkpoint was read on an H200, at the synthetic config).
    abstract = jax.eval_shape(lambda k: init_params(models, config.model, k), rng)
    if init.get("bundle"):
      return bundle_params(init.bundle, abstract, config.diffusion)
    return stage2_params(init.stage2_checkpoint, abstract, config.diffusion)
  params = init_params(models, config.model, rng)
  if any(init[k] for k in CONVERTED):
    params = pretrained_params(init, models, params)
  if init.vae_checkpoint:
    params = vae_run_params(init.vae_checkpoint, params)
  if init.stage1_checkpoint:
    params = stage1_params(init.stage1_checkpoint, params, config.diffusion)
  return params


