"""Expression GAN: emotion + intensity + noise (+ audio) -> an expression trajectory `[B, T, D]`.

The emotion editing condition generation module of EMOdiffhead (arXiv 2409.07255, Sec. 3): an LSTM
generator turns an emotion category and an intensity into a sequence of FLAME-like expression codes that
then condition the diffusion backbone. The method text of the paper was not available to us, so the
losses below follow the description of our issue (adversarial + reconstruction + emotion
classification) with standard forms rather than numbered equations of the paper:

- adversarial: the non-saturating GAN loss (Goodfellow et al. 2014, Sec. 3) or the hinge loss
  (Lim & Ye 2017), `gan_loss` in the config; the discriminator is a projection discriminator on the
  emotion (Miyato & Koyama 2018, Eq. 3: `logit = psi(h) + <embed(y), h>`).
- reconstruction: L1 between the trajectory generated for a real clip's emotion, level and audio and
  that clip's trajectory.
- emotion classification: cross-entropy of an auxiliary classifier head on the discriminator's
  features, on real trajectories for D and on generated ones for G (AC-GAN, Odena et al. 2017, Eq. 2-3).

Intensity follows the paper's editing rule (the linearity of FLAME expressions, Fig. 3, as in
`emotion.editing.interpolate`): the LSTM generates the full-intensity emotional trajectory `e_e` and the
neutral one `e_n` from the same noise and audio, and the output is `e_n + alpha * (e_e - e_n)`. Alpha
is therefore not an input of the LSTM; the projection on the emotion direction is linear in alpha by
construction and the network learns only what the emotion does (`e_e - e_n`) and what it does not.
For a neutral request `e_e = e_n`, so alpha has no effect. Coefficients in `keep_neutral` are left out of
the edit: the output keeps `e_n`'s values there at every alpha, in training as at inference (the synthetic
world carries head pose in its expression vector, and no emotion moves it; FLAME's code holds no pose).
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from emodiff_jax.synth.expression import EMOTIONS, EXPRESSION_DIM, LEVEL_SCALE

Array = jax.Array
GAN_LOSSES = ("non_saturating", "hinge")


@dataclasses.dataclass(frozen=True)
class ExpressionGANConfig:
  """Expression GAN hyper-parameters.

  Attributes:
    expression_dim: D, expression code size (FLAME: 50).
    num_emotions: emotion classes (MEAD: 8, index 0 neutral as in `synth.expression.EMOTIONS`).
    noise_dim: Z, per-frame noise size.
    audio_dim: A, per-frame audio feature size; 0 = no audio input.
    embed_dim: emotion embedding size of the generator.
    hidden_size: LSTM width.
    num_layers: stacked LSTM layers.
    disc_channels: channels of the discriminator's temporal convolutions.
    disc_layers: number of those convolutions.
    disc_kernel: their temporal kernel size (frames).
    gan_loss: 'non_saturating' or 'hinge'.
    adv_weight: weight of the generator's adversarial loss.
    rec_weight: weight of the L1 reconstruction loss.
    cls_weight: weight of the emotion classification loss (for D on real, for G on generated data).
    keep_neutral: coefficient indices no emotion moves (output = `e_n` there at every alpha).
  """

  expression_dim: int = EXPRESSION_DIM
  num_emotions: int = len(EMOTIONS)
  noise_dim: int = 16
  audio_dim: int = 0
  embed_dim: int = 16
  hidden_size: int = 128
  num_layers: int = 2
  disc_channels: int = 64
  disc_layers: int = 3
  disc_kernel: int = 5
  gan_loss: str = "non_saturating"
  adv_weight: float = 1.0
  rec_weight: float = 10.0
  cls_weight: float = 1.0
  keep_neutral: tuple[int, ...] = ()

  def __post_init__(self):
    if self.gan_loss not in GAN_LOSSES:
      raise ValueError(f"unknown gan_loss {self.gan_loss!r}; expected one of {GAN_LOSSES}")
    object.__setattr__(self, "keep_neutral", tuple(int(i) for i in self.keep_neutral))
    bad = [i for i in self.keep_neutral if not 0 <= i < self.expression_dim]
    if bad:
      raise ValueError(f"keep_neutral={list(self.keep_neutral)}: indices {bad} outside the "
                       f"{self.expression_dim}-d expression vector")


def level_alpha(level: Array) -> Array:
  """Intensity of MEAD levels (`synth.expression.LEVEL_SCALE`, 0 -> 0.0, 3 -> 1.0): `[B]` int -> `[B]`."""
  table = jnp.asarray([LEVEL_SCALE[k] for k in range(max(LEVEL_SCALE) + 1)], jnp.float32)
  return table[level]


def _check_audio(audio: Optional[Array], audio_dim: int) -> None:
  if audio_dim and audio is None:
    raise ValueError(f"config.audio_dim={audio_dim} but no audio features were given")
  if audio is not None and audio.shape[-1] != audio_dim:
    raise ValueError(f"audio features have {audio.shape[-1]} channels, config.audio_dim={audio_dim}")


class ExpressionGenerator(nn.Module):
  """Stacked LSTM generator with the intensity rule `e_n + alpha * (e_e - e_n)`."""

  config: ExpressionGANConfig

  @nn.compact
  def __call__(self, emotion: Array, alpha: Array, noise: Array, audio: Optional[Array] = None) -> Array:
    """`emotion [B]` int, `alpha [B]`, `noise [B, T, Z]`, `audio [B, T, A]` -> trajectory `[B, T, D]`."""
    cfg = self.config
    _check_audio(audio, cfg.audio_dim)
    b, t, _ = noise.shape
    # One pass for the requested emotion and one for neutral, on the same noise and audio.
    both = jnp.concatenate([emotion, jnp.zeros_like(emotion)])
    embed = nn.Embed(cfg.num_emotions, cfg.embed_dim, name="emotion_embed")(both)
    x = [jnp.broadcast_to(embed[:, None], (2 * b, t, cfg.embed_dim)), jnp.concatenate([noise, noise])]
    if audio is not None:
      x.append(jnp.concatenate([audio, audio]).astype(noise.dtype))
    h = nn.Dense(cfg.hidden_size, name="proj_in")(jnp.concatenate(x, axis=-1))
    for i in range(cfg.num_layers):
      h = nn.RNN(nn.OptimizedLSTMCell(cfg.hidden_size), name=f"lstm_{i}")(h)
    out = nn.Dense(cfg.expression_dim, name="proj_out")(h)
    emotional, neutral = out[:b], out[b:]
    edit = emotional - neutral
    if cfg.keep_neutral:
      edit = edit.at[..., jnp.asarray(cfg.keep_neutral)].set(0.0)
    return neutral + alpha[:, None, None] * edit


class ExpressionDiscriminator(nn.Module):
  """Temporal conv discriminator: trajectory (+ audio) -> (real/fake logit `[B]`, emotion logits `[B, E]`).

  The real/fake logit is a projection discriminator on the emotion; the emotion logits are the AC-GAN
  auxiliary classifier on the same pooled features.
  """

  config: ExpressionGANConfig

  @nn.compact
  def __call__(self, expression: Array, emotion: Array, audio: Optional[Array] = None) -> tuple[Array, Array]:
    """`expression [B, T, D]`, `emotion [B]` int, `audio [B, T, A]` -> `([B], [B, E])`."""
    cfg = self.config
    _check_audio(audio, cfg.audio_dim)
    h = expression if audio is None else jnp.concatenate([expression, audio.astype(expression.dtype)], -1)
    for i in range(cfg.disc_layers):
      h = nn.leaky_relu(nn.Conv(cfg.disc_channels, (cfg.disc_kernel,), name=f"conv_{i}")(h), 0.2)
    pooled = h.mean(axis=1)
    projection = nn.Embed(cfg.num_emotions, cfg.disc_channels, name="emotion_projection")(emotion)
    logit = nn.Dense(1, name="adv_head")(pooled)[:, 0] + (projection * pooled).sum(-1)
    return logit, nn.Dense(cfg.num_emotions, name="cls_head")(pooled)


class EmotionClassifier(nn.Module):
  """Evaluation classifier, trained on real trajectories only: time-mean `[B, D]` -> MLP -> logits `[B, E]`."""

  num_emotions: int = len(EMOTIONS)
  hidden_size: int = 64

  @nn.compact
  def __call__(self, expression: Array) -> Array:
    h = nn.relu(nn.Dense(self.hidden_size)(expression.mean(axis=1)))
    return nn.Dense(self.num_emotions)(h)


def discriminator_adversarial_loss(real_logits: Array, fake_logits: Array, kind: str) -> Array:
  """D's adversarial loss (scalar): real -> 1, fake -> 0 (non-saturating) or hinge margins."""
  if kind == "hinge":
    return jax.nn.relu(1.0 - real_logits).mean() + jax.nn.relu(1.0 + fake_logits).mean()
  return optax.sigmoid_binary_cross_entropy(real_logits, jnp.ones_like(real_logits)).mean() + \
      optax.sigmoid_binary_cross_entropy(fake_logits, jnp.zeros_like(fake_logits)).mean()


def generator_adversarial_loss(fake_logits: Array, kind: str) -> Array:
  """G's adversarial loss (scalar): `-log D(G(z))` (non-saturating) or `-D(G(z))` (hinge)."""
  if kind == "hinge":
    return -fake_logits.mean()
  return optax.sigmoid_binary_cross_entropy(fake_logits, jnp.ones_like(fake_logits)).mean()


def reconstruction_loss(generated: Array, real: Array) -> Array:
  """Mean L1 between `[B, T, D]` trajectories."""
  return jnp.abs(generated - real).mean()


def classification_loss(logits: Array, emotion: Array) -> Array:
  """Mean cross-entropy of emotion logits `[B, E]` against labels `[B]`."""
  return optax.softmax_cross_entropy_with_integer_labels(logits, emotion).mean()


def init_params(config: ExpressionGANConfig, rng: Array, num_frames: int = 8) -> tuple[dict, dict]:
  """Generator and discriminator params `(g_params, d_params)` for `config`."""
  k_g, k_d = jax.random.split(rng)
  emotion = jnp.zeros((1,), jnp.int32)
  audio = jnp.zeros((1, num_frames, config.audio_dim)) if config.audio_dim else None
  noise = jnp.zeros((1, num_frames, config.noise_dim))
  g = ExpressionGenerator(config).init(k_g, emotion, jnp.ones((1,)), noise, audio)["params"]
  d = ExpressionDiscriminator(config).init(k_d, jnp.zeros((1, num_frames, config.expression_dim)), emotion,
                                           audio)["params"]
  return g, d

