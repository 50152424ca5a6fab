"""Inference checkpoints ("bundles"): everything `launch.infer` needs in one small folder.

A bundle folder holds
- `config.json`: the stage-2 run's `model`, `diffusion` and `data.audio_margin`, the inference `sampling`
  defaults (window = the stage-2 clip length), the expression GAN run's config, and where both came from;
- `params.safetensors`: every weight (safetensors format, https://github.com/huggingface/safetensors),
  stored as float16 and loaded as float32. Keys are `diffusion/<network>/<path>` for the five networks of
  `models.build.Models` and `expression/generator/<path>` for the expression generator.

`export_bundle` reads the latest checkpoints of a stage-2 run (EMA weights of the networks it trained,
the rest as trained in stage 1) and of an expression GAN run, or takes another bundle's expression generator
(`bundle_from_runs` + `save_bundle`, between which `launch.export_bundle` applies its `--cfg.` sampling
defaults); `load_bundle` rebuilds the param trees and checks every shape against the config. `with_vae`
puts the VAE of a `launch.train_vae` run into a bundle: a decoder fine-tune of the bundle's own VAE
(`train.decoder_only`), whose encoder must be the bundle's, or, for measuring any VAE's round trip
(`eval.harness.with_vae_run`), another VAE.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from typing import Any

import jax
import ml_collections
import numpy as np
from safetensors.numpy import load_file, save_file

from emodiff_jax.emotion.gan_loop import load_generator
from emodiff_jax.emotion.gan_train import model_config
from emodiff_jax.models.build import Models, abstract_params, build_models
from emodiff_jax.models.expression_gan import init_params as gan_init_params
from emodiff_jax.sampling.video import sampling_config
from emodiff_jax.train.checkpoint import read_latest
from emodiff_jax.train.partition import trainable_labels
from emodiff_jax.train.state import ema_modules

CONFIG, PARAMS = "config.json", "params.safetensors"
STORAGE_DTYPE = np.float16


class BundleError(Exception):
  """A bundle folder that cannot be used; the message names the folder and what is wrong."""


@dataclasses.dataclass(frozen=True)
class Bundle:
  """A loaded bundle: `config` (ConfigDict with model/diffusion/audio_margin/sampling/gan), params."""

  path: str
  config: ml_collections.ConfigDict
  params: dict[str, Any]
  g_params: Any

  def models(self) -> Models:
    return build_models(self.config.model)


def _flatten(prefix: str, tree: Any) -> dict[str, np.ndarray]:
  out = {}
  for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
    key = "/".join(str(getattr(p, "key", p)) for p in path)
    out[f"{prefix}/{key}"] = np.asarray(leaf, np.float32).astype(STORAGE_DTYPE)
  return out


def _unflatten(source: str, prefix: str, flat: dict[str, np.ndarray], abstract: Any) -> Any:
  """The tree of `abstract`'s structure from `flat[prefix/...]`, checking that keys and shapes match."""
  def leaf(path, spec):
    key = f"{prefix}/" + "/".join(str(getattr(p, "key", p)) for p in path)
    if key not in flat:
      raise BundleError(f"{source}: missing weight {key!r}")
    if flat[key].shape != spec.shape:
      raise BundleError(f"{source}: weight {key!r} has shape {flat[key].shape}, the config needs {spec.shape}")
    return flat[key].astype(np.float32)
  tree = jax.tree_util.tree_map_with_path(leaf, abstract)
  expected = {f"{prefix}/" + "/".join(str(getattr(p, "key", p)) for p in path)
              for path, _ in jax.tree_util.tree_leaves_with_path(abstract)}
  extra = sorted(k for k in flat if k.startswith(prefix + "/") and k not in expected)
  if extra:
    raise BundleError(f"{source}: weights the config does not know: {extra[:5]}")
  return tree


def _stage2_params(workdir: str) -> tuple[ml_collections.ConfigDict, dict[str, Any], int]:
  """`(config, params, step)` of a stage-2 run's latest checkpoint (EMA for the networks it trained)."""
  def wanted(config):
    if config.stage != 2:
      raise BundleError(f"{workdir}: a stage-{config.stage} run; bundles are made from stage-2 runs")
    abstract = abstract_params(build_models(config.model), config.model, config.num_frames)
    ema = ema_modules(trainable_labels(abstract, 2)) if config.optim.ema_decay > 0 else ()
    return {"params": abstract, **({"ema_params": {k: abstract[k] for k in ema}} if ema else {})}

  try:
    config, restored, step = read_latest(workdir, wanted)
  except FileNotFoundError as e:
    raise BundleError(f"{e}: nothing to export") from None
  params = dict(restored["params"])
  params.update(restored.get("ema_params", {}))
  return config, params, step


def bundle_config(config: ml_collections.ConfigDict, gan_config: ml_collections.ConfigDict,
                  source: dict[str, Any]) -> ml_collections.ConfigDict:
  """The `config.json` of a bundle for a stage-2 run's `config` and an expression GAN run's config."""
  sampling = sampling_config()
  sampling.window = config.num_frames
  return ml_collections.ConfigDict(dict(
      model=config.model.to_dict(), diffusion=config.diffusion.to_dict(), audio_margin=config.data.audio_margin,
      sampling=sampling.to_dict(), gan=gan_config.to_dict(), source=source))


def save_bundle(out_dir: str, config: ml_collections.ConfigDict, params: dict[str, Any], g_params: Any) -> str:
  """Writes `config` (from `bundle_config`) and the weights as a bundle folder, atomically (temp folder,
  rename; an existing bundle stays whole until the new one is in place)."""
  flat = {}
  for name, tree in params.items():
    flat.update(_flatten(f"diffusion/{name}", tree))
  flat.update(_flatten("expression/generator", g_params))
  parent = os.path.dirname(os.path.abspath(out_dir))
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(dir=parent, prefix=".bundle-")
  save_file(flat, os.path.join(tmp, PARAMS))
  with open(os.path.join(tmp, CONFIG), "w") as f:
    json.dump(config.to_dict(), f, indent=1, sort_keys=True, default=list)
  if os.path.isdir(out_dir):
    old = f"{tmp}-old"
    os.replace(out_dir, old)
    os.replace(tmp, out_dir)
    shutil.rmtree(old)
  else:
    os.replace(tmp, out_dir)
  return out_dir


def _generator(path: str) -> tuple[ml_collections.ConfigDict, Any]:
  """`(gan config, generator params)` of an expression GAN run's latest checkpoint, or of a bundle folder."""
  if all(os.path.isfile(os.path.join(path, f)) for f in (CONFIG, PARAMS)):
    bundle = load_bundle(path)
    return bundle.config.gan, bundle.g_params
  return load_generator(path)


def bundle_from_runs(stage2_workdir: str, gan_workdir: str
                     ) -> tuple[ml_collections.ConfigDict, dict[str, Any], Any]:
  """`(config, params, g_params)` for `save_bundle` from the latest checkpoints of a stage-2 run and an
  expression GAN run, or another bundle's generator when `gan_workdir` is a bundle folder (the sampling
  defaults may be edited in between)."""
  config, params, step = _stage2_params(stage2_workdir)
  gan_config, g_params = _generator(gan_workdir)
  source = dict(stage2=os.path.abspath(stage2_workdir), stage2_step=step, gan=os.path.abspath(gan_workdir))
  return bundle_config(config, gan_config, source), params, g_params


def with_vae(config: ml_collections.ConfigDict, params: dict[str, Any], vae_workdir: str, keep_latents: bool = True
             ) -> tuple[ml_collections.ConfigDict, dict[str, Any]]:
  """`(config, params)` of a bundle with its VAE (`model.vae` and params) replaced by the latest checkpoint of
  the `launch.train_vae` run `vae_workdir` (EMA params when it kept them).

  With `keep_latents` the run's encoder and `quant_conv` must equal the bundle's (to float16 storage
  precision): the diffusion model was trained on that latent space, so only a decoder fine-tune of this VAE
  may replace it; otherwise BundleError naming the run and the first weight that differs.
  """
  from emodiff_jax.train.vae_loop import LATENT_MODULES, load_vae  # training code, only needed here
  try:
    run_config, vae_params = load_vae(vae_workdir)
  except FileNotFoundError as e:
    raise BundleError(f"{vae_workdir}: no VAE checkpoint ({e})") from None
  if keep_latents:
    leaves = lambda tree: dict(jax.tree_util.tree_leaves_with_path({k: tree.get(k, {}) for k in LATENT_MODULES}))
    old, new = leaves(params["vae"]), leaves(vae_params)
    for path in sorted(old.keys() | new.keys(), key=jax.tree_util.keystr):
      a, b = old.get(path), new.get(path)
      if a is None or b is None or np.shape(a) != np.shape(b) or not np.allclose(b, a, rtol=1e-3, atol=1e-5):
        raise BundleError(f"{vae_workdir}: its VAE encodes differently from the bundle's "
                          f"(vae{jax.tree_util.keystr(path)} differs); only a decoder fine-tune of the bundle's VAE "
                          "(train.decoder_only with init.bundle) keeps the latents the diffusion model was trained on")
  config = config.copy_and_resolve_references()
  config.model.vae = run_config.model.vae
  if "source" in config:
    config.source.vae = os.path.abspath(vae_workdir)
  return config, {**params, "vae": vae_params}


def export_bundle(stage2_workdir: str, gan_workdir: str, out_dir: str) -> str:
  """Writes a bundle folder from the latest checkpoints of a stage-2 run and an expression GAN run."""
  return save_bundle(out_dir, *bundle_from_runs(stage2_workdir, gan_workdir))


def load_bundle(path: str) -> Bundle:
  """Reads a bundle folder; BundleError naming the folder when it is missing or inconsistent."""
  cfg_path, params_path = os.path.join(path, CONFIG), os.path.join(path, PARAMS)
  if not os.path.isdir(path):
    raise BundleError(f"{path}: checkpoint folder not found; pass --checkpoint=<bundle folder>")
  for p in (cfg_path, params_path):
    if not os.path.isfile(p):
      raise BundleError(f"{path}: not an inference checkpoint ({os.path.basename(p)} missing); make one with "
                        "emodiff_jax.sampling.bundle.export_bundle")
  try:
    with open(cfg_path) as f:
      meta = json.load(f)
    flat = load_file(params_path)
  except (OSError, ValueError) as e:
    raise BundleError(f"{path}: unreadable checkpoint ({e})") from None
  config = ml_collections.ConfigDict(meta)
  base = sampling_config()
  base.update(config.sampling.to_dict())
  config.sampling = base
  source = os.path.join(path, PARAMS)
  models = build_models(config.model)
  abstract = abstract_params(models, config.model, 2)
  params = {name: _unflatten(source, f"diffusion/{name}", flat, tree) for name, tree in abstract.items()}
  g_abstract = jax.eval_shape(lambda k: gan_init_params(model_config(config.gan), k)[0], jax.random.key(0))
  g_params = _unflatten(source, "expression/generator", flat, g_abstract)
  return Bundle(path=path, config=config, params=params, g_params=g_params)
