"""The synthetic world: deterministic, emotions visible and graded, lip sync measurable, splits clean."""

import numpy as np
import pytest

from emodiff_jax.synth import world
from emodiff_jax.synth.audio import envelope_from_audio
from emodiff_jax.synth.expression import (
  COEFFICIENTS,
  EMOTIONS,
  INDEX,
  emotion_direction,
  expression_vector,
)
from emodiff_jax.synth.identity import identity_indices, make_identity
from emodiff_jax.synth.render import render_frames


def _spec(emotion="happy", level=3, identity=0, index=0):
  return world.ClipSpec("train", "mead_like", identity, emotion, level, index)


def test_same_seed_same_bytes_other_seed_differs():
  a = world.generate_clip(_spec(), num_frames=20)
  b = world.generate_clip(_spec(), num_frames=20)
  c = world.generate_clip(_spec(), num_frames=20, seed=1)
  assert a.frames.tobytes() == b.frames.tobytes() and a.audio.tobytes() == b.audio.tobytes()
  assert np.abs(a.audio - c.audio).max() > 0.1 and (a.frames != c.frames).any()


def test_very_short_clips_render():
  assert world.generate_clip(_spec(), num_frames=1).frames.shape[0] == 1
  assert world.generate_clip(_spec(), num_frames=4).expression.shape == (4, 50)


def test_clip_layout():
  clip = world.generate_clip(_spec(), num_frames=30, resolution=48, expression_dim=64)
  assert clip.frames.shape == (30, 48, 48, 3) and clip.frames.dtype == np.uint8
  assert clip.audio.shape == (30 * 640,) and np.abs(clip.audio).max() <= 1.0
  assert clip.expression.shape == (30, 64) and not clip.expression[:, len(COEFFICIENTS):].any()


def _peak(emotion, level, identity=0):
  """A frame at full onset with no speech, blink or head motion: the emotion alone."""
  e = emotion_direction(emotion) * {1: 0.4, 2: 0.7, 3: 1.0}[level]
  return render_frames(make_identity("mead_like", identity), e[None], 64)[0].astype(np.float32)


def test_emotions_are_visible_and_distinct():
  neutral = _peak("neutral", 1)
  peaks = {e: _peak(e, 3) for e in EMOTIONS[1:]}
  for e, img in peaks.items():
    assert np.abs(img - neutral).mean() > 0.5, e
  names = list(peaks)
  for i, a in enumerate(names):
    for b in names[i + 1:]:
      assert np.abs(peaks[a] - peaks[b]).mean() > 0.3, (a, b)


@pytest.mark.parametrize("identity", range(4))
def test_emotions_survive_the_latent_grid(identity):
  """Each emotion at full intensity still changes the face after 8x8 average pooling (the 64 -> 8 grid of
  the tiny model's VAE latents) by an RMS of at least 2 grey levels: the world draws emotions large enough
  for a latent diffusion model to see (in a first drawing, angry, contempt and sad moved it by 1.1-1.7)."""
  def pooled(emotion):
    img = render_frames(make_identity("mead_like", identity), emotion_direction(emotion)[None], 64)[0]
    return img.astype(np.float32).reshape(8, 8, 8, 8, 3).mean((1, 3))
  neutral = pooled("neutral")
  for emotion in EMOTIONS[1:]:
    assert np.sqrt(np.mean((pooled(emotion) - neutral) ** 2)) > 2.0, emotion


@pytest.mark.parametrize("emotion", EMOTIONS[1:])
def test_distance_from_neutral_grows_with_level(emotion):
  neutral = _peak("neutral", 1)
  d = [np.abs(_peak(emotion, lv) - neutral).mean() for lv in (1, 2, 3)]
  assert d[0] < d[1] < d[2]


def test_every_coefficient_changes_the_image():
  idn = make_identity("mead_like", 1)
  base = render_frames(idn, expression_vector({})[None], 64)[0].astype(np.float32)
  for name in COEFFICIENTS:
    img = render_frames(idn, expression_vector({name: 0.8})[None], 64)[0].astype(np.float32)
    assert np.abs(img - base).mean() > 0.1, name


def test_jaw_follows_audio_envelope_one_frame_late():
  clip = world.generate_clip(world.ClipSpec("train", "hdtf_like", 3, "neutral", 0), num_frames=100)
  env = envelope_from_audio(clip.audio, 100)
  jaw = clip.expression[:, INDEX["jaw_open"]]
  corr = {lag: np.corrcoef(env[: 100 - lag], jaw[lag:])[0, 1] for lag in range(4)}
  assert corr[1] > 0.8 and corr[1] == max(corr.values())


def test_rendering_is_antialiased_at_any_resolution():
  idn = make_identity("hdtf_like", 0)
  for res in (64, 256):
    img = render_frames(idn, expression_vector({})[None], res)[0]
    assert img.shape == (res, res, 3)
  # Along a row crossing the face edge, some pixels lie strictly between background and skin.
  row = render_frames(idn, expression_vector({})[None], 256)[0, 128].astype(np.float32)
  skin = np.asarray(idn.skin) * 255
  mix = np.abs(row - skin).sum(-1)
  assert ((mix > 8) & (mix < np.abs(row[0] - skin).sum() - 8)).any()


def test_unknown_emotion_and_partition_errors_name_them():
  with pytest.raises(ValueError, match="'joyful'.*neutral, angry"):
    emotion_direction("joyful")
  with pytest.raises(ValueError, match="unknown partition"):
    world.list_clips("train", "voxceleb")


def test_held_out_identities_do_not_overlap_train():
  for part in ("mead_like", "hdtf_like"):
    train, test = set(identity_indices(part, "train")), set(identity_indices(part, "test"))
    assert train and test and not train & test
  specs = world.list_clips("train", "mead_like")
  assert {(s.emotion, s.level) for s in specs} == {("neutral", 1)} | {(e, lv) for e in EMOTIONS[1:] for lv in (1, 2, 3)}


def test_neutral_portrait_is_the_zero_expression_render_cached_and_read_only():
  face = world.neutral_portrait("mead_like", 2, 32)
  np.testing.assert_array_equal(face, render_frames(make_identity("mead_like", 2), np.zeros((1, 50), np.float32), 32)[0])
  assert world.neutral_portrait("mead_like", 2, 32) is face and not face.flags.writeable
