"""The grain pipeline: examples cut correctly, sources mixed by weight, per-host slices, exact resume."""

import numpy as np
import pytest

import data  # registers the TFDS builders

from emodiff_jax.input import pipeline, records, world_source
from emodiff_jax.input.records import SAMPLES_PER_FRAME
from emodiff_jax.synth import world

T = 24


def _record(spec, marker_frame=None):
  clip = world.generate_clip(spec, num_frames=T, resolution=32)
  audio = clip.audio.copy()
  if marker_frame is not None:  # a recognisable click in the middle of one frame's audio
    audio[:] = 0.0
    audio[marker_frame * SAMPLES_PER_FRAME + 320] = 0.9
  rec = records.make_record(clip_id=clip.clip_id, identity=clip.identity_id, dataset="synthetic_talk",
                            source="mead_like", emotion=clip.emotion, level=clip.level, frames=clip.frames,
                            audio=audio, expression=clip.expression)
  rec["emotion"] = records.EMOTIONS.index(rec["emotion"])  # as read back from ArrayRecord
  return rec, clip


@pytest.fixture(scope="module")
def recs():
  specs = world.list_clips("train", "mead_like")
  return [_record(s) for s in specs[:4]]


def _cfg(**kw):
  cfg = pipeline.default_config()
  cfg.resolution, cfg.batch_size = 32, 4
  cfg.augment.scale_jitter = cfg.augment.crop_jitter = cfg.augment.color_jitter = 0.0
  cfg.update(kw)
  return cfg


def _decoded(clip, idx):
  return clip.frames[idx].astype(np.float32) / 127.5 - 1.0


def test_clip_examples_are_consecutive_strided_frames_with_aligned_expression(recs):
  cfg = _cfg(frame_stride=2, num_frames=5)
  batch = next(iter(pipeline.make_dataset(cfg, split="train", sources=[[r for r, _ in recs]],
                                          process_index=0, process_count=1)))
  by_id = {c.clip_id: c for _, c in recs}
  for b in range(cfg.batch_size):
    idx = batch["frame_indices"][b]
    np.testing.assert_array_equal(np.diff(idx), 2)
    clip = next(c for c in by_id.values() if np.array_equal(c.expression[idx], batch["expression"][b]))
    np.testing.assert_allclose(batch["frames"][b], _decoded(clip, idx), atol=1e-6)  # no jitter: exact
    ref = batch["reference_index"][b]
    assert not idx[0] <= ref <= idx[-1]
    np.testing.assert_allclose(batch["reference"][b], _decoded(clip, ref), atol=1e-6)
    assert batch["emotion"][b] == records.EMOTIONS.index(clip.emotion)


def test_audio_windows_are_centred_on_their_frame():
  rec, _ = _record(world.list_clips("train", "mead_like")[1], marker_frame=12)
  cfg = _cfg(num_frames=T, batch_size=1)  # the whole clip: frame k is frame_indices[k]
  batch = next(iter(pipeline.make_dataset(cfg, split="train", sources=[[rec]], process_index=0,
                                          process_count=1)))
  m = cfg.audio_margin
  win = batch["audio_windows"][0]
  assert win.shape == (T, (2 * m + 1) * SAMPLES_PER_FRAME)
  peak = (m * SAMPLES_PER_FRAME + 320)  # the click sits in the centre frame of window 12
  assert abs(win[12, peak] - 0.9) < 1e-3 and np.count_nonzero(np.abs(win[12]) > 0.5) == 1
  for k in (10, 11, 13, 14):  # neighbours see it off-centre, farther frames not at all
    assert np.abs(win[k]).max() > 0.5 and abs(win[k, peak]) < 1e-3
  assert np.abs(win[8]).max() < 1e-3 and np.abs(win[16]).max() < 1e-3
  contiguous = batch["audio"][0]
  assert np.argmax(np.abs(contiguous)) == (12 + m) * SAMPLES_PER_FRAME + 320


def test_image_examples_take_two_frames_of_one_clip(recs):
  cfg = _cfg(stage="image")
  batch = next(iter(pipeline.make_dataset(cfg, split="train", sources=[[r for r, _ in recs]],
                                          process_index=0, process_count=1)))
  assert (batch["frame_index"] != batch["reference_index"]).all()
  assert batch["target"].shape == (4, 32, 32, 3) and np.abs(batch["target"] - batch["reference"]).max() > 0


def test_sources_mix_by_weight(recs):
  a = [r for r, _ in recs[:2]]
  b = [dict(r, level=np.int32(9)) for r, _ in recs[2:]]
  cfg = _cfg(sources=[dict(name="a", data_dir="", weight=3.0), dict(name="b", data_dir="", weight=1.0)],
             stage="image", batch_size=8)
  it = iter(pipeline.make_dataset(cfg, split="train", sources=[a, b], process_index=0, process_count=1))
  levels = np.concatenate([next(it)["level"] for _ in range(25)])
  assert abs(np.mean(levels == 9) - 0.25) < 0.05


@pytest.mark.parametrize("workers", [0, 2])  # 2: worker processes, ~10 s of spawns
def test_resume_from_saved_state_gives_the_same_batches(recs, workers):
  cfg = _cfg(worker_count=workers)
  make = lambda: iter(pipeline.make_dataset(cfg, split="train", sources=[[r for r, _ in recs]],
                                            process_index=0, process_count=1))
  straight = make()
  want = [next(straight) for _ in range(6)]
  first = make()
  for _ in range(3):
    next(first)
  state = first.get_state()
  resumed = make()
  resumed.set_state(state)
  for expected in want[3:]:
    got = next(resumed)
    for k in expected:
      np.testing.assert_array_equal(got[k], expected[k])
  if workers:
    return
  other_seed = next(iter(pipeline.make_dataset(_cfg(seed=7), split="train", sources=[[r for r, _ in recs]],
                                               process_index=0, process_count=1)))
  assert not np.array_equal(other_seed["frame_indices"], want[0]["frame_indices"])


def test_hosts_get_disjoint_slices_that_make_the_global_batch(recs):
  src = [[r for r, _ in recs]]
  cfg = _cfg(stage="image", batch_size=4)
  whole = next(iter(pipeline.make_dataset(cfg, split="train", sources=src, process_index=0, process_count=1)))
  parts = [next(iter(pipeline.make_dataset(cfg, split="train", sources=src, process_index=i, process_count=2)))
           for i in range(2)]
  assert all(p["target"].shape[0] == 2 for p in parts)
  merged = np.concatenate([parts[0]["frame_index"], parts[1]["frame_index"]])
  np.testing.assert_array_equal(np.sort(merged), np.sort(whole["frame_index"]))
  with pytest.raises(ValueError, match="not divisible by 3 processes"):
    pipeline.make_dataset(cfg, split="train", sources=src, process_index=0, process_count=3)


def test_flip_is_off_by_default_and_mirrors_when_on(recs):
  src = [[recs[0][0]]]
  plain = next(iter(pipeline.make_dataset(_cfg(stage="image"), split="train", sources=src, process_index=0,
                                          process_count=1)))
  clip = recs[0][1]
  for b in range(4):
    np.testing.assert_allclose(plain["target"][b], _decoded(clip, plain["frame_index"][b]), atol=1e-6)
  cfg = _cfg(stage="image", batch_size=16)
  cfg.augment.hflip = True
  flipped = next(iter(pipeline.make_dataset(cfg, split="train", sources=src, process_index=0, process_count=1)))
  mirrored = [np.allclose(flipped["target"][b], _decoded(clip, flipped["frame_index"][b])[:, ::-1], atol=1e-6)
              for b in range(16)]
  assert 0 < sum(mirrored) < 16


def test_bad_config_errors(recs):
  with pytest.raises(ValueError, match="data.stage"):
    pipeline.make_dataset(_cfg(stage="video"), split="train", sources=[[recs[0][0]]], process_index=0,
                          process_count=1)
  cfg = _cfg(expression_dim=16)
  with pytest.raises(ValueError, match="D=50, data.expression_dim is 16"):
    next(iter(pipeline.make_dataset(cfg, split="train", sources=[[recs[0][0]]], process_index=0,
                                    process_count=1)))
  cfg = _cfg(num_frames=30)
  with pytest.raises(ValueError, match="fewer than the 30"):
    next(iter(pipeline.make_dataset(cfg, split="train", sources=[[recs[0][0]]], process_index=0,
                                    process_count=1)))


@pytest.mark.parametrize("stage", ["clip", "image"])
def test_neutral_reference_is_the_speakers_neutral_face_and_leaves_the_rest(stage):
  source = world_source.WorldSource("train", "mead_like", num_frames=T, resolution=32)
  emotional = [i for i, s in enumerate(source.specs) if s.emotion == "happy" and s.level == 3][:2]
  src = [[source[i] for i in emotional]]
  run = lambda ref: next(iter(pipeline.make_dataset(_cfg(stage=stage, reference=ref), split="train", sources=src,
                                                    process_index=0, process_count=1)))
  clip_ref, neutral_ref = run("clip"), run("neutral")
  target = "frames" if stage == "clip" else "target"
  np.testing.assert_array_equal(neutral_ref[target], clip_ref[target])  # same frames, only the reference moves
  portraits = {source.specs[i].identity: world.neutral_portrait("mead_like", source.specs[i].identity, 32)
               for i in emotional}
  for b in range(4):
    match = [ident for ident, p in portraits.items()
             if np.allclose(neutral_ref["reference"][b], p.astype(np.float32) / 127.5 - 1.0, atol=1e-6)]
    assert len(match) == 1, "the reference is its identity's zero-expression portrait"
    # A frame of a strongly happy clip is not that face: the 'clip' reference shows the emotion.
    assert np.abs(clip_ref["reference"][b] - neutral_ref["reference"][b]).mean() > 0.01


def test_neutral_reference_errors_name_the_clip_and_the_field(recs):
  with pytest.raises(ValueError, match=rf"{recs[0][1].clip_id}.*no neutral_reference"):
    next(iter(pipeline.make_dataset(_cfg(reference="neutral"), split="train", sources=[[recs[0][0]]],
                                    process_index=0, process_count=1)))
  with pytest.raises(ValueError, match="data.reference must be one of"):
    next(iter(pipeline.make_dataset(_cfg(reference="portrait"), split="train", sources=[[recs[0][0]]],
                                    process_index=0, process_count=1)))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
  """A small synthetic_talk build in ArrayRecord (32 px, 12 frames, one clip per condition)."""
  data_dir = str(tmp_path_factory.mktemp("tfds"))
  config = data.synthetic_talk.SyntheticConfig(name="pipeline_test", resolution=32, num_frames=12,
                                               clips_per_condition=1)
  data.synthetic_talk.Builder(config=config, data_dir=data_dir).download_and_prepare(file_format="array_record")
  return data_dir


def test_reads_real_arrayrecord_builds_and_mixes_their_splits(built):
  sources = [dict(name="synthetic_talk/pipeline_test", data_dir=built, split="train", weight=1.0),
             dict(name="synthetic_talk/pipeline_test", data_dir=built, split="test", weight=1.0)]
  cfg = _cfg(sources=sources, num_frames=4, batch_size=4)
  batch = next(iter(pipeline.make_dataset(cfg, split="unused", process_index=0, process_count=1)))
  readers = [records.RecordReader("synthetic_talk/pipeline_test", split, built) for split in ("train", "test")]
  seen = set()
  for b in range(cfg.batch_size):
    idx = batch["frame_indices"][b]
    matches = [(r.split, i) for r in readers for i in range(len(r))
               if np.array_equal(r[i]["expression"][idx], batch["expression"][b])]
    assert len(matches) == 1, "each example comes from exactly one stored clip"
    split, i = matches[0]
    seen.add(split)
    rec = readers[split == "test"][i]
    want = records.decode_frames(rec)[idx].astype(np.float32) / 127.5 - 1.0
    np.testing.assert_allclose(batch["frames"][b], want, atol=1e-6)
    np.testing.assert_allclose(batch["audio"][b][cfg.audio_margin * SAMPLES_PER_FRAME:][:SAMPLES_PER_FRAME],
                               records.audio_float(rec)[idx[0] * SAMPLES_PER_FRAME:][:SAMPLES_PER_FRAME])
    assert batch["emotion"][b] == rec["emotion"] and batch["level"][b] == rec["level"]
    spec = next(s for p in world.PARTITION_SIZES for s in world.list_clips(split, p)
                if s.clip_id == rec["clip_id"].decode())
    np.testing.assert_array_equal(records.decode_neutral_reference(rec),
                                  world.neutral_portrait(spec.partition, spec.identity, 32))
  assert seen == {"train", "test"}
