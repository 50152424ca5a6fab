"""Evaluation metrics against references: SciPy float64 and closed forms for the Fréchet distance,
scikit-image for PSNR/SSIM, PyTorch's pairwise distance for Sync-C/D, planted answers for the rest."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import skimage.metrics
import torch
import torch.nn.functional as F

from emodiff_jax.eval import emotion_metrics as em
from emodiff_jax.eval.frechet import FeatureStats, frechet_distance, frechet_distance_of
from emodiff_jax.eval.identity import (attribute_colour_distance, cosine_similarity, identity_similarity,
                                       synthetic_face_features)
from emodiff_jax.eval.image_metrics import landmark_distance, psnr, ssim
from emodiff_jax.eval.lipsync import envelope_jaw_sync
from emodiff_jax.eval.mfcc import syncnet_mfcc
from emodiff_jax.eval.syncnet import sync_scores, sync_windows
from emodiff_jax.synth.audio import envelope_from_audio
from emodiff_jax.synth.expression import INDEX
from emodiff_jax.synth.trajectory import JAW_LAG
from emodiff_jax.synth.world import ClipSpec, generate_clip


def _random_gaussian_features(rng, n, d, shift=0.0):
  mix = rng.normal(size=(d, d)) / np.sqrt(d)
  return rng.normal(size=(n, d)) @ mix + rng.normal(size=d) + shift


def _scipy_frechet(mu1, s1, mu2, s2):
  """The textbook formula with SciPy's general matrix square root, float64."""
  covmean = scipy.linalg.sqrtm(s1 @ s2)
  return float((mu1 - mu2) @ (mu1 - mu2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean.real))


# --- Fréchet distance ------------------------------------------------------------------------------------

def test_frechet_distance_matches_scipy_sqrtm_on_random_gaussians():
  rng = np.random.default_rng(0)
  for d in (4, 32):
    a, b = _random_gaussian_features(rng, 500, d), _random_gaussian_features(rng, 400, d)
    mu1, s1, mu2, s2 = a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False)
    ref = _scipy_frechet(mu1, s1, mu2, s2)
    assert ref > 1.0
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(ref, rel=1e-9)


def test_frechet_distance_of_diagonal_covariances_has_closed_form():
  rng = np.random.default_rng(1)
  mu1, mu2 = rng.normal(size=8), rng.normal(size=8)
  v1, v2 = rng.uniform(0.1, 3.0, 8), rng.uniform(0.1, 3.0, 8)
  closed = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(v1) - np.sqrt(v2)) ** 2)
  assert frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(closed, rel=1e-12)


def test_frechet_distance_is_zero_and_real_for_singular_covariances():
  rng = np.random.default_rng(2)
  x = rng.normal(size=(10, 64))  # 10 samples in 64 dimensions: rank-9 covariance
  mu, s = x.mean(0), np.cov(x, rowvar=False)
  # Round-off eigenvalues ~1e-16 of the null space enter as their square roots (~1e-8 each): SciPy's
  # sqrtm is off by as much (-4e-6 here).
  assert abs(frechet_distance(mu, s, mu, s)) < 1e-6 * np.trace(s)
  y = rng.normal(size=(10, 64))
  assert np.isfinite(frechet_distance(mu, s, y.mean(0), np.cov(y, rowvar=False)))


def test_feature_stats_streaming_equals_numpy_even_far_from_the_origin():
  rng = np.random.default_rng(3)
  x = _random_gaussian_features(rng, 300, 16, shift=1e5)
  stats = FeatureStats()
  for chunk in np.array_split(x, 7):
    stats.update(chunk)
  assert stats.count == 300
  np.testing.assert_allclose(stats.mean, x.mean(0), rtol=1e-12)
  np.testing.assert_allclose(stats.cov, np.cov(x, rowvar=False), rtol=1e-9, atol=1e-9)


def test_frechet_distance_of_streams_with_pluggable_features_sees_a_mean_shift():
  rng = np.random.default_rng(4)
  frames = rng.normal(size=(64, 4, 4, 3)).astype(np.float32)
  feature_fn = lambda batch: np.asarray(batch, np.float64).reshape(len(batch), -1)  # noqa: E731
  real = np.array_split(frames, 4)
  assert frechet_distance_of(real, real, feature_fn) == pytest.approx(0.0, abs=1e-9)
  shifted = [batch + 0.5 for batch in real]  # same covariance, every one of 48 features moved by 0.5
  assert frechet_distance_of(real, shifted, feature_fn) == pytest.approx(48 * 0.25, rel=1e-6)


# --- PSNR, SSIM, landmarks -------------------------------------------------------------------------------

def _frame_pairs():
  rng = np.random.default_rng(5)
  clean = generate_clip(ClipSpec("test", "mead_like", 9, "happy", 3), num_frames=3, resolution=48).frames
  clean = clean.astype(np.float32) / 255.0
  noisy = np.clip(clean + rng.normal(0, 0.05, clean.shape), 0, 1).astype(np.float32)
  random = rng.uniform(0, 1, clean.shape).astype(np.float32)
  return clean, noisy, random


def test_psnr_and_ssim_match_scikit_image():
  clean, noisy, random = _frame_pairs()
  for other in (noisy, random):
    ours_psnr, ours_ssim = np.asarray(psnr(clean, other)), np.asarray(ssim(clean, other))
    for i in range(len(clean)):
      ref_psnr = skimage.metrics.peak_signal_noise_ratio(clean[i].astype(np.float64), other[i].astype(np.float64),
                                                         data_range=1.0)
      ref_ssim = skimage.metrics.structural_similarity(
          clean[i].astype(np.float64), other[i].astype(np.float64), gaussian_weights=True, sigma=1.5,
          use_sample_covariance=False, data_range=1.0, channel_axis=-1)
      assert ours_psnr[i] == pytest.approx(ref_psnr, abs=1e-3)
      assert ours_ssim[i] == pytest.approx(ref_ssim, abs=2e-5)


def test_ssim_takes_clip_batches_and_is_one_for_identical_frames():
  clean, noisy, _ = _frame_pairs()
  clips_a, clips_b = np.stack([clean, clean]), np.stack([clean, noisy])
  out = np.asarray(ssim(clips_a, clips_b))
  assert out.shape == (2, 3)
  np.testing.assert_allclose(out[0], 1.0, atol=1e-6)
  np.testing.assert_allclose(out[1], np.asarray(ssim(clean, noisy)), atol=1e-6)


def test_landmark_distance_of_a_known_displacement():
  rng = np.random.default_rng(6)
  target = rng.uniform(0, 64, (5, 20, 2))
  pred = target + np.array([3.0, 4.0])
  np.testing.assert_allclose(landmark_distance(pred, target), 5.0)
  np.testing.assert_allclose(landmark_distance(pred, target, normalizer=np.full(5, 10.0)), 0.5)


# --- lip sync ----------------------------------------------------------------------------------------------

def test_sync_scores_find_a_planted_offset_and_match_torch_pairwise_distance():
  rng = np.random.default_rng(7)
  n, d, vshift, shift = 40, 16, 15, 3
  audio = rng.normal(size=(n + shift, d))
  video = audio[shift:] + 0.01 * rng.normal(size=(n, d))  # video window i shows the audio of window i + 3
  audio = audio[:n]
  scores = sync_scores(video, audio, vshift)
  v, a = torch.from_numpy(video), torch.from_numpy(np.pad(audio, ((vshift, vshift), (0, 0))))
  ref = torch.stack([F.pairwise_distance(v[[i]].repeat(2 * vshift + 1, 1), a[i:i + 2 * vshift + 1])
                     for i in range(n)], 1).mean(1).numpy()
  np.testing.assert_allclose(scores.mean_distances, ref, rtol=1e-12)
  assert scores.offset == -shift
  assert scores.distance == pytest.approx(ref.min())
  assert scores.confidence == pytest.approx(np.median(ref) - ref.min())
  assert scores.confidence > 1.0


def test_sync_windows_cut_five_frames_and_twenty_mfcc_steps():
  frames = np.arange(30)[:, None, None, None] * np.ones((1, 2, 2, 3))
  mfcc = np.arange(13 * 121).reshape(13, 121).astype(np.float32)
  video, audio = sync_windows(frames, mfcc, num_audio_frames=30)
  assert video.shape == (25, 5, 2, 2, 3) and audio.shape == (25, 13, 20, 1)
  np.testing.assert_array_equal(video[7, :, 0, 0, 0], np.arange(7, 12))
  np.testing.assert_array_equal(audio[7, :, :, 0], mfcc[:, 28:48])


def test_syncnet_mfcc_matches_python_speech_features():
  psf = pytest.importorskip("python_speech_features")
  rng = np.random.default_rng(10)
  for n in (300, 16000, 32123):
    wave = rng.normal(0, 3000, n).astype(np.int16).astype(np.float64)
    ref = np.stack(list(zip(*psf.mfcc(wave, 16000))))  # syncnet_python's call and layout
    ours = syncnet_mfcc(wave)
    assert ours.shape == ref.shape
    assert np.abs(ours - ref).max() <= 1e-6 * np.abs(ref).max()


def test_syncnet_mfcc_steps_and_gain_only_moves_the_energy_coefficient():
  wave = np.random.default_rng(11).normal(0, 3000, 16000)
  mfcc = syncnet_mfcc(wave)
  assert mfcc.shape == (13, 1 + int(np.ceil((16000 - 400) / 160)))
  louder = syncnet_mfcc(4.0 * wave)  # log-power features: a gain g adds 2 log g to c0 (log energy) only
  np.testing.assert_allclose(louder[0] - mfcc[0], 2 * np.log(4.0), atol=1e-4)
  np.testing.assert_allclose(louder[1:], mfcc[1:], atol=1e-4)


@pytest.mark.parametrize("planted", [3, -2, 0])
def test_envelope_jaw_sync_finds_a_planted_offset(planted):
  rng = np.random.default_rng(8)
  t = 120
  envelope = np.convolve(rng.uniform(size=t + 20), np.ones(4) / 4, "same")
  jaw = 0.3 + 0.9 * np.roll(envelope, planted)[10:10 + t] + 0.02 * rng.normal(size=t)
  result = envelope_jaw_sync(envelope[10:10 + t], jaw)
  assert result.offset == planted
  assert result.correlation > 0.95
  assert result.correlations.shape == (11,)


def test_envelope_jaw_sync_recovers_the_synthetic_worlds_jaw_lag():
  clips = [generate_clip(ClipSpec("test", "hdtf_like", i, "neutral", 0), num_frames=50, resolution=16)
           for i in (160, 170)]
  envelopes = np.stack([envelope_from_audio(c.audio, 50) for c in clips])
  jaws = np.stack([c.expression[:, INDEX["jaw_open"]] for c in clips])
  result = envelope_jaw_sync(envelopes, jaws)
  assert result.offset == JAW_LAG
  assert result.correlation > 0.8


# --- emotion ----------------------------------------------------------------------------------------------

def test_emotion_accuracy_and_confusion_from_labels_or_scores():
  labels = np.array([0, 1, 2, 2, 1])
  predicted = np.array([0, 2, 2, 2, 1])
  assert em.emotion_accuracy(predicted, labels) == pytest.approx(0.8)
  assert em.emotion_accuracy(np.eye(3)[predicted] * 5.0, labels) == pytest.approx(0.8)
  np.testing.assert_array_equal(em.confusion_matrix(predicted, labels, 3), [[1, 0, 0], [0, 1, 1], [0, 0, 2]])


def test_spearman_on_known_rankings_with_ties():
  x = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
  assert em.spearman(x, x**3) == pytest.approx(1.0)
  assert em.spearman(x, -x) == pytest.approx(-1.0)
  # ranks of y: 1, 2, 3.5, 5, 3.5 -> Pearson of ranks = 8 / sqrt(10 * 9.5)
  assert em.spearman(x, np.array([5.0, 6.0, 7.0, 8.0, 7.0])) == pytest.approx(8 / np.sqrt(95))
  assert np.isnan(em.spearman(x, np.ones(5)))


def test_intensity_faithfulness_per_emotion_from_projections():
  rng = np.random.default_rng(9)
  direction = np.zeros(50)
  direction[[3, 7]] = (1.0, 0.5)
  neutral = rng.normal(size=(12, 50))
  assert em.direction_projection(neutral + 0.6 * direction, direction, neutral) == pytest.approx(0.6)
  alphas = np.linspace(0.1, 1.0, 6)
  faithful = [em.direction_projection(neutral + a * direction, direction, neutral) for a in alphas]
  inverted = [em.direction_projection(neutral + (1.1 - a) * direction, direction, neutral) for a in alphas]
  out = em.intensity_faithfulness(np.concatenate([alphas, alphas]), np.array(faithful + inverted),
                                  ["happy"] * 6 + ["sad"] * 6)
  assert out["happy"] == pytest.approx(1.0) and out["sad"] == pytest.approx(-1.0)
  assert out["mean"] == pytest.approx(0.0)
  with pytest.raises(ValueError, match="zero"):
    em.direction_projection(neutral, np.zeros(50))


def test_expression_error_over_probe_coefficients():
  requested = np.zeros((4, 50))
  measured = requested.copy()
  measured[:, 0], measured[:, 1] = 3.0, 4.0
  measured[:, 30] = 100.0  # outside the probe's 18 coefficients: ignored
  out = em.expression_error(requested, measured)
  assert out["l2"] == pytest.approx(5.0)
  assert out["mae"] == pytest.approx(7.0 / 18)


# --- identity ---------------------------------------------------------------------------------------------

def test_cosine_similarity_known_values():
  a = np.array([[1.0, 0.0], [1.0, 1.0]])
  np.testing.assert_allclose(cosine_similarity(a, np.array([[0.0, 2.0], [2.0, 2.0]])), [0.0, 1.0])


def test_synthetic_identity_metrics_separate_identities_not_expressions():
  def clip(identity, emotion, level):
    return generate_clip(ClipSpec("train", "mead_like", identity, emotion, level), num_frames=6, resolution=64).frames

  refs = np.stack([clip(i, "neutral", 1)[0] for i in range(4)])
  same = np.stack([clip(i, "surprised", 3) for i in range(4)])  # same faces, strong expression
  other = np.roll(same, 1, axis=0)  # each reference paired with another identity
  sim_same = identity_similarity(refs, same, synthetic_face_features)
  sim_other = identity_similarity(refs, other, synthetic_face_features)
  assert sim_same.shape == (4,) and (sim_same > sim_other).all() and sim_same.min() > 0.8
  dist_same, dist_other = attribute_colour_distance(refs, same), attribute_colour_distance(refs, other)
  assert dist_same.max() < 0.03 and dist_other.min() > 0.1
