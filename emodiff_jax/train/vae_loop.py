"""Training the KL autoencoder (`models/vae.py`) on frames: `train_vae(config, workdir)`.

Loss, LDM style (Rombach et al. 2022, "High-Resolution Image Synthesis with Latent Diffusion Models",
KL-regularised autoencoder): reconstruction through a posterior sample plus a small KL to N(0, I),

  loss = mean|x' - x| + l2_weight * mean (x' - x)^2 + gradient_weight * mean|grad x' - grad x|
         + kl_weight * KL / (H * W * 3)

where `grad` is the horizontal and vertical finite difference (keeps thin mouth and eye shapes sharp).
With `change_weight` = c > 0 the three reconstruction terms are weighted means over pixels, the weight
`1 + c m` where `m` in [0, 1] is where a batch pair's target and reference frames differ (channel-mean
|target - reference| / 2, max-pooled over 5x5 so a moved edge counts at both places; the same map for
both frames of the pair): with the neutral face as reference (`data.reference = 'neutral'`), the mouth,
brows and eyelids that carry the expression, a few percent of the frame, are not drowned by hair and
background.
LDM sums the pixel loss and the KL per example; dividing both by the number of pixel values gives the
same balance, so `kl_weight` reads as theirs (1e-6 for their KL-f8 models). No perceptual or GAN term.

Decoder fine-tuning (`train.decoder_only`, started from a bundle's VAE with `init.bundle`): the encoder and
`quant_conv` stay frozen, bit for bit, so the latent space a diffusion model was trained on does not move and
the new decoder can replace the bundle's (`sampling.bundle.with_vae`); only the decoder side learns to draw
those latents better. Stability AI's `sd-vae-ft-mse` improved SD's autoencoder the same way, fine-tuning its
decoder alone to stay compatible with the trained UNets. The KL term then has no gradient.

The run mirrors `train/loop.py`: the `{'vae': params}` state of `train/state.py` (EMA optional) placed
on the `config.mesh` mesh, the step of `train/step.py` (non-finite guard, accumulation), batches from
the grain pipeline (`config.data`, stage 'image': each example gives its 'target' and 'reference'
frames, so a batch of B examples trains on 2B images), checkpoints with the data iterator state in
`<workdir>/checkpoints` (resumed with no flag), SIGTERM saves and stops. Logs to `<workdir>/tb`: loss,
grad norm, learning rate, steps/s and, every `train.log_every` steps, PSNR / L1 / KL of the batch
(posterior mean, current params); every `train.eval_every` steps PSNR of `train.eval_batches` fixed
held-out batches (`data` on split `train.eval_split`, EMA params); every `train.preview_every` steps a
PNG of originals | reconstructions (`<workdir>/previews/step_<n>.png`).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from emodiff_jax.atomic_io import write_png
from emodiff_jax.input import pipeline
from emodiff_jax.models.build import build_models
from emodiff_jax.models.vae import AutoencoderKL
from emodiff_jax.train import preview
from emodiff_jax.train.checkpoint import RunCheckpoints, read_latest
from emodiff_jax.train.init import bundle_params
from emodiff_jax.train.loop import save_if_good
from emodiff_jax.train.optimizer import make_optimizer
from emodiff_jax.train.step_loop import StepLoop, train_scalars
from emodiff_jax.train.sharding import global_batch, make_mesh, tree_shardings
from emodiff_jax.train.state import TrainState, create_state, steps_done
from emodiff_jax.train.step import jit_train_step, make_train_step
from emodiff_jax.train.writer import MetricWriter

log = logging.getLogger("emodiff_jax.train")
Array = jax.Array
BATCH_KEYS = ("target", "reference")
LATENT_MODULES = ("encoder", "quant_conv")  # image -> posterior moments: the latent space


def build_vae(config: ml_collections.ConfigDict) -> AutoencoderKL:
  """The `AutoencoderKL` of `config.model.vae` in `config.train.compute_dtype`."""
  return build_models(config.model, jnp.dtype(config.train.compute_dtype)).vae


def init_vae_params(vae: AutoencoderKL, resolution: int, rng: Array) -> Any:
  """Random params of `vae` (initialised on `[1, resolution, resolution, 3]`)."""
  return vae.init(rng, jnp.zeros((1, resolution, resolution, 3), jnp.float32))["params"]


def vae_labels(abstract_params: Any, decoder_only: bool) -> Any:
  """`{'vae': tree of 'train' / 'frozen'}` for `make_optimizer`: every leaf trains, or with `decoder_only`
  the modules that make the latents (`LATENT_MODULES`) are frozen."""
  return {"vae": {name: jax.tree.map(lambda _: "frozen" if decoder_only and name in LATENT_MODULES else "train", tree)
                  for name, tree in abstract_params["vae"].items()}}


def batch_images(batch: dict[str, Array]) -> Array:
  """`target` and `reference` `[B, H, W, 3]` -> `[2B, H, W, 3]` float32 in [-1, 1]."""
  return jnp.concatenate([batch[k] for k in BATCH_KEYS], axis=0).astype(jnp.float32)


def psnr(images: Array, recon: Array) -> Array:
  """PSNR in dB per image `[B]` of `recon` (clipped to [-1, 1]) against `images`, on the [0, 1] scale."""
  mse = jnp.mean((jnp.clip(recon, -1.0, 1.0) - images) ** 2, axis=(1, 2, 3))
  return 10.0 * jnp.log10(4.0 / jnp.maximum(mse, 1e-12))


def weighted_mean(x: Array, weights: Array | None) -> Array:
  """Mean of `x [B, H, W, C]`, weighted per pixel by `weights [B, H, W, 1]` when given."""
  if weights is None:
    return jnp.mean(x)
  return jnp.sum(x * weights) / (jnp.sum(weights) * x.shape[-1])


def image_gradient_l1(images: Array, recon: Array, weights: Array | None = None) -> Array:
  """(Weighted) mean absolute difference of the horizontal and vertical finite differences `[B, H, W, C]`."""
  dy = lambda x: x[:, 1:] - x[:, :-1]
  dx = lambda x: x[:, :, 1:] - x[:, :, :-1]
  wy, wx = (None, None) if weights is None else (weights[:, 1:], weights[:, :, 1:])
  return (weighted_mean(jnp.abs(dy(recon) - dy(images)), wy)
          + weighted_mean(jnp.abs(dx(recon) - dx(images)), wx))


def change_weights(images: Array, change_weight: float, window: int = 5) -> Array:
  """Pixel weights `[2B, H, W, 1]` `1 + change_weight * m` for `batch_images`' `[2B, H, W, 3]` (targets,
  then their references): `m` in [0, 1] is the pair's channel-mean |target - reference| / 2, max-pooled
  over `window` x `window`, the same for both frames of a pair."""
  target, reference = jnp.split(images, 2, axis=0)
  m = jnp.mean(jnp.abs(target - reference), axis=-1, keepdims=True) / 2.0
  m = jax.lax.reduce_window(m, -jnp.inf, jax.lax.max, (1, window, window, 1), (1, 1, 1, 1), "SAME")
  w = 1.0 + change_weight * m
  return jnp.concatenate([w, w], axis=0)


def vae_loss(vae: AutoencoderKL, loss_cfg: ml_collections.ConfigDict, params: Any, images: Array,
             rng: Array) -> tuple[Array, dict[str, Array]]:
  """The loss of the module docstring for `batch_images`' `[2B, H, W, 3]`, reconstructed through a
  posterior sample; returns it and its terms."""
  recon, dist = vae.apply({"params": params}, images, rng)
  recon = recon.astype(jnp.float32)
  diff = recon - images
  c = loss_cfg.get("change_weight", 0.0)
  w = change_weights(images, c) if c else None
  terms = dict(l1=weighted_mean(jnp.abs(diff), w), l2=weighted_mean(diff**2, w),
               gradient=image_gradient_l1(images, recon, w),
               kl=jnp.mean(dist.kl().astype(jnp.float32)) / np.prod(images.shape[1:]))
  loss = (terms["l1"] + loss_cfg.l2_weight * terms["l2"] + loss_cfg.gradient_weight * terms["gradient"]
          + loss_cfg.kl_weight * terms["kl"])
  return loss, terms


def reconstruct(vae: AutoencoderKL, params: Any, images: Array) -> Array:
  """Reconstructions `[B, H, W, 3]` through the posterior mean, clipped to [-1, 1]."""
  return jnp.clip(vae.apply({"params": params}, images)[0].astype(jnp.float32), -1.0, 1.0)


def reconstruction_metrics(vae: AutoencoderKL, params: Any, images: Array) -> dict[str, Array]:
  """PSNR (mean over images), L1 and KL (per pixel value, as in the loss) of the posterior-mean
  reconstruction."""
  dist = vae.apply({"params": params}, images, method=vae.encode)
  recon = vae.apply({"params": params}, dist.mode(), method=vae.decode).astype(jnp.float32)
  return dict(psnr=jnp.mean(psnr(images, recon)), l1=jnp.mean(jnp.abs(jnp.clip(recon, -1, 1) - images)),
              kl=jnp.mean(dist.kl()) / np.prod(images.shape[1:]))


def recon_grid(images: np.ndarray, recon: np.ndarray) -> np.ndarray:
  """`[N, H, W, 3]` originals and reconstructions in [-1, 1] -> uint8 `[N * H, 2 * W, 3]`, one example
  per row: original | reconstruction."""
  n, h, w, _ = images.shape
  return preview.to_uint8(np.concatenate([images, recon], axis=2).reshape(n * h, 2 * w, 3))


def _vae_params(state: TrainState) -> Any:
  """The params to evaluate and preview: EMA when kept."""
  return (state.ema_params or state.params)["vae"]


def _held_out(config: ml_collections.ConfigDict) -> list[dict[str, np.ndarray]]:
  """`train.eval_batches` fixed batches of `data` on split `train.eval_split` (this host's share)."""
  if not config.train.eval_batches:
    return []
  it = iter(pipeline.make_dataset(config.data, split=config.train.eval_split))
  return [{k: next(it)[k] for k in BATCH_KEYS} for _ in range(config.train.eval_batches)]


def _prefixed(prefix: str, metrics: dict[str, Any]) -> dict[str, float]:
  return {f"{prefix}_{k}": float(v) for k, v in jax.device_get(metrics).items()}


def evaluate(metrics_fn: Any, params: Any, batches: list[dict[str, np.ndarray]], mesh: Any) -> dict[str, float]:
  """Reconstruction metrics averaged over `batches`."""
  out = [jax.device_get(metrics_fn(params, global_batch(b, mesh))) for b in batches]
  return {k: float(np.mean([m[k] for m in out])) for k in out[0]}


def train_vae(config: ml_collections.ConfigDict, workdir: str) -> TrainState:
  """Runs (or resumes) the VAE's training in `workdir`; returns the final state."""
  if config.data.stage != "image":
    raise ValueError(f"the VAE trains on data.stage='image' batches, config has {config.data.stage!r}")
  os.makedirs(workdir, exist_ok=True)
  mesh = make_mesh(config.mesh)
  vae = build_vae(config)
  k_init, k_state = jax.random.split(jax.random.PRNGKey(config.train.seed))
  init = lambda k: {"vae": init_vae_params(vae, config.model.resolution, k)}
  abstract_params = jax.eval_shape(init, k_init)
  start = config.get("init", {}).get("bundle", "")
  decoder_only = config.train.get("decoder_only", False)
  if decoder_only and not start:
    raise ValueError("train.decoder_only fine-tunes a trained decoder: set init.bundle to the bundle whose latent "
                     "space to keep")
  labels = vae_labels(abstract_params, decoder_only)
  tx, schedule = make_optimizer(config.optim, labels, config.train.steps)
  make_state = lambda p: create_state(p, tx, labels, k_state, config.optim.ema_decay)
  abstract_state = jax.eval_shape(make_state, abstract_params)
  state_sh = tree_shardings(abstract_state, mesh, config.mesh.rules)

  data_iter = iter(pipeline.make_dataset(config.data, split="train"))
  ckpt = RunCheckpoints(workdir, save_every=config.train.checkpoint_every, keep=config.train.keep_checkpoints,
                        async_save=config.train.async_checkpoints)
  if start:  # the bundle's weights (shapes checked) instead of a random init; a resumed run reads its checkpoint
    fresh = lambda: jax.jit(make_state, out_shardings=state_sh)(bundle_params(start, abstract_params))
  else:
    fresh = lambda: jax.jit(lambda k: make_state(init(k)), out_shardings=state_sh)(k_init)
  state = ckpt.restore_or_init(abstract_state, state_sh, fresh, data_iter)
  count = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(abstract_params))
  log.info("mesh %s; VAE params: %s", dict(mesh.shape), f"{count:,}")

  objective = lambda p, b, r: vae_loss(vae, config.loss, p["vae"], batch_images(b), r)
  step_fn = jit_train_step(
      make_train_step(objective, tx, labels, accum_steps=config.optim.accum_steps, ema_decay=config.optim.ema_decay,
                      learning_rate=schedule),
      state_sh, mesh)
  metrics_fn = jax.jit(lambda p, b: reconstruction_metrics(vae, p, batch_images(b)))
  recon_fn = jax.jit(lambda p, x: reconstruct(vae, p, x))
  held_out = _held_out(config)
  writer = MetricWriter(os.path.join(workdir, "tb"))
  compiled = None
  loop = StepLoop(steps_done(state), config.train.steps, desc="VAE")
  for done in loop:
    host_batch = next(data_iter)
    batch = global_batch({k: host_batch[k] for k in BATCH_KEYS}, mesh)
    if compiled is None:  # steps/s leaves compilation out
      compiled = step_fn.lower(state, batch).compile()
      loop.restart_clock()
    state, metrics = compiled(state, batch)
    loop.record(metrics)
    save_if_good(ckpt, done, state, data_iter, config)
    if loop.log_due(config.train.log_every):
      stacked, seconds = loop.flush()
      scalars = train_scalars(stacked, seconds, state.skipped_steps)
      scalars.update(_prefixed("batch", metrics_fn(state.params["vae"], batch)))
      if config.train.eval_every and loop.log_due(config.train.eval_every):
        scalars.update(_prefixed("heldout", evaluate(metrics_fn, _vae_params(state), held_out, mesh)))
      writer.write_scalars(done, scalars)
      loop.bar.set_postfix(loss=f"{scalars['loss']:.4f}", psnr=f"{scalars['batch_psnr']:.1f}")
      loop.restart_clock()  # the held-out evaluation is not training time
    if config.train.preview_every and done % config.train.preview_every == 0:
      _write_preview(recon_fn, _vae_params(state), host_batch, config.train.preview_examples, workdir, writer, done)
      loop.restart_clock()
  ckpt.finish(loop.done, state, data_iter, config)
  writer.close()
  return state


def _write_preview(recon_fn: Any, params: Any, host_batch: dict, n: int, workdir: str, writer: MetricWriter,
                   step: int) -> None:
  """Originals | reconstructions (posterior mean) of this host's first `n` target frames."""
  images = np.asarray(host_batch["target"][:n], np.float32)
  grid = recon_grid(images, np.asarray(recon_fn(params, images)))
  if jax.process_index() == 0:
    os.makedirs(os.path.join(workdir, "previews"), exist_ok=True)
    write_png(os.path.join(workdir, "previews", f"step_{step:07d}.png"), grid)
  writer.write_image(step, "reconstructions", grid)


def load_vae(workdir: str) -> tuple[ml_collections.ConfigDict, Any]:
  """The config and VAE params (EMA when the run kept them) of `workdir`'s latest checkpoint."""
  which = lambda config: "ema_params" if config.optim.ema_decay > 0 else "params"

  def wanted(config):
    abstract = jax.eval_shape(lambda k: init_vae_params(build_vae(config), config.model.resolution, k),
                              jax.random.PRNGKey(0))
    return {which(config): {"vae": abstract}}

  config, restored, _ = read_latest(workdir, wanted)
  return config, restored[which(config)]["vae"]
