"""Training and evaluation of the expression GAN (`models/expression_gan.py`), as pure functions.

    config = configs.expr_gan_synthetic.get_config()
    state, history = train_gan(config, synthetic_trajectories("train"), config.train.steps)

`make_gan_step(config)` returns a jitted `step(state, batch) -> (state, metrics)` that updates D once,
then G once against the updated D; `batch` holds `expression [B, T, D]`, `emotion [B]`, `level [B]` and,
when `config.model.audio_dim > 0`, `audio [B, T, A]`. The real clip's level sets the intensity
(`level_alpha`), so each generated trajectory has a real counterpart of the same emotion, level and audio
for the reconstruction loss.

Evaluation uses a separate `EmotionClassifier` trained on real trajectories only:

- `emotion_accuracy`: fraction of generated trajectories classified as the requested emotion.
- `intensity_eval`: projection of generated trajectories on the emotion direction
  (`synth.expression.emotion_direction`, unit norm, time-averaged) over a grid of alphas: its Spearman
  correlation with alpha per emotion, and whether alpha = 0 lies within mean +- 2 std of the projections
  of real neutral trajectories.
- `neutral_drift`: per coefficient, how far the generated neutral trajectory's mean sits from the real
  neutral trajectories', in units of their spread.
"""

from __future__ import annotations

from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import scipy.stats

from emodiff_jax.emotion.expression_data import ExpressionData
from emodiff_jax.models.expression_gan import (
  EmotionClassifier,
  ExpressionDiscriminator,
  ExpressionGANConfig,
  ExpressionGenerator,
  classification_loss,
  discriminator_adversarial_loss,
  generator_adversarial_loss,
  init_params,
  level_alpha,
  reconstruction_loss,
)
from emodiff_jax.synth.expression import EMOTIONS, emotion_direction

Array = jax.Array
Metrics = dict[str, Array]


@flax.struct.dataclass
class GANState:
  """Generator and discriminator params with their optax states, the generator's exponential moving average
  (`g_ema`, the one to sample from), the step count and the noise key."""

  step: Array
  g_params: Any
  g_ema: Any
  d_params: Any
  g_opt_state: Any
  d_opt_state: Any
  rng: Array


def model_config(config: ml_collections.ConfigDict) -> ExpressionGANConfig:
  """The `ExpressionGANConfig` of a config's `model` section."""
  return ExpressionGANConfig(**config.model)


def _optimizers(config: ml_collections.ConfigDict) -> tuple[optax.GradientTransformation, optax.GradientTransformation]:
  opt = config.optimizer
  return optax.adam(opt.g_lr, opt.b1, opt.b2), optax.adam(opt.d_lr, opt.b1, opt.b2)


def create_gan_state(config: ml_collections.ConfigDict, rng: Array) -> GANState:
  """Fresh params and optimizer states for `config`; `rng` seeds the params and the training noise."""
  k_params, k_noise = jax.random.split(rng)
  g_params, d_params = init_params(model_config(config), k_params)
  g_tx, d_tx = _optimizers(config)
  return GANState(step=jnp.zeros((), jnp.int32), g_params=g_params, g_ema=jax.tree.map(jnp.copy, g_params),
                  d_params=d_params, g_opt_state=g_tx.init(g_params), d_opt_state=d_tx.init(d_params), rng=k_noise)


def make_gan_step(config: ml_collections.ConfigDict) -> Callable[[GANState, dict], tuple[GANState, Metrics]]:
  """A jitted `step(state, batch) -> (state, metrics)`: one D update, then one G update and its EMA
  (`config.train.ema_decay`; 0: `g_ema` is `g_params`)."""
  cfg = model_config(config)
  ema_decay = config.train.get("ema_decay", 0.0)
  g, d = ExpressionGenerator(cfg), ExpressionDiscriminator(cfg)
  g_tx, d_tx = _optimizers(config)

  def step(state: GANState, batch: dict) -> tuple[GANState, Metrics]:
    real, emotion = batch["expression"], batch["emotion"]
    audio = batch["audio"] if cfg.audio_dim else None
    alpha = level_alpha(batch["level"])
    rng, k_noise = jax.random.split(state.rng)
    noise = jax.random.normal(k_noise, real.shape[:2] + (cfg.noise_dim,))
    # One generator forward: D trains on `fake`, G's update pulls the gradient of its loss back through it.
    fake, g_vjp = jax.vjp(lambda p: g.apply({"params": p}, emotion, alpha, noise, audio), state.g_params)

    def d_loss_fn(d_params):
      real_logits, real_cls = d.apply({"params": d_params}, real, emotion, audio)
      fake_logits, _ = d.apply({"params": d_params}, jax.lax.stop_gradient(fake), emotion, audio)
      adv = discriminator_adversarial_loss(real_logits, fake_logits, cfg.gan_loss)
      cls = classification_loss(real_cls, emotion)
      return adv + cfg.cls_weight * cls, {
          "d_adv": adv, "d_cls": cls, "d_real_logit": real_logits.mean(), "d_fake_logit": fake_logits.mean(),
          "d_real_cls_acc": (real_cls.argmax(-1) == emotion).mean()}

    (d_loss, d_metrics), d_grads = jax.value_and_grad(d_loss_fn, has_aux=True)(state.d_params)
    d_updates, d_opt_state = d_tx.update(d_grads, state.d_opt_state, state.d_params)
    d_params = optax.apply_updates(state.d_params, d_updates)

    def g_loss_fn(generated):
      logits, cls_logits = d.apply({"params": d_params}, generated, emotion, audio)
      adv = generator_adversarial_loss(logits, cfg.gan_loss)
      rec = reconstruction_loss(generated, real)
      cls = classification_loss(cls_logits, emotion)
      return cfg.adv_weight * adv + cfg.rec_weight * rec + cfg.cls_weight * cls, {
          "g_adv": adv, "g_rec": rec, "g_cls": cls, "g_cls_acc": (cls_logits.argmax(-1) == emotion).mean()}

    (g_loss, g_metrics), d_fake = jax.value_and_grad(g_loss_fn, has_aux=True)(fake)
    (g_grads,) = g_vjp(d_fake)
    g_updates, g_opt_state = g_tx.update(g_grads, state.g_opt_state, state.g_params)
    g_params = optax.apply_updates(state.g_params, g_updates)
    g_ema = optax.incremental_update(g_params, state.g_ema, 1.0 - ema_decay)
    new_state = GANState(step=state.step + 1, g_params=g_params, g_ema=g_ema, d_params=d_params,
                         g_opt_state=g_opt_state, d_opt_state=d_opt_state, rng=rng)
    return new_state, {"d_loss": d_loss, "g_loss": g_loss, **d_metrics, **g_metrics}

  return jax.jit(step)


def batch_indices(seed: int, step: int, num_examples: int, batch_size: int,
                  p: np.ndarray | None = None) -> np.ndarray:
  """Rows `[batch_size]` of step `step`'s global batch, drawn with replacement with probabilities `p [N]`
  (uniform when None): a function of `(seed, step)` only, so a resumed run draws the same batches."""
  rng = np.random.default_rng([seed, step])
  return rng.integers(0, num_examples, batch_size) if p is None else rng.choice(num_examples, batch_size, p=p)


def train_gan(config: ml_collections.ConfigDict, data: ExpressionData,
              steps: int) -> tuple[GANState, dict[str, np.ndarray]]:
  """`steps` GAN steps on the batches `gan_loop.train_expression_gan` draws (`batch_indices`, seeded by
  `config.seed`, emotions balanced when `config.train.balance_emotions`); returns the final state and each
  metric per step `[steps]`."""
  state = create_gan_state(config, jax.random.key(config.seed))
  step = make_gan_step(config)
  p = data.sampling_weights(config.train.get("balance_emotions", False))
  history = []
  for i in range(steps):
    state, metrics = step(state, data.batch(batch_indices(config.seed, i, len(data), config.train.batch_size, p)))
    history.append(metrics)
  history = jax.device_get(history)
  return state, {k: np.asarray([m[k] for m in history]) for k in (history[0] if history else {})}


def generate(config: ml_collections.ConfigDict, g_params: Any, emotion: np.ndarray, alpha: np.ndarray,
             noise: np.ndarray, audio: np.ndarray | None = None) -> np.ndarray:
  """Trajectories `[N, T, D]` for `emotion [N]`, `alpha [N]`, `noise [N, T, Z]`, `audio [N, T, A]`."""
  cfg = model_config(config)
  apply = jax.jit(ExpressionGenerator(cfg).apply)
  return np.asarray(apply({"params": g_params}, jnp.asarray(emotion, jnp.int32), jnp.asarray(alpha, jnp.float32),
                          jnp.asarray(noise), None if not cfg.audio_dim else jnp.asarray(audio)))


def train_emotion_classifier(config: ml_collections.ConfigDict, data: ExpressionData) -> Any:
  """Params of an `EmotionClassifier` trained on the real trajectories `data` (`config.classifier`)."""
  cc = config.classifier
  model = EmotionClassifier(hidden_size=cc.hidden_size)
  params = model.init(jax.random.key(config.seed), jnp.asarray(data.expression[:1]))["params"]
  tx = optax.adam(cc.lr)

  @jax.jit
  def update(params, opt_state, expression, emotion):
    loss_fn = lambda p: classification_loss(model.apply({"params": p}, expression), emotion)
    grads = jax.grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  opt_state = tx.init(params)
  order = np.random.default_rng(config.seed)
  for _ in range(cc.steps):
    idx = order.integers(0, len(data), cc.batch_size)
    params, opt_state = update(params, opt_state, data.expression[idx], data.emotion[idx])
  return params


def classify(config: ml_collections.ConfigDict, clf_params: Any, expression: np.ndarray) -> np.ndarray:
  """Predicted emotion indices `[N]` of trajectories `[N, T, D]`."""
  logits = EmotionClassifier(hidden_size=config.classifier.hidden_size).apply({"params": clf_params}, expression)
  return np.asarray(logits.argmax(-1))


def generator_noise(config: ml_collections.ConfigDict, num: int, num_frames: int, seed: int) -> np.ndarray:
  """The generator's per-frame noise `[num, num_frames, Z]` for evaluation, deterministic in `seed`."""
  return np.random.default_rng(seed).standard_normal((num, num_frames, model_config(config).noise_dim), np.float32)


def emotion_accuracy(config: ml_collections.ConfigDict, g_params: Any, clf_params: Any, data: ExpressionData,
                     seed: int = 0) -> dict[str, float]:
  """Generates one trajectory per row of `data` (its emotion, level and audio) and returns the fraction
  classified as the requested emotion, overall (`accuracy`) and per level (`accuracy_level_<n>`), and the
  classifier's accuracy on `data` itself (`real_accuracy`)."""
  noise = generator_noise(config, *data.expression.shape[:2], seed)
  fake = generate(config, g_params, data.emotion, np.asarray(level_alpha(data.level)), noise, data.audio)
  hit = classify(config, clf_params, fake) == data.emotion
  result = {"accuracy": float(hit.mean()),
            "real_accuracy": float((classify(config, clf_params, data.expression) == data.emotion).mean())}
  for level in np.unique(data.level):
    result[f"accuracy_level_{level}"] = float(hit[data.level == level].mean())
  return result


def projection(expression: np.ndarray, emotion: str) -> np.ndarray:
  """Time-averaged projection of trajectories `[..., T, D]` on the unit direction of `emotion`: `[...]`."""
  direction = emotion_direction(emotion, expression.shape[-1])
  return expression.mean(axis=-2) @ (direction / np.linalg.norm(direction))


def intensity_eval(config: ml_collections.ConfigDict, g_params: Any, data: ExpressionData, num_alphas: int = 11,
                   num_samples: int = 32, band_floor: float = 0.05, seed: int = 0) -> dict[str, dict[str, Any]]:
  """Projection on each non-neutral emotion's direction over `alpha = linspace(0, 1, num_alphas)`, the
  same `num_samples` noises and audio tracks (the first rows of `data`) at every alpha.

  Returns, keyed by emotion: `projection` (mean over samples, `[num_alphas]`), `spearman` (with alpha),
  `neutral_band` (mean +- 2 std of the projections of `data`'s neutral trajectories, half-width at least
  `band_floor` x `span`: in the synthetic world neutral trajectories are exactly 0 along directions that
  speech, blinks and head motion do not touch), `span` (mean projection of `data`'s trajectories of that
  emotion at their highest level minus the neutral mean), `strength` (the mean projection at alpha 1 minus
  at alpha 0, over `span`), `alpha0_in_band` (the mean projection at alpha 0 lies in the band) and
  `alpha0_fraction_in_band` (the samples that do).
  """
  emotions = EMOTIONS[1:]
  alphas = np.linspace(0.0, 1.0, num_alphas, dtype=np.float32)
  noise = generator_noise(config, num_samples, data.expression.shape[1], seed)
  grid = (len(emotions), num_alphas, num_samples)
  emotion = np.broadcast_to(np.arange(1, len(EMOTIONS))[:, None, None], grid).ravel()
  alpha = np.broadcast_to(alphas[None, :, None], grid).ravel()
  tile = lambda x: np.broadcast_to(x[None, None], grid[:2] + x.shape).reshape((-1,) + x.shape[1:])
  fake = generate(config, g_params, emotion, alpha, tile(noise), tile(data.audio[:num_samples]))
  fake = fake.reshape(grid + fake.shape[1:])
  neutral = data.where(data.emotion == 0).expression
  result = {}
  for i, name in enumerate(emotions):
    proj = projection(fake[i], name)  # [num_alphas, num_samples]
    real = projection(neutral, name)
    emotional = data.where(data.emotion == i + 1)
    span = float(projection(emotional.where(emotional.level == emotional.level.max()).expression, name).mean()
                 - real.mean())
    half = max(2 * float(real.std()), band_floor * abs(span))
    band = (float(real.mean()) - half, float(real.mean()) + half)
    mean = proj.mean(axis=1)
    result[name] = {
        "projection": mean, "spearman": float(scipy.stats.spearmanr(alphas, mean).statistic),
        "neutral_band": band, "span": span, "strength": (float(mean[-1]) - float(mean[0])) / span,
        "alpha0_in_band": bool(band[0] <= mean[0] <= band[1]),
        "alpha0_fraction_in_band": float(((band[0] <= proj[0]) & (proj[0] <= band[1])).mean())}
  return result


def neutral_drift(config: ml_collections.ConfigDict, g_params: Any, data: ExpressionData, num_samples: int = 32,
                  floor: float = 0.05, seed: int = 0) -> np.ndarray:
  """`|mean generated - mean real| / std real` per coefficient, `[D]`, between the generated neutral trajectory
  (alpha 0) and `data`'s neutral trajectories (mean and std over clips and frames, the std at least `floor`),
  on `num_samples` noises and the real neutral clips' audio. Every inference edit starts from this trajectory,
  and the coefficients of `config.model.keep_neutral` (the synthetic head pose) are taken from it as they are."""
  neutral = data.where(data.emotion == 0)
  if not len(neutral):
    raise ValueError("neutral_drift needs neutral trajectories in the evaluation data; there are none")
  rows = np.arange(num_samples) % len(neutral)
  noise = generator_noise(config, num_samples, data.expression.shape[1], seed)
  fake = generate(config, g_params, np.zeros(num_samples, np.int32), np.zeros(num_samples, np.float32), noise,
                  neutral.audio[rows])
  real = neutral.expression
  return np.abs(fake.mean((0, 1)) - real.mean((0, 1))) / np.maximum(real.std((0, 1)), floor)
