"""Evaluation harness on the synthetic world: does a generator follow emotion, intensity, audio and identity?

For each held-out identity of `split` (both partitions by default) the harness asks a `VideoFn` for clips of
every emotion at several intensities, measures them with an expression probe (`emotion.probe`) and scores:

- emotion accuracy at intensity 1.0: a nearest-centroid classifier on the clip-mean probe coefficients
  (the 15 face coefficients; head pose is left out), its centroids the mean probe output of *real* world
  clips of the 'train' identities at full intensity, one per emotion (neutral included); the overall
  summary's `confusion` `[8, 8]` says what each requested emotion was taken for;
- intensity faithfulness: per non-neutral emotion, the Spearman correlation between requested intensities
  and the measured projection on the emotion's direction (`direction_projection`, relative to the neutral
  centroid), pooled over the emotion's clips (clip k shares identity, audio and seed across intensities;
  with several clips per intensity the ties cap it below 1: `spearman_ceiling`), and the emotion's `slope`:
  the mean measured projection at the highest requested intensity minus at the lowest, per unit of
  intensity (how strongly the emotion is drawn; the world's own clips measure 0.7-0.9, not 1, because each
  expression trajectory ramps up from its onset);
- expression error between the probe's measurement and the world's own expression trajectory for the
  request (`world_expression`: the world's jaw rule on the request's audio and the editing rule
  `e_0 + alpha (e_1 - e_0)`; blinks and head motion are drawn from the request's seed, so a generator
  with its own motion has a floor above 0);
- lip sync: `lipsync.envelope_jaw_sync` of the audio envelope and the probe's `jaw_open`, best offset in
  +-5 frames;
- Fréchet distances against real world clips of the same requests drawn with another seed (other audio,
  blinks and head motion): 'fd_probe' on the probe's 18 coefficients per frame (expression realism; they
  are blind to who is shown), 'fid_probe' on the probe's hidden activations per frame (`feature_fn`, e.g.
  `emotion.probe.probe_features`: FID's recipe, Heusel et al. 2017, which takes a network's penultimate
  features rather than its outputs, with the probe as the network; these see the face as well as the
  expression) and 'fd_face' on `synthetic_face_features` of each frame minus those of its reference, pooled
  from 16x16 to 8x8 cells (192-d, so the covariances stay cheap), i.e. appearance relative to the portrait:
  a swapped identity is far, a real clip of the right identity is near;
- identity: `identity_similarity` (synthetic face features) and `attribute_colour_distance` to the
  reference.

`VideoFn(reference uint8 [H, W, 3], audio float32 [S] at 16 kHz, emotion, intensity, seed) -> uint8
[T, H', W', 3]` (T = S / 640; frames are resized to the world's resolution). A `VideoFn` may also offer
`generate_batch(calls) -> list of frames` for a list of such argument tuples. Provided: `bundle_video_fn`
(the inference path, `sampling.render`), `oracle_video_fn` (the world itself: the upper bound),
`vae_roundtrip_fn` (the world through a bundle's VAE: the ceiling for that VAE), `reference_repeated_fn`
and `random_identity_fn` (baselines). `write_report` writes `metrics.json`,
`metrics.md` and `intensity.png`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
import zlib
from typing import Any, Callable, Mapping, Sequence

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import soundfile
from PIL import Image, ImageDraw, ImageFont

from emodiff_jax.atomic_io import write_png
from emodiff_jax.eval.emotion_metrics import confusion_matrix, direction_projection, expression_error, spearman
from emodiff_jax.eval.frechet import FeatureStats, stats_distance
from emodiff_jax.eval.identity import (
  FEATURE_GRID,
  attribute_colour_distance,
  identity_similarity,
  synthetic_face_features,
)
from emodiff_jax.eval.lipsync import envelope_jaw_sync
from emodiff_jax.synth.audio import FPS, SAMPLE_RATE, envelope_from_audio, speech_like_audio
from emodiff_jax.synth.expression import COEFFICIENTS, EMOTIONS, INDEX, emotion_direction
from emodiff_jax.synth.identity import identity_indices, make_identity
from emodiff_jax.synth.render import render_frames
from emodiff_jax.synth.trajectory import expression_trajectory
from emodiff_jax.synth.world import neutral_portrait

VideoFn = Callable[[np.ndarray, np.ndarray, str, float, int], np.ndarray]
ProbeFn = Callable[[np.ndarray], np.ndarray]
INTENSITIES = (0.0, 0.25, 0.5, 0.75, 1.0)
PARTITIONS = ("mead_like", "hdtf_like")
RESOLUTION = 64
SAMPLES_PER_FRAME = SAMPLE_RATE // int(FPS)
FACE_DIMS = [INDEX[n] for n in COEFFICIENTS if not n.startswith("head_")]  # the classifier's 15 features
CLASSIFIER = "nearest centroid of clip-mean probe face coefficients; centroids from real 'train'-identity clips"


@dataclasses.dataclass(frozen=True)
class Request:
  """One clip to generate: who (partition, identity), what (emotion, intensity), and the seed of its audio
  and motion."""

  partition: str
  identity: int
  emotion: str
  intensity: float
  seed: int


def _seed(*parts: object) -> int:
  return zlib.crc32("/".join(map(str, parts)).encode())


def identity_pool(split: str, partitions: Sequence[str] = PARTITIONS) -> list[tuple[str, int]]:
  """`(partition, index)` of every identity of `split` in `partitions`."""
  return [(p, i) for p in partitions for i in identity_indices(p, split)]


def make_requests(split: str, emotions: Sequence[str], intensities: Sequence[float], clips_per_cell: int,
                  seed: int, partitions: Sequence[str] = PARTITIONS, identity_offset: int = 0) -> list[Request]:
  """Clip k of emotion e uses the same identity and seed at every intensity (neutral: intensity 1 only);
  identities cycle through the pool from position `identity_offset` so emotions see different faces (another
  offset gives every emotion other faces: each emotion's scores also depend on its few identities)."""
  pool = identity_pool(split, partitions)
  out = []
  for ei, emotion in enumerate(emotions):
    for k in range(clips_per_cell):
      partition, identity = pool[(identity_offset + ei * clips_per_cell + k) % len(pool)]
      for a in (intensities if emotion != "neutral" else (1.0,)):
        out.append(Request(partition, identity, emotion, float(a), _seed(seed, emotion, k)))
  return out


def portrait(partition: str, identity: int, resolution: int = RESOLUTION) -> np.ndarray:
  """The reference image of an identity: its face at the zero expression (frontal, mouth closed), `[H, W, 3]`."""
  return neutral_portrait(partition, identity, resolution)


def world_audio(seed: int, num_frames: int) -> np.ndarray:
  """Speech-like audio `[num_frames * 640]` float32, deterministic in `seed`."""
  return speech_like_audio(np.random.default_rng([seed, 0]), num_frames)[0]


def world_expression(emotion: str, intensity: float, audio: np.ndarray, num_frames: int, seed: int) -> np.ndarray:
  """The world's trajectory `[T, 50]` for speech `audio`: the jaw follows its envelope, blinks and head
  motion come from `seed`, and the emotion is `e_0 + intensity (e_1 - e_0)` between the trajectories at
  intensity 0 and 1 (same onset)."""
  envelope = envelope_from_audio(audio, num_frames)
  zero = expression_trajectory(emotion, 0, envelope, np.random.default_rng([seed, 1]))
  full = expression_trajectory(emotion, 3, envelope, np.random.default_rng([seed, 1]))
  return (zero + intensity * (full - zero)).astype(np.float32)


def world_frames(partition: str, identity: int, expression: np.ndarray, resolution: int = RESOLUTION) -> np.ndarray:
  """`expression [T, 50]` rendered on an identity: uint8 `[T, H, W, 3]`."""
  return render_frames(make_identity(partition, identity), expression, resolution)


class _PoolVideo:
  """A `VideoFn` that knows which identity of the pool a reference shows (nearest portrait)."""

  def __init__(self, split: str, partitions: Sequence[str], resolution: int):
    self.pool = identity_pool(split, partitions)
    self.resolution = resolution
    self.portraits = np.stack([portrait(p, i, resolution) for p, i in self.pool]).astype(np.float32)

  def which(self, reference: np.ndarray) -> int:
    ref = cv2.resize(reference, (self.resolution, self.resolution), interpolation=cv2.INTER_AREA)
    return int(np.argmin(((self.portraits - ref.astype(np.float32)) ** 2).sum((1, 2, 3))))


class _Oracle(_PoolVideo):
  def __call__(self, reference, audio, emotion, intensity, seed):
    partition, identity = self.pool[self.which(reference)]
    t = len(audio) // SAMPLES_PER_FRAME
    return world_frames(partition, identity, world_expression(emotion, intensity, audio, t, seed), self.resolution)


class _RandomIdentity(_PoolVideo):
  def __call__(self, reference, audio, emotion, intensity, seed):
    j = self.which(reference)
    other = (j + 1 + _seed(seed) % (len(self.pool) - 1)) % len(self.pool)
    t = len(audio) // SAMPLES_PER_FRAME
    own_seed = _seed(seed, "random_identity")
    own_audio = world_audio(own_seed, t)
    return world_frames(*self.pool[other], world_expression(emotion, intensity, own_audio, t, own_seed),
                        self.resolution)


def oracle_video_fn(split: str = "test", partitions: Sequence[str] = PARTITIONS,
                    resolution: int = RESOLUTION) -> VideoFn:
  """The world's own clip for the request (identity found from the reference): the upper bound."""
  return _Oracle(split, partitions, resolution)


class _VaeRoundtrip(_Oracle):
  """The oracle's frames through a bundle's VAE (encoder mean, then decoder)."""

  def __init__(self, bundle: Any, split: str, partitions: Sequence[str]):
    from emodiff_jax.sampling.video import VideoSampler  # the inference stack is only needed here
    super().__init__(split, partitions, bundle.config.model.resolution)
    self.sampler = VideoSampler(bundle.models(), bundle.config.diffusion, bundle.config.sampling,
                                bundle.config.audio_margin)
    self.params = bundle.params
    self.encode = jax.jit(lambda params, images: self.sampler.objective.encode(params["vae"], images, None))

  def __call__(self, reference, audio, emotion, intensity, seed):
    frames = super().__call__(reference, audio, emotion, intensity, seed)
    latents = self.encode(self.params, jnp.asarray(frames, jnp.float32) / 127.5 - 1.0)
    return self.sampler.decode_frames(self.params, latents)


def vae_roundtrip_fn(bundle: Any, split: str = "test", partitions: Sequence[str] = PARTITIONS) -> VideoFn:
  """The world's own clip encoded and decoded by `bundle`'s VAE: the ceiling of any model using that VAE
  (what the autoencoder alone loses of expression, sync and identity)."""
  return _VaeRoundtrip(bundle, split, partitions)


def with_vae_run(bundle: Any, workdir: str) -> Any:
  """`bundle` with its VAE (`model.vae` config and params) replaced by the latest checkpoint of any
  `launch.train_vae` run (`sampling.bundle.with_vae`, latents not checked), e.g. to measure that VAE's
  `vae_roundtrip_fn`."""
  from emodiff_jax.sampling.bundle import with_vae
  config, params = with_vae(bundle.config, bundle.params, workdir, keep_latents=False)
  return dataclasses.replace(bundle, config=config, params=params)


def random_identity_fn(split: str = "test", partitions: Sequence[str] = PARTITIONS,
                       resolution: int = RESOLUTION) -> VideoFn:
  """Baseline: a real clip of another identity of the pool in the requested emotion and intensity, with its
  own audio (right emotion, wrong face, out of sync)."""
  return _RandomIdentity(split, partitions, resolution)


def reference_repeated_fn(reference: np.ndarray, audio: np.ndarray, emotion: str, intensity: float,
                          seed: int) -> np.ndarray:
  """Baseline: the reference image for every frame."""
  return np.repeat(reference[None], len(audio) // SAMPLES_PER_FRAME, axis=0)


class _BundleVideo:
  """Generates through `sampling.render` (expression generator, windowed sampler, mp4 output)."""

  def __init__(self, bundle: Any, sampling: Any, batch_size: int):
    from emodiff_jax.sampling.render import Renderer  # the inference stack is only needed here
    self.bundle, self.sampling, self.batch_size = bundle, sampling, batch_size
    self.renderer = Renderer(bundle, sampling)

  def __call__(self, reference, audio, emotion, intensity, seed):
    return self.generate_batch([(reference, audio, emotion, intensity, seed)])[0]

  def generate_batch(self, calls: Sequence[tuple]) -> list[np.ndarray]:
    from emodiff_jax.emotion.condition import generated_expressions
    from emodiff_jax.input.media import read_video
    from emodiff_jax.input.portrait import Portrait
    from emodiff_jax.sampling.render import Job, Prepared
    from emodiff_jax.sampling.video import WindowPlan

    res, out = self.bundle.config.model.resolution, []
    with tempfile.TemporaryDirectory(prefix="emodiff-eval-") as tmp:
      prepared = []
      for i, (reference, audio, emotion, intensity, seed) in enumerate(calls):
        image, wav = os.path.join(tmp, f"{i}.png"), os.path.join(tmp, f"{i}.wav")
        Image.fromarray(reference).save(image)
        soundfile.write(wav, audio, SAMPLE_RATE)
        t = len(audio) // SAMPLES_PER_FRAME
        crop = cv2.resize(reference, (res, res), interpolation=cv2.INTER_AREA)
        expression, neutral = generated_expressions(self.bundle.config.gan, self.bundle.g_params, emotion, intensity,
                                                    audio, t, seed, FPS)
        job = Job(image=image, audio=wav, out=os.path.join(tmp, f"{i}.mp4"), emotion=emotion,
                  intensity=intensity, seed=seed)
        prepared.append(Prepared(job, Portrait(crop, crop, (0, 0, res, res)), audio, expression, neutral,
                                 WindowPlan(t, self.sampling.window, self.sampling.overlap)))
      for i in range(0, len(prepared), self.batch_size):
        self.renderer.render_batch(prepared[i:i + self.batch_size])
      for p in prepared:
        out.append(read_video(p.job.out)[0])
    return out


def bundle_video_fn(bundle: Any, sampling: Any = None, batch_size: int = 8) -> VideoFn:
  """The real inference path for a loaded `sampling.bundle.Bundle` (`sampling` defaults to the bundle's);
  clips of one batch are sampled together. Frames come back through the mp4 (H.264) users get."""
  return _BundleVideo(bundle, sampling or bundle.config.sampling, batch_size)


def _resize(frames: np.ndarray, resolution: int) -> np.ndarray:
  if frames.shape[1:3] == (resolution, resolution):
    return frames
  return np.stack([cv2.resize(f, (resolution, resolution), interpolation=cv2.INTER_LINEAR) for f in frames])


def _generate(video_fn: VideoFn, calls: list[tuple], resolution: int) -> list[np.ndarray]:
  batch = getattr(video_fn, "generate_batch", None)
  clips = batch(calls) if batch else [video_fn(*c) for c in calls]
  for c, frames in zip(calls, clips):
    if frames.ndim != 4 or frames.dtype != np.uint8 or len(frames) != len(c[1]) // SAMPLES_PER_FRAME:
      raise ValueError(f"video_fn returned {frames.dtype} {frames.shape}; expected uint8 "
                       f"[{len(c[1]) // SAMPLES_PER_FRAME}, H, W, 3]")
  return [_resize(f, resolution) for f in clips]


def emotion_centroids(probe_fn: ProbeFn, num_frames: int, clips_per_emotion: int, seed: int,
                      resolution: int = RESOLUTION) -> np.ndarray:
  """The classifier: mean probe codes `[8, 50]` of real clips of 'train' identities at intensity 1.0."""
  pool = identity_pool("train")
  rng = np.random.default_rng([seed, 7])
  out = []
  for emotion in EMOTIONS:
    codes = []
    for k in range(clips_per_emotion):
      partition, identity = pool[rng.integers(len(pool))]
      s = _seed(seed, "centroid", emotion, k)
      audio = world_audio(s, num_frames)
      frames = world_frames(partition, identity, world_expression(emotion, 1.0, audio, num_frames, s), resolution)
      codes.append(np.asarray(probe_fn(frames)).mean(0))
    out.append(np.mean(codes, 0))
  return np.stack(out)


def classify(codes: np.ndarray, centroids: np.ndarray) -> np.ndarray:
  """Clip-mean codes `[N, 50]` -> emotion indices `[N]` (nearest centroid over the face coefficients)."""
  d = codes[:, None, FACE_DIMS] - centroids[None, :, FACE_DIMS]
  return np.argmin((d**2).sum(-1), axis=1)


def face_offsets(frames: np.ndarray, reference: np.ndarray) -> np.ndarray:
  """`synthetic_face_features` of frames `[T, H, W, 3]` minus the reference's `[H, W, 3]`, 2x2-pooled: `[T, 192]`."""
  d = synthetic_face_features(frames) - synthetic_face_features(reference[None])
  g = FEATURE_GRID // 2
  return d.reshape(len(d), g, 2, g, 2, 3).mean((2, 4)).reshape(len(d), -1)


def _clip_rows(requests: Sequence[Request], frames: Sequence[np.ndarray], probe_fn: ProbeFn,
               references: Sequence[np.ndarray], audios: Sequence[np.ndarray], num_frames: int,
               feature_fn: ProbeFn | None = None) -> list[dict]:
  """Per clip: probe codes `measured [T, 50]` (`codes`: the 18 named ones), the audio `envelope [T]`, the
  `requested [T, 50]` world trajectory, `face` offsets `[T, 192]`, the identity scores and, with
  `feature_fn`, the probe's `features [T, F]`."""
  rows = []
  for r, f, ref, audio in zip(requests, frames, references, audios):
    measured = np.asarray(probe_fn(f), np.float64)
    extra = {} if feature_fn is None else dict(features=np.asarray(feature_fn(f), np.float64))
    rows.append(dict(**extra, request=r, measured=measured, codes=measured[:, :len(COEFFICIENTS)],
                     envelope=envelope_from_audio(audio, num_frames),
                     requested=world_expression(r.emotion, r.intensity, audio, num_frames, r.seed),
                     face=face_offsets(f, ref),
                     identity=float(identity_similarity(ref[None], f[None], synthetic_face_features)[0]),
                     colour=float(attribute_colour_distance(ref[None], f[None])[0])))
  return rows


def _summary(rows: list[dict], real: list[dict], centroids: np.ndarray, emotions: Sequence[str]) -> dict:
  """Metrics of a group of clips (one emotion or all) against the real clips of the same requests."""
  full = [r for r in rows if r["request"].intensity == 1.0]
  pred = classify(np.stack([r["measured"].mean(0) for r in full]), centroids) if full else np.array([])
  truth = np.array([EMOTIONS.index(r["request"].emotion) for r in full])
  sync = envelope_jaw_sync(np.stack([r["envelope"] for r in rows]),
                           np.stack([r["measured"][:, INDEX["jaw_open"]] for r in rows]))
  err = expression_error(np.concatenate([r["requested"] for r in rows]), np.concatenate([r["measured"] for r in rows]))
  fd = {}
  for name, key in (("fd_probe", "codes"), ("fid_probe", "features"), ("fd_face", "face")):
    if key not in rows[0]:
      fd[name] = None
      continue
    stats = [FeatureStats().update(np.concatenate([r[key] for r in rs])) for rs in (rows, real)]
    fd[name] = stats_distance(*stats)
  defined, slopes = [], []
  for e in (e for e in emotions if e != "neutral"):
    mine = [r for r in rows if r["request"].emotion == e]
    if len(mine) < 2:
      continue
    asked, measured = np.array([r["request"].intensity for r in mine]), np.array([r["projection"] for r in mine])
    rho = spearman(asked, measured)
    if np.isfinite(rho):  # NaN: constant measurements (or intensities), no monotone relation to score
      defined.append(rho)
    if asked.max() > asked.min():
      slopes.append((measured[asked == asked.max()].mean() - measured[asked == asked.min()].mean())
                    / (asked.max() - asked.min()))
  return dict(
      accuracy=float(np.mean(pred == truth)) if full else None,
      spearman=float(np.mean(defined)) if defined else None,
      spearman_min=float(np.min(defined)) if defined else None,
      slope=float(np.mean(slopes)) if slopes else None,
      expression_l2=err["l2"], expression_mae=err["mae"],
      sync_correlation=sync.correlation, sync_offset=sync.offset,
      identity_similarity=float(np.mean([r["identity"] for r in rows])),
      colour_distance=float(np.mean([r["colour"] for r in rows])),
      **fd, num_clips=len(rows),
      confusion=confusion_matrix(pred, truth, len(EMOTIONS)).tolist() if full else None)


def spearman_ceiling(clips_per_cell: int, num_intensities: int) -> float:
  """The highest pooled Spearman possible when `clips_per_cell` clips share each requested intensity (tied
  ranks): sqrt(1 - (c^2 - 1) / (n^2 - 1)), n = c k; 0.985 for 2 clips x 5 intensities, 1 for one clip."""
  c, n = clips_per_cell, clips_per_cell * num_intensities
  return math.sqrt(1.0 - (c * c - 1) / (n * n - 1)) if n > 1 else float("nan")


def evaluate(video_fn: VideoFn | Mapping[str, VideoFn], probe_fn: ProbeFn, *, split: str = "test",
             emotions: Sequence[str] = EMOTIONS, intensities: Sequence[float] = INTENSITIES,
             clips_per_cell: int = 2, seconds: float = 2.0, seed: int = 0,
             partitions: Sequence[str] = PARTITIONS, resolution: int = RESOLUTION,
             classifier_clips: int = 4, identity_offset: int = 0, feature_fn: ProbeFn | None = None) -> dict:
  """Evaluates one `VideoFn` (named 'model') or several `{name: VideoFn}` on the same requests.

  `feature_fn` (frames uint8 `[T, H, W, 3]` -> `[T, F]`) gives 'fid_probe'; without it that metric is None.

  Returns a JSON-able dict: 'settings', and per method under 'methods': 'per_emotion' {emotion: metrics},
  'overall' metrics and 'intensity' {emotion: [[requested, mean measured projection], ...]}.
  """
  fns = dict(video_fn) if isinstance(video_fn, Mapping) else {"model": video_fn}
  num_frames = round(seconds * FPS)
  requests = make_requests(split, emotions, intensities, clips_per_cell, seed, partitions, identity_offset)
  references = [portrait(r.partition, r.identity, resolution) for r in requests]
  audios = [world_audio(r.seed, num_frames) for r in requests]
  centroids = emotion_centroids(probe_fn, num_frames, classifier_clips, seed, resolution)
  neutral = centroids[EMOTIONS.index("neutral")]
  real_seed = lambda r: _seed(r.seed, "real")
  real_audios = [world_audio(real_seed(r), num_frames) for r in requests]
  real_frames = [world_frames(r.partition, r.identity,
                              world_expression(r.emotion, r.intensity, a, num_frames, real_seed(r)), resolution)
                 for r, a in zip(requests, real_audios)]
  real = _clip_rows(requests, real_frames, probe_fn, references, real_audios, num_frames, feature_fn)
  calls = [(ref, a, r.emotion, r.intensity, r.seed) for r, ref, a in zip(requests, references, audios)]
  methods = {}
  for name, fn in fns.items():
    rows = _clip_rows(requests, _generate(fn, calls, resolution), probe_fn, references, audios, num_frames,
                      feature_fn)
    for r in rows:
      e = r["request"].emotion
      r["projection"] = (direction_projection(r["measured"], emotion_direction(e), neutral)
                         if e != "neutral" else 0.0)
    per_emotion = {e: _summary([r for r in rows if r["request"].emotion == e],
                               [r for r in real if r["request"].emotion == e], centroids, [e]) for e in emotions}
    curves = {e: [[a, float(np.mean([r["projection"] for r in rows
                                      if r["request"].emotion == e and r["request"].intensity == a]))]
                  for a in intensities] for e in emotions if e != "neutral"}
    methods[name] = dict(per_emotion=per_emotion, overall=_summary(rows, real, centroids, emotions), intensity=curves)
  settings = dict(split=split, emotions=list(emotions), intensities=list(intensities), clips_per_cell=clips_per_cell,
                  spearman_ceiling=spearman_ceiling(clips_per_cell, len(intensities)),
                  seconds=seconds, num_frames=num_frames, seed=seed, partitions=list(partitions),
                  identity_offset=identity_offset, resolution=resolution, classifier=CLASSIFIER,
                  classifier_clips_per_emotion=classifier_clips, num_requests=len(requests))
  return dict(settings=settings, methods=methods)


COLUMNS = (("accuracy", "acc@1.0", "{:.3f}"), ("spearman", "Spearman", "{:.3f}"), ("slope", "slope", "{:.2f}"),
           ("expression_l2", "expr L2", "{:.3f}"), ("sync_correlation", "sync corr", "{:.3f}"),
           ("sync_offset", "offset", "{:+d}"), ("fd_probe", "FD probe", "{:.3f}"),
           ("fid_probe", "FID probe", "{:.3f}"), ("fd_face", "FD face", "{:.3f}"),
           ("identity_similarity", "ID sim", "{:.3f}"), ("colour_distance", "colour dist", "{:.3f}"))


def confusion_text(confusion: list[list[int]] | None) -> str:
  """A confusion matrix `[8, 8]` (rows requested, columns predicted) as 'angry -> neutral 2, ...'."""
  if confusion is None:
    return ""
  return ", ".join(f"{EMOTIONS[i]} -> " + " + ".join(f"{EMOTIONS[j]} {n}" for j, n in enumerate(row) if n)
                   for i, row in enumerate(confusion) if any(row))


def markdown_table(results: dict) -> str:
  """The first method per emotion and overall, then every other method's overall row."""
  head = "| method | emotion | " + " | ".join(c[1] for c in COLUMNS) + " |"
  lines = [head, "|" + " --- |" * 2 + " ---: |" * len(COLUMNS)]
  cell = lambda m, c: "n/a" if m.get(c[0]) is None else c[2].format(m[c[0]])
  for i, (name, res) in enumerate(results["methods"].items()):
    groups = list(res["per_emotion"].items()) if i == 0 else []
    for emotion, m in groups + [("overall", res["overall"])]:
      lines.append(f"| {name} | {emotion} | " + " | ".join(cell(m, c) for c in COLUMNS) + " |")
  lines += ["", "Predicted emotion of the intensity-1.0 clips (nearest centroid; requested -> predicted, count):", ""]
  for name, res in results["methods"].items():
    lines.append(f"- {name}: " + (confusion_text(res["overall"]["confusion"]) or "no intensity-1.0 clips"))
  s = results["settings"]
  offset = f" from position {s['identity_offset']}" if s.get("identity_offset") else ""
  lines += ["", f"{s['num_requests']} clips per method ({s['clips_per_cell']} per emotion and intensity, "
            f"{s['seconds']:g} s, {s['split']} identities of {', '.join(s['partitions'])}{offset}); Spearman: pooled "
            f"over an emotion's clips (at most {s['spearman_ceiling']:.3f} with these ties), mean over the non-neutral "
            f"emotions; emotion classifier: {s['classifier']}."]
  return "\n".join(lines) + "\n"


PLOT_COLOURS = ((31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14), (140, 86, 75))
PANEL, PAD, LEGEND_H = 170, 28, 20


def intensity_figure(results: dict) -> np.ndarray:
  """uint8 image `[H, W, 3]`: per non-neutral emotion, measured vs requested intensity, one line per
  method; the dotted diagonal is the ideal."""
  methods = results["methods"]
  emotions = [e for e in results["settings"]["emotions"] if e != "neutral"]
  cols = min(4, max(1, len(emotions)))
  rows = math.ceil(len(emotions) / cols)
  image = Image.new("RGB", (cols * (PANEL + PAD) + PAD, LEGEND_H + rows * (PANEL + PAD) + PAD), "white")
  draw, font = ImageDraw.Draw(image), ImageFont.load_default()
  for k, name in enumerate(methods):
    draw.text((PAD + 130 * k, 4), name, fill=PLOT_COLOURS[k % len(PLOT_COLOURS)], font=font)
  values = [v for m in methods.values() for c in m["intensity"].values() for _, v in c if np.isfinite(v)]
  lo, hi = min(values + [0.0]) - 0.05, max(values + [1.0]) + 0.05
  for n, emotion in enumerate(emotions):
    left, top = PAD + (n % cols) * (PANEL + PAD), LEGEND_H + PAD + (n // cols) * (PANEL + PAD)
    x = lambda a: left + PANEL * a
    y = lambda v: top + PANEL * (hi - v) / (hi - lo)
    draw.rectangle((left, top, left + PANEL, top + PANEL), outline="gray")
    draw.text((left + 4, top - 14), f"{emotion} (x: requested, y: measured)", fill="black", font=font)
    for i in range(0, 20, 2):
      draw.line((x(i / 20), y(i / 20), x((i + 1) / 20), y((i + 1) / 20)), fill="gray")
    for k, m in enumerate(methods.values()):
      pts = [(x(a), y(v)) for a, v in m["intensity"].get(emotion, []) if np.isfinite(v)]
      colour = PLOT_COLOURS[k % len(PLOT_COLOURS)]
      if len(pts) > 1:
        draw.line(pts, fill=colour, width=2)
      for px, py in pts:
        draw.ellipse((px - 2, py - 2, px + 2, py + 2), fill=colour)
    draw.text((left + 2, top + PANEL + 2), f"y in [{lo:.2f}, {hi:.2f}]", fill="gray", font=font)
  return np.asarray(image)


def write_report(results: dict, out_dir: str) -> dict[str, str]:
  """Writes `metrics.json`, `metrics.md` and `intensity.png` into `out_dir`; returns their paths."""
  os.makedirs(out_dir, exist_ok=True)
  paths = {k: os.path.join(out_dir, k) for k in ("metrics.json", "metrics.md", "intensity.png")}
  with open(paths["metrics.json"], "w") as f:
    json.dump(results, f, indent=1, sort_keys=True)
  with open(paths["metrics.md"], "w") as f:
    f.write(markdown_table(results))
  write_png(paths["intensity.png"], intensity_figure(results))
  return paths
