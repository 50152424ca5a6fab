"""The latent-diffusion training loss of both stages (EMOdiffhead Sec. 3.4; LDM, Rombach et al. 2022).

For a batch: frames -> latents (frozen VAE, `z = sample(E(x)) * scaling_factor`, or precomputed), a
timestep per example, noise (optionally offset), `x_t`, and the backbone's prediction of the configured
target (the loss measured on it, or on its conversion to `diffusion.loss_target`; with
`diffusion.change_weight` the latent cells that differ from the reference count more), conditioned on
- the reference: the ReferenceNet on the reference frame's latent (posterior mean) at t = 0;
- stage 2 only: audio tokens (frozen wav2vec2 on the clip's contiguous audio, all hidden states,
  projected per frame with a +-w window) and the per-frame expression vectors.
Conditions are dropped per example for classifier-free guidance (`diffusion.cond_dropout`). The SD
text cross-attention gets a fixed all-zero context `[B, 1, D]`: EMOdiffhead has no text prompt.

Batches (from `emodiff_jax.input.examples`): stage 1 `target, reference [B, H, W, 3]`; stage 2
`frames [B, T, H, W, 3], reference [B, H, W, 3], audio [B, (span + 2m) * 640], expression [B, T, De]`,
in [-1, 1]. With `diffusion.latents == 'precomputed'`: `latents [B, T, h, w, 4]` (stage 1: T = 1) and
`reference_latent [B, h, w, 4]`, already scaled.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from emodiff_jax.diffusion import cond_dropout, losses
from emodiff_jax.diffusion.schedule import NoiseSchedule, add_noise, make_schedule, predict_x0
from emodiff_jax.models.build import Models
from emodiff_jax.models.wav2vec2 import normalize_waveform

Array = jax.Array
LATENT_SOURCES = ("vae", "precomputed")


def schedule_from_config(d: ml_collections.ConfigDict) -> NoiseSchedule:
  """The `diffusion` config section's noise schedule."""
  return make_schedule(d.num_train_timesteps, d.beta_start, d.beta_end, d.beta_schedule,
                       d.rescale_zero_terminal_snr)


@dataclasses.dataclass(frozen=True)
class DiffusionObjective:
  """`objective(params, batch, rng, timesteps=None) -> (loss, aux)` for one stage; `aux['x0_error']` `[B]` is
  each example's mean squared error of the predicted clean latents, whatever the prediction type.

  Attributes:
    models: the networks (`models.build.build_models`).
    diffusion: the `diffusion` config section.
    stage: 1 (images) or 2 (clips).
    frame_stride, audio_margin: of the data section (where each frame's audio sits in `audio`).
  """

  models: Models
  diffusion: ml_collections.ConfigDict
  stage: int
  frame_stride: int = 1
  audio_margin: int = 2

  def __post_init__(self):
    if self.diffusion.latents not in LATENT_SOURCES:
      raise ValueError(f"diffusion.latents must be one of {LATENT_SOURCES}, got {self.diffusion.latents!r}")

  @property
  def batch_keys(self) -> tuple[str, ...]:
    """The batch entries this objective reads."""
    keys = ("latents", "reference_latent") if self.diffusion.latents == "precomputed" else (
        ("target", "reference") if self.stage == 1 else ("frames", "reference"))
    return keys + (("audio", "expression") if self.stage == 2 else ())

  @property
  def schedule(self) -> NoiseSchedule:
    return schedule_from_config(self.diffusion)

  def encode(self, vae_params: Any, images: Array, rng: Array | None) -> Array:
    """Images `[N, H, W, 3]` -> scaled latents `[N, h, w, 4]` (posterior sample, or mean if rng is None)."""
    vae = self.models.vae
    posterior = vae.apply({"params": vae_params}, images, method=vae.encode)
    z = posterior.mean if rng is None else posterior.sample(rng)
    return jax.lax.stop_gradient(z.astype(jnp.float32) * vae.config.scaling_factor)

  def latents(self, params: Any, batch: dict[str, Array], rng: Array) -> tuple[Array, Array]:
    """`(latents [B, T, h, w, 4], reference_latent [B, h, w, 4])`."""
    if self.diffusion.latents == "precomputed":
      lat = batch["latents"]
      return (lat if lat.ndim == 5 else lat[:, None]), batch["reference_latent"]
    frames = batch["target"][:, None] if self.stage == 1 else batch["frames"]
    b, t = frames.shape[:2]
    z = self.encode(params["vae"], frames.reshape((b * t,) + frames.shape[2:]), rng)
    return z.reshape((b, t) + z.shape[1:]), self.encode(params["vae"], batch["reference"], None)

  def audio_tokens(self, params: Any, audio: Array, num_frames: int, dropped: Array) -> Array:
    """Contiguous clip audio `[B, S]` -> per-frame tokens `[B, T, K, C]` for the T sampled frames."""
    m, stride = self.audio_margin, self.frame_stride
    span_frames = (num_frames - 1) * stride + 1 + 2 * m
    hidden = self.models.wav2vec2.apply({"params": params["wav2vec2"]}, normalize_waveform(audio))
    hidden = jax.lax.stop_gradient(jnp.stack(hidden, axis=2))  # [B, Na, L, D]
    hidden = cond_dropout.apply_drop(hidden, dropped)
    tokens = self.models.audio_proj.apply({"params": params["audio_proj"]}, hidden, span_frames)
    return tokens[:, m + stride * np.arange(num_frames)]

  def __call__(self, params: Any, batch: dict[str, Array], rng: Array, timesteps: Array | None = None
               ) -> tuple[Array, dict[str, Array]]:
    """The loss and `aux` (`timesteps [B]`, `x0_error [B]`); `timesteps` int32 `[B]` replaces the uniform
    draw (evaluation at chosen noise levels)."""
    d = self.diffusion
    k_lat, k_t, k_noise, k_drop = jax.random.split(rng, 4)
    x0, ref_latent = self.latents(params, batch, k_lat)
    b, t = x0.shape[:2]
    rates = {"reference": d.cond_drop["reference"]}
    if self.stage == 2:
      rates.update(audio=d.cond_drop["audio"], expression=d.cond_drop["expression"])
    dropped = cond_dropout.drop_mask(k_drop, b, rates)
    ctx = jnp.zeros((b, 1, self.models.backbone.config.unet.cross_attention_dim), jnp.float32)
    reference = self.models.reference_net.apply(
        {"params": params["reference_net"]}, cond_dropout.apply_drop(ref_latent, dropped["reference"]), ctx)
    audio = expression = None
    if self.stage == 2:
      audio = self.audio_tokens(params, batch["audio"], t, dropped["audio"])
      expression = cond_dropout.apply_drop(batch["expression"].astype(jnp.float32), dropped["expression"])
    schedule = self.schedule
    if timesteps is None:
      timesteps = jax.random.randint(k_t, (b,), 0, schedule.num_train_timesteps)
    noise = losses.offset_noise(k_noise, x0.shape, d.noise_offset)
    x_t = add_noise(schedule, x0, noise, timesteps)
    pred = self.models.backbone.apply({"params": params["backbone"]}, x_t, timesteps, ctx, reference=reference,
                                      audio_tokens=audio, expression=expression)
    change = d.get("change_weight", 0.0)
    loss = losses.prediction_loss(schedule, x_t, pred, x0, noise, timesteps, d.prediction_type,
                                  d.get("loss_target", ""), d.min_snr_gamma or None,
                                  losses.change_weights(x0, ref_latent, change) if change else None)
    x0_pred = predict_x0(schedule, x_t, pred, timesteps, d.prediction_type)
    x0_error = jnp.mean(jnp.square(x0_pred - x0), axis=tuple(range(1, x0.ndim)))
    return loss, {"timesteps": timesteps, "x0_error": x0_error}
