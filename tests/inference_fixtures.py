"""A micro inference bundle with random weights (the micro model of `train_configs.py` and a small expression
generator), shared by the sampling and CLI tests."""

from __future__ import annotations

import jax
import ml_collections

from configs import expr_gan_synthetic
from emodiff_jax.emotion.gan_train import model_config
from emodiff_jax.models.build import build_models, init_params
from emodiff_jax.models.expression_gan import init_params as gan_init_params
from emodiff_jax.sampling.bundle import bundle_config, save_bundle
from tests.train_configs import micro_config


def micro_bundle_config(num_frames: int = 4) -> ml_collections.ConfigDict:
  gan = expr_gan_synthetic.get_config()
  gan.model.hidden_size = 16
  gan.model.num_layers = 1
  config = bundle_config(micro_config(2, num_frames=num_frames), gan, source={})
  config.sampling.num_steps = 3
  config.sampling.overlap = 1
  config.sampling.decode_chunk = 4
  return config


def write_micro_bundle(path: str, seed: int = 0) -> str:
  """Saves a random-weight micro bundle to `path`."""
  config = micro_bundle_config()
  models = build_models(config.model)
  params = init_params(models, config.model, jax.random.key(seed))
  # Zero-initialised layers (the audio/expression attention outputs, as for new conditions in training)
  # would hide the conditions; random weights everywhere let the tests see each condition act.
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(seed + 2), len(leaves))
  params = jax.tree.unflatten(tree, [0.2 * jax.random.normal(k, x.shape) if not x.any() else x
                                     for k, x in zip(keys, leaves)])
  g_params = gan_init_params(model_config(config.gan), jax.random.key(seed + 1))[0]
  return save_bundle(path, config, params, g_params)
