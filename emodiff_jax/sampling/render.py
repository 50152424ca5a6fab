"""Rendering jobs (portrait + speech + emotion + intensity -> mp4) with a loaded bundle: the logic behind
`launch/infer.py`.

- `Job`: one output, as the CLI flags or one line of a `--jobs` JSONL file describe it.
- `prepare`: reads and checks the inputs (face crop, 16 kHz speech, expression vectors from the generator);
  every user mistake raises `InputError` (or `media.MediaError`) with a one-line message.
- `Renderer.render_batch`: jobs with the same number of windows sampled together, window by window, the
  batch sharded over the devices on the mesh's `data` axis. Each finished window is written as a segment
  (`video_out.SegmentWriter`) with its last latents, so an interrupted render resumes from its last finished
  window; the final mp4 gets the input audio muxed in and a provenance sidecar (`provenance.py`).
- `run_jobs`: skips jobs whose output is finished by the same render (`render_key`: checkpoint, job,
  sampling settings and input files, as the sidecar records them; an output or partial segments from another
  checkpoint or settings are rendered again), buckets the rest by window count (one compiled program per
  batch shape), reports a bad job and goes on with the others.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import os
from collections import defaultdict
from typing import Any, Callable, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from tqdm import tqdm

from emodiff_jax.atomic_io import write_bytes
from emodiff_jax.emotion.condition import generated_expressions, parse_mix
from emodiff_jax.input.media import MediaError
from emodiff_jax.input.portrait import Portrait, load_portrait, load_speech
from emodiff_jax.sampling.bundle import Bundle
from emodiff_jax.sampling.provenance import file_sha256, folder_sha256, read_sidecar, sidecar_path, write_sidecar
from emodiff_jax.sampling.video import FPS, SAMPLES_PER_FRAME, VideoSampler, WindowPlan, window_audio, window_expression
from emodiff_jax.sampling.video_out import SegmentWriter, paste_back

SAMPLE_RATE = 16000


class InputError(Exception):
  """A user mistake in a job; the message names the input and what to do."""


@dataclasses.dataclass(frozen=True)
class Job:
  """One output video. `intensity` is a number, or a keyframe curve such as `0s:0.0,2s:1.0`; `mix`
  (`happy:0.7,surprised:0.3`) replaces `emotion` when given."""

  image: str
  audio: str
  out: str
  emotion: str = "neutral"
  intensity: Union[float, str] = 1.0
  mix: str = ""
  seed: int = 0
  paste_back: bool = False
  expand_ratio: float = 1.5
  assume_cropped: bool = False
  allow_extrapolation: bool = False

  @classmethod
  def from_dict(cls, d: dict[str, Any], where: str) -> "Job":
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    missing = sorted(n for n in ("image", "audio", "out") if n not in d)
    if unknown or missing:
      raise InputError(f"{where}: " + "; ".join(
          ([f"unknown keys {unknown}"] if unknown else []) + ([f"missing keys {missing}"] if missing else [])) +
          f" (keys: {', '.join(sorted(names))})")
    return cls(**d)


@dataclasses.dataclass
class Prepared:
  """A job with its inputs read: the face crop, speech `[S]` at 16 kHz, expressions `[N, D]` and the same
  trajectories at intensity 0 `[N, D]` (for emotion guidance); `key` is its `render_key` (segments on disk
  from another key are discarded)."""

  job: Job
  portrait: Portrait
  audio: np.ndarray
  expression: np.ndarray
  neutral_expression: np.ndarray
  plan: WindowPlan
  key: dict = dataclasses.field(default_factory=dict)


def _intensity(job: Job) -> Union[float, str]:
  """The job's intensity as a float or a curve string; InputError when it is neither."""
  value = job.intensity
  if isinstance(value, (int, float)) and not isinstance(value, bool):
    return float(value)
  text = str(value).strip()
  if ":" in text:
    return text
  try:
    return float(text)
  except ValueError:
    raise InputError(f"intensity {value!r} is not a number; pass e.g. --intensity=0.7 or "
                     "--intensity-curve=0s:0.0,2s:1.0") from None


def prepare(job: Job, bundle: Bundle, window: int, overlap: int) -> Prepared:
  """Reads and checks one job's inputs; InputError / MediaError naming the input on user mistakes."""
  resolution = bundle.config.model.resolution
  portrait = load_portrait(job.image, resolution, expand_ratio=job.expand_ratio, assume_cropped=job.assume_cropped)
  audio = load_speech(job.audio, SAMPLE_RATE)
  num_frames = math.ceil(len(audio) / SAMPLES_PER_FRAME)
  try:
    emotion = parse_mix(job.mix) if job.mix else job.emotion
    expression, neutral = generated_expressions(bundle.config.gan, bundle.g_params, emotion, _intensity(job), audio,
                                                num_frames, job.seed, FPS, job.allow_extrapolation)
  except ValueError as e:
    raise InputError(f"{job.out}: {e}") from None
  return Prepared(job, portrait, audio, expression, neutral, WindowPlan(num_frames, window, overlap))


def render_key(job: Job, sampling: Any, checkpoint_sha256: str) -> dict:
  """What decides a render's frames, in the sidecar's terms: checkpoint hash, job, sampling settings and the
  input files' hashes. Raises `InputError` when an input file cannot be read."""
  try:
    inputs = {"image": file_sha256(job.image), "audio": file_sha256(job.audio)}
  except OSError as e:
    raise InputError(f"{e.filename}: cannot read this input ({e.strerror})") from e
  return json.loads(json.dumps(dict(checkpoint=checkpoint_sha256, job=dataclasses.asdict(job),
                                    sampling=sampling.to_dict(), inputs=inputs)))


def is_finished(out: str, key: dict) -> bool:
  """An output counts as finished when the mp4 and its sidecar both exist (both are written atomically) and
  the sidecar records the render `key` describes."""
  if not (os.path.isfile(out) and os.path.isfile(sidecar_path(out))):
    return False
  try:
    record = read_sidecar(sidecar_path(out))
    return key == dict(checkpoint=record["checkpoint"]["sha256"], job=record["config"]["job"],
                       sampling=record["config"]["sampling"],
                       inputs={name: v["sha256"] for name, v in record["inputs"].items()})
  except (ValueError, KeyError, TypeError):  # not a sidecar this code wrote: render again
    return False


class Renderer:
  """Samples batches of prepared jobs with one bundle; `batch_size` must be a multiple of the device count."""

  def __init__(self, bundle: Bundle, sampling: Any, devices: Optional[Sequence[jax.Device]] = None):
    self.bundle = bundle
    self.sampling = sampling
    self.sampler = VideoSampler(bundle.models(), bundle.config.diffusion, sampling, bundle.config.audio_margin)
    self.mesh = Mesh(np.asarray(devices or jax.devices()), ("data",))
    self.params = jax.device_put(bundle.params, NamedSharding(self.mesh, PartitionSpec()))

  @property
  def num_devices(self) -> int:
    return self.mesh.size

  def _shard(self, x: np.ndarray) -> jax.Array:
    return jax.device_put(jnp.asarray(x), NamedSharding(self.mesh, PartitionSpec("data")))

  def render_batch(self, batch: list[Prepared], progress: Optional[Callable[[int], None]] = None) -> None:
    """Renders jobs with equal window counts together, resuming from segments already on disk."""
    plan = batch[0].plan
    if any(p.plan.num_windows != plan.num_windows for p in batch):
      raise ValueError("render.py: a batch needs jobs with the same number of windows")
    b = -(-len(batch) // self.num_devices) * self.num_devices
    rows = batch + [batch[-1]] * (b - len(batch))  # padding rows repeat the last job and are not written
    t, o = plan.window, plan.overlap
    images = np.stack([p.portrait.crop for p in rows]).astype(np.float32) / 127.5 - 1.0
    reference = self.sampler.reference(self.params, self._shard(images))
    keys = self._shard(jax.vmap(jax.random.key)(jnp.asarray([p.job.seed for p in rows], jnp.uint32)))
    writers = [SegmentWriter(p.job.out, fps=FPS, owner=json.dumps(p.key, sort_keys=True)) for p in batch]
    first = next((w for w in range(plan.num_windows) if not all(wr.has_segment(w) for wr in writers)),
                 plan.num_windows)
    h = reference["latent"].shape[1:]
    motion = np.zeros((b, o) + tuple(h), np.float32)
    if first > 0 and o:
      motion[:len(batch)] = np.stack([np.load(_motion_path(wr, first - 1)) for wr in writers])
      motion[len(batch):] = motion[len(batch) - 1]
    if progress and first:
      progress(first * len(batch))
    for w in range(first, plan.num_windows):
      s = plan.start(w)
      audio = np.stack([window_audio(p.audio, s, t, self.sampler.audio_margin) for p in rows])
      expression = np.stack([window_expression(p.expression, s, t) for p in rows])
      neutral = (self._shard(np.stack([window_expression(p.neutral_expression, s, t) for p in rows]))
                 if self.sampler.guidance.needs_neutral else None)
      latents = self.sampler.window(self.params, reference, self._shard(audio), self._shard(expression),
                                    self._shard(motion), jnp.asarray(w > 0), keys, jnp.asarray(w, jnp.int32),
                                    neutral)
      lo = plan.emitted(w)[0]
      hi = max(p.plan.emitted(w)[1] for p in batch)  # jobs of a bucket may end at different frames
      frames = self.sampler.decode_frames(self.params, latents[:len(batch), lo - s:hi - s].reshape(
          (-1,) + latents.shape[2:])).reshape((len(batch), hi - lo) + (images.shape[1:]))
      motion = np.asarray(latents[:, t - o:])
      for i, (p, wr) in enumerate(zip(batch, writers)):
        mine = frames[i, :p.plan.emitted(w)[1] - lo]
        out = paste_back(p.portrait, mine) if p.job.paste_back else mine
        if o:
          _save_atomic(_motion_path(wr, w), motion[i])
        wr.write_segment(w, out)
      if progress:
        progress(len(batch))
    for p, wr in zip(batch, writers):  # sidecar first: an mp4 without one is not finished (`is_finished`)
      write_sidecar(p.job.out, config=dict(job=dataclasses.asdict(p.job), sampling=self.sampling.to_dict(),
                                           num_frames=plan.num_frames),
                    seed=p.job.seed, checkpoint_dir=self.bundle.path,
                    inputs={"image": p.job.image, "audio": p.job.audio},
                    known_sha256=_hashed(p, self.bundle.path))
      wr.finish(p.audio, SAMPLE_RATE)


def _hashed(p: Prepared, checkpoint_dir: str) -> Optional[dict[str, str]]:
  """The sha256s `run_jobs` took for `p`'s render key (bundle, image, audio), so the sidecar does not hash
  them again; None for a job prepared without a key."""
  if not p.key:
    return None
  return {checkpoint_dir: p.key["checkpoint"], p.job.image: p.key["inputs"]["image"],
          p.job.audio: p.key["inputs"]["audio"]}


def _motion_path(writer: SegmentWriter, w: int) -> str:
  return os.path.join(writer.parts_dir, f"motion_{w:05d}.npy")


def _save_atomic(path: str, array: np.ndarray) -> None:
  buf = io.BytesIO()
  np.save(buf, array)
  write_bytes(path, buf.getvalue())


@dataclasses.dataclass
class Report:
  """What `run_jobs` did: outputs written, skipped as finished, and failures `(job out, message)`."""

  written: list[str] = dataclasses.field(default_factory=list)
  skipped: list[str] = dataclasses.field(default_factory=list)
  failed: list[tuple[str, str]] = dataclasses.field(default_factory=list)


USER_ERRORS = (InputError, MediaError)


def run_jobs(jobs: Sequence[Job], bundle: Bundle, sampling: Any, batch_size: int = 1,
             devices: Optional[Sequence[jax.Device]] = None, show_progress: bool = True) -> Report:
  """Renders every job not already finished; a job with bad input is reported and the others go on.

  Jobs are bucketed by window count and sampled `batch_size` at a time (rounded up to the device count).
  """
  report = Report()
  renderer = Renderer(bundle, sampling, devices)
  batch_size = -(-max(batch_size, 1) // renderer.num_devices) * renderer.num_devices
  buckets: dict[int, list[Prepared]] = defaultdict(list)
  checkpoint = folder_sha256(bundle.path)
  for job in jobs:
    try:
      key = render_key(job, sampling, checkpoint)
      if is_finished(job.out, key):
        report.skipped.append(job.out)
        continue
      p = dataclasses.replace(prepare(job, bundle, sampling.window, sampling.overlap), key=key)
    except USER_ERRORS as e:
      report.failed.append((job.out, str(e)))
      continue
    buckets[p.plan.num_windows].append(p)
  total = sum(n * len(ps) for n, ps in buckets.items())
  with tqdm(total=total, unit="window", desc="render", disable=not show_progress or not total) as bar:
    for _, prepared in sorted(buckets.items()):
      for i in range(0, len(prepared), batch_size):
        batch = prepared[i:i + batch_size]
        try:
          renderer.render_batch(batch, bar.update)
        except USER_ERRORS as e:
          report.failed.extend((p.job.out, str(e)) for p in batch)
          continue
        report.written.extend(p.job.out for p in batch)
  return report
