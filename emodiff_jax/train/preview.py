"""Preview grids during training: per example, reference | ground-truth frames on one row and the frames
sampled by the current model (DDIM, conditional, no guidance) under them, as a PNG.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from emodiff_jax.sampling.loop import sample
from emodiff_jax.train.objective import DiffusionObjective

Array = jax.Array


def sample_frames(objective: DiffusionObjective, params: Any, batch: dict[str, Array], rng: Array,
                  num_steps: int) -> Array:
  """Frames `[B, T, H, W, 3]` in [-1, 1] sampled for the conditions of `batch` (T = 1 in stage 1)."""
  x0, ref_latent = objective.latents(params, batch, rng)
  b, t = x0.shape[:2]
  models = objective.models
  ctx = jnp.zeros((b, 1, models.backbone.config.unet.cross_attention_dim), jnp.float32)
  reference = models.reference_net.apply({"params": params["reference_net"]}, ref_latent, ctx)
  audio = expression = None
  if objective.stage == 2:
    audio = objective.audio_tokens(params, batch["audio"], t, jnp.zeros((b,), bool))
    expression = batch["expression"].astype(jnp.float32)

  def denoise(x, timesteps):
    return models.backbone.apply({"params": params["backbone"]}, x, timesteps, ctx, reference=reference,
                                 audio_tokens=audio, expression=expression).astype(jnp.float32)

  z = sample(denoise, objective.schedule, jax.random.normal(rng, x0.shape, jnp.float32), sampler="ddim",
             num_steps=num_steps, prediction_type=objective.diffusion.prediction_type,
             timestep_spacing="trailing" if objective.diffusion.rescale_zero_terminal_snr else "leading")
  vae = models.vae
  images = vae.apply({"params": params["vae"]}, z.reshape((b * t,) + z.shape[2:]) / vae.config.scaling_factor,
                     method=vae.decode)
  return jnp.clip(images.astype(jnp.float32), -1, 1).reshape((b, t) + images.shape[1:])


def to_uint8(x: np.ndarray) -> np.ndarray:
  """Images in [-1, 1] (any shape) -> uint8 in [0, 255], rounded."""
  return np.round((np.asarray(x, np.float32) + 1.0) * 127.5).clip(0, 255).astype(np.uint8)


def preview_grid(reference: np.ndarray, truth: np.ndarray, sampled: np.ndarray) -> np.ndarray:
  """`reference [B, H, W, 3]`, `truth, sampled [B, T, H, W, 3]` in [-1, 1] -> uint8 grid
  `[2B * H, (T + 1) * W, 3]`: rows alternate reference | truth and (blank) | sampled."""
  b, t, h, w, _ = truth.shape
  blank = np.full((b, 1, h, w, 3), -1.0, np.float32)
  top = np.concatenate([reference[:, None], truth], axis=1)
  bottom = np.concatenate([blank, sampled], axis=1)
  rows = np.stack([top, bottom], axis=1).reshape(2 * b, t + 1, h, w, 3)
  return to_uint8(rows.transpose(0, 2, 1, 3, 4).reshape(2 * b * h, (t + 1) * w, 3))
