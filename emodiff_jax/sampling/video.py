"""Talking-head videos of any length from the trained networks: windows of T frames sampled in one jitted
`lax.scan` each, with batched multi-condition guidance.

Per video (`VideoSampler`):
- the reference image goes through the VAE encoder and the ReferenceNet once (with the null reference
  beside it for guidance); every window attends to these same features, so each window is anchored to
  the reference and identity cannot drift over long audio;
- the audio is split per window: wav2vec2 + audio projection run once per window (never per step) on the
  window's audio with `audio_margin` frames of context on each side, as in training;
- the expression vectors `[N, D]` are cut per window.

Long audio (`WindowPlan`): windows of `window` frames overlap by `overlap` frames. The first `overlap`
frames of window w > 0 are *motion frames*: at every denoising step they are replaced by the finished
latents of window w-1's last frames, noised to the current timestep (temporal outpainting in the manner
of RePaint, Lugmayr et al. 2022, with the prior window as the known region). The new frames are thus
generated in the context of the previous ones through the temporal attention, with no blending and no
seam; only the new frames are emitted. Only one window's latents live at a time, so memory does not
grow with the length of the audio.

Randomness: window w of an example with key `k` draws its initial noise from `k_w = fold_in(k, 2w)` and
its motion-frame noise from `fold_in(k_w, 1)`, so an example's frames do not depend on the others in its
batch, and a resumed render reproduces the frames of an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from emodiff_jax.diffusion.schedule import add_noise
from emodiff_jax.models.build import Models
from emodiff_jax.sampling.guidance import FLAGS, Guidance, combine, rescale_guidance
from emodiff_jax.sampling.loop import sample
from emodiff_jax.train.objective import DiffusionObjective
from emodiff_jax.train.preview import to_uint8

Array = jax.Array
FPS = 25
SAMPLES_PER_FRAME = 640  # 16 kHz / 25 fps


@dataclasses.dataclass(frozen=True)
class WindowPlan:
  """How `num_frames` frames split into windows of `window` frames overlapping by `overlap`."""

  num_frames: int
  window: int
  overlap: int

  def __post_init__(self):
    if self.num_frames < 1:
      raise ValueError(f"video.py: need at least one frame, got {self.num_frames}")
    if not 0 <= self.overlap < self.window:
      raise ValueError(f"video.py: overlap must be in [0, window={self.window}), got {self.overlap}")

  @property
  def num_windows(self) -> int:
    return 1 + math.ceil(max(0, self.num_frames - self.window) / (self.window - self.overlap))

  def start(self, w: int) -> int:
    """First frame of window w (frames past `num_frames` are padding)."""
    return w * (self.window - self.overlap)

  def emitted(self, w: int) -> tuple[int, int]:
    """`(first, last + 1)` of the frames window w adds to the video (its motion frames excluded)."""
    s = self.start(w)
    return s + (self.overlap if w else 0), min(s + self.window, self.num_frames)


def window_audio(audio: np.ndarray, start: int, window: int, margin: int) -> np.ndarray:
  """The samples of frames `[start - margin, start + window + margin)` of `audio [S]` (zeros outside)."""
  lo, n = (start - margin) * SAMPLES_PER_FRAME, (window + 2 * margin) * SAMPLES_PER_FRAME
  out = np.zeros(n, np.float32)
  a, b = max(lo, 0), min(lo + n, len(audio))
  if b > a:
    out[a - lo:b - lo] = audio[a:b]
  return out


def window_expression(expression: np.ndarray, start: int, window: int) -> np.ndarray:
  """Rows `[start, start + window)` of `expression [N, D]`, the last row repeated past the end."""
  idx = np.minimum(np.arange(start, start + window), len(expression) - 1)
  return np.asarray(expression, np.float32)[idx]


def sampling_config() -> ml_collections.ConfigDict:
  """Defaults of the `sampling` section (`configs/common.py` re-exports it)."""
  s = ml_collections.ConfigDict()
  s.sampler = "ddim"  # or 'dpmpp_2m'
  s.num_steps = 25
  s.eta = 0.0  # DDIM only; > 0 draws the per-step noise from the first example's key
  s.timestep_spacing = ""  # '': 'trailing' with zero-terminal-SNR schedules, else 'leading' (SD-1.5)
  s.steps_offset = 1
  s.set_alpha_to_one = False  # SD-1.5's DDIM end point
  s.guidance = dataclasses.asdict(Guidance())  # scales 1: the conditional pass only; see `Guidance`
  s.batch_passes = True  # guidance passes in one backbone call (False: one call per pass)
  s.window = 8  # frames per window (the stage-2 clip length)
  s.overlap = 2  # motion frames shared with the previous window
  s.decode_chunk = 8  # frames per VAE decoder call
  return s


class VideoSampler:
  """Jitted pieces of video generation for one model; see the module docstring.

  Shapes: reference images `[B, H, W, 3]` in [-1, 1]; window audio `[B, (T + 2m) * 640]` at 16 kHz;
  expressions `[B, T, D]`; latents `[B, T, h, w, 4]` (scaled); per-example keys `[B]`.
  """

  def __init__(self, models: Models, diffusion: ml_collections.ConfigDict, sampling: ml_collections.ConfigDict,
               audio_margin: int = 2):
    self.models = models
    self.cfg = sampling
    self.audio_margin = audio_margin
    self.objective = DiffusionObjective(models, diffusion, stage=2, frame_stride=1, audio_margin=audio_margin)
    self.guidance = Guidance(**sampling.guidance)
    if not self.guidance.passes():
      raise ValueError("video.py: guidance scales leave no pass to run")
    spacing = sampling.timestep_spacing or ("trailing" if diffusion.rescale_zero_terminal_snr else "leading")
    self.sample_kwargs = dict(sampler=sampling.sampler, num_steps=sampling.num_steps, eta=sampling.eta,
                              prediction_type=diffusion.prediction_type, timestep_spacing=spacing,
                              steps_offset=sampling.steps_offset, set_alpha_to_one=sampling.set_alpha_to_one)
    self.reference = jax.jit(self._reference)
    self.window = jax.jit(self._window)
    self.decode = jax.jit(self._decode)

  @property
  def latent_channels(self) -> int:
    return self.models.vae.config.latent_channels

  def _context(self, b: int) -> Array:
    """The SD text cross-attention's fixed all-zero context `[b, 1, D]` (no prompt, as in training)."""
    return jnp.zeros((b, 1, self.models.backbone.config.unet.cross_attention_dim), jnp.float32)

  def _reference(self, params: Any, images: Array) -> dict[str, Any]:
    """Reference images `[B, H, W, 3]` -> `{'latent': [B, h, w, 4], 'real': features, 'null': features}`."""
    latent = self.objective.encode(params["vae"], images, None)
    b = latent.shape[0]
    both = self.models.reference_net.apply({"params": params["reference_net"]},
                                           jnp.concatenate([latent, jnp.zeros_like(latent)]), self._context(2 * b))
    return {"latent": latent, "real": jax.tree.map(lambda f: f[:b], both),
            "null": jax.tree.map(lambda f: f[b:], both)}

  def conditions(self, params: Any, reference: dict[str, Any], audio: Array, expression: Array,
                 neutral_expression: Array | None = None) -> list[dict[str, Any]]:
    """Backbone keyword arguments per guidance pass, for window audio `[B, S]`, expressions `[B, T, D]` and,
    for emotion guidance, the same trajectories at intensity 0 `[B, T, D]`."""
    b, t = expression.shape[:2]
    if self.guidance.needs_neutral and neutral_expression is None:
      raise ValueError("video.py: emotion guidance (guidance.emotion != 1) needs the intensity-0 expressions")
    tokens = {flag: self.objective.audio_tokens(params, audio, t, jnp.full((b,), not flag))
              for flag in {p[0][1] for p in self.guidance.passes()}}
    expression = expression.astype(jnp.float32)

    def expression_of(uses_expression: bool, uses_emotion: bool) -> Array:
      if not uses_expression:
        return jnp.zeros_like(expression)
      return expression if uses_emotion else neutral_expression.astype(jnp.float32)

    return [dict(reference=reference["real" if r else "null"], audio_tokens=tokens[a],
                 expression=expression_of(e, m))
            for (r, a, e, m), _ in self.guidance.passes()]

  def denoiser(self, params: Any, conds: list[dict[str, Any]]):
    """`denoise(x [B, T, h, w, 4], t [B]) -> guided model output` (rescaled when `guidance.rescale`), the
    passes batched or one by one; at steps where no example is in the emotion interval only the passes
    weighing != 0 there run."""
    backbone = functools.partial(self.models.backbone.apply, {"params": params["backbone"]})
    keep, every = self.guidance.outside_passes(), tuple(range(len(conds)))
    full = [f for f, _ in self.guidance.passes()].index(FLAGS[-1]) if self.guidance.rescale else None

    def run(x: Array, t: Array, w: Array, which: tuple[int, ...]) -> Array:
      passes = [conds[i] for i in which]
      b, n = x.shape[0], len(passes)
      if self.cfg.batch_passes:
        stacked = jax.tree.map(lambda *a: jnp.concatenate(a), *passes)
        out = backbone(jnp.concatenate([x] * n), jnp.concatenate([t] * n), self._context(n * b), **stacked)
        outs = out.reshape((n, b) + out.shape[1:])
      else:
        outs = jnp.stack([backbone(x, t, self._context(b), **c) for c in passes])
      guided = combine(outs, w)
      if not self.guidance.rescale:
        return guided
      return rescale_guidance(guided, outs[which.index(full)].astype(jnp.float32), self.guidance.rescale)

    def denoise(x: Array, t: Array) -> Array:
      w = self.guidance.weights_at(t)
      if keep == every:
        return run(x, t, w, every)
      return jax.lax.cond(jnp.any(self.guidance.inside(t)), lambda: run(x, t, w, every),
                          lambda: run(x, t, w[jnp.asarray(keep)], keep))

    return denoise

  def _window(self, params: Any, reference: dict[str, Any], audio: Array, expression: Array, motion: Array,
              has_motion: Array, keys: Array, window_index: Array, neutral_expression: Array | None = None
              ) -> Array:
    """Latents `[B, T, h, w, 4]` of one window.

    `motion [B, O, h, w, 4]`: the previous window's last O latents, used where `has_motion` (scalar bool);
    `neutral_expression [B, T, D]`: the expressions at intensity 0, for emotion guidance only.
    """
    b, t = expression.shape[:2]
    o = motion.shape[1]
    h = reference["latent"].shape[1:3]
    shape = (t,) + tuple(h) + (self.latent_channels,)
    keys = jax.vmap(lambda k: jax.random.fold_in(k, 2 * window_index))(keys)
    x_T = jax.vmap(lambda k: jax.random.normal(k, shape, jnp.float32))(keys)
    motion_noise = jax.vmap(lambda k: jax.random.normal(jax.random.fold_in(k, 1), motion.shape[1:]))(keys)
    denoise = self.denoiser(params, self.conditions(params, reference, audio, expression, neutral_expression))
    schedule = self.objective.schedule

    def with_motion(x: Array, ts: Array) -> Array:
      if o:
        known = add_noise(schedule, motion, motion_noise, ts)
        x = x.at[:, :o].set(jnp.where(has_motion, known, x[:, :o]))
      return denoise(x, ts)

    rng = keys[0] if self.cfg.eta > 0 else None
    return sample(with_motion, schedule, x_T, rng=rng, **self.sample_kwargs)

  def _decode(self, params: Any, latents: Array) -> Array:
    """Scaled latents `[N, h, w, 4]` -> frames `[N, H, W, 3]` in [-1, 1]."""
    vae = self.models.vae
    images = vae.apply({"params": params["vae"]}, latents / vae.config.scaling_factor, method=vae.decode)
    return jnp.clip(images.astype(jnp.float32), -1.0, 1.0)

  def decode_frames(self, params: Any, latents: Array) -> np.ndarray:
    """`[N, h, w, 4]` -> uint8 frames `[N, H, W, 3]`, decoded `decode_chunk` frames per call."""
    n, c = latents.shape[0], self.cfg.decode_chunk
    out = []
    for i in range(0, n, c):
      chunk = latents[i:i + c]
      pad = c - chunk.shape[0]
      if pad:
        chunk = jnp.concatenate([chunk, jnp.zeros((pad,) + chunk.shape[1:], chunk.dtype)])
      out.append(np.asarray(self.decode(params, chunk))[:c - pad])
    return to_uint8(np.concatenate(out))
