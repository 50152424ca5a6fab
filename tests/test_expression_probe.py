"""The synthetic expression probe: extractor interface, save/load, and accuracy on held-out identities."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from emodiff_jax.emotion import probe
from emodiff_jax.input import records
from emodiff_jax.synth.expression import EXPRESSION_DIM


def _untrained_state() -> probe.ProbeState:
  params = probe.ExpressionProbe().init(jax.random.PRNGKey(0), jnp.zeros((1, 64, 64, 3)))["params"]
  return probe.ProbeState(jax.device_get(params), np.arange(probe.NUM_COEFFS, dtype=np.float32),
                          np.ones(probe.NUM_COEFFS, np.float32))


def test_extractor_maps_uint8_frames_to_50d_codes_and_registers():
  extract = probe.probe_extractor(_untrained_state(), batch_size=8)
  frames = np.random.default_rng(0).integers(0, 256, (6, 64, 64, 3), dtype=np.uint8)
  codes = extract(frames)
  assert codes.shape == (6, EXPRESSION_DIM) and codes.dtype == np.float32
  assert np.all(codes[:, probe.NUM_COEFFS:] == 0)
  assert extract(np.zeros((2, 96, 96, 3), np.uint8)).shape == (2, EXPRESSION_DIM)  # resized to 64
  with pytest.raises(ValueError, match="uint8 frames"):
    extract(frames.astype(np.float32))
  records.set_expression_extractor(extract)
  try:
    assert records.get_expression_extractor() is extract
  finally:
    records.set_expression_extractor(None)


def test_features_are_the_hidden_layer_the_coefficients_are_read_from():
  state = _untrained_state()
  frames = np.random.default_rng(2).integers(0, 256, (5, 64, 64, 3), dtype=np.uint8)
  features = probe.probe_features(state, batch_size=4)(frames)
  assert features.shape == (5, probe.ExpressionProbe().hidden) and features.min() >= 0.0 and features.std() > 0
  head = state.params["dense1"]
  coefficients = (features @ np.asarray(head["kernel"]) + np.asarray(head["bias"])) * state.std + state.mean
  np.testing.assert_allclose(coefficients, probe.make_predictor(state, 4)(frames), rtol=1e-4, atol=1e-4)
  assert probe.probe_features(state, 4)(np.zeros((2, 96, 96, 3), np.uint8)).shape == (2, 256)  # resized to 64


def test_save_load_roundtrip_and_atomic_write(tmp_path):
  state = _untrained_state()
  path = str(tmp_path / "probe.msgpack")
  probe.save_probe(state, path)
  assert os.listdir(tmp_path) == ["probe.msgpack"]  # no temp file left behind
  loaded = probe.load_probe(path)
  frames = np.random.default_rng(1).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
  np.testing.assert_array_equal(probe.make_predictor(loaded, 4)(frames), probe.make_predictor(state, 4)(frames))
  np.testing.assert_array_equal(loaded.mean, state.mean)
  (tmp_path / "bad.msgpack").write_bytes(b"not msgpack at all")
  with pytest.raises(ValueError, match="bad.msgpack"):
    probe.load_probe(str(tmp_path / "bad.msgpack"))


def test_r2_is_one_for_exact_predictions_and_skips_constant_coefficients():
  target = np.random.default_rng(0).standard_normal((20, probe.NUM_COEFFS)).astype(np.float32)
  target[:, 3] = 0.5
  r2, mean = probe.r2_scores(target, target)
  assert np.isnan(r2[3]) and mean == pytest.approx(1.0)
  _, mean = probe.r2_scores(np.zeros_like(target) + target.mean(0), target)
  assert mean == pytest.approx(0.0, abs=1e-6)


@pytest.mark.slow
def test_probe_generalises_to_held_out_identities(tmp_path):
  """~9 min on an idle 2-core CPU (~20 min shared with other jobs); measured mean R^2 0.955."""
  frames, targets = probe.probe_dataset(probe.probe_specs("train"))
  state = probe.train_probe(frames, targets)
  test_frames, test_targets = probe.probe_dataset(probe.probe_specs("test", seed=1), seed=1)
  scores = probe.evaluate_probe(state, test_frames, test_targets)
  assert scores["mean"] >= 0.95, scores
  path = str(tmp_path / "probe.msgpack")
  probe.save_probe(state, path)
  codes = probe.probe_extractor(probe.load_probe(path))(test_frames[:8])
  np.testing.assert_allclose(codes[:, :probe.NUM_COEFFS], probe.make_predictor(state)(test_frames[:8]), atol=1e-5)
