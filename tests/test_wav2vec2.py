"""wav2vec2: parity of every hidden state with transformers.Wav2Vec2Model, loader, normalisation."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from emodiff_jax.convert.torch_state import CheckpointMismatchError, param_count
from emodiff_jax.convert.wav2vec2 import load_wav2vec2
from emodiff_jax.models.wav2vec2 import Wav2Vec2Config, Wav2Vec2Model, normalize_waveform

TINY = dict(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32, conv_dim=(8, 8, 8),
            conv_kernel=(10, 3, 3), conv_stride=(5, 2, 2))
CONFIGS = {
    # Base layout: group norm on conv 0, post-LN layers, even positional kernel (SamePad drops a frame).
    "base": dict(TINY, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4),
    # Large layout: layer norm on every conv, conv bias, pre-LN layers, odd positional kernel.
    "large": dict(TINY, num_conv_pos_embeddings=7, num_conv_pos_embedding_groups=2, feat_extract_norm="layer",
                  do_stable_layer_norm=True, conv_bias=True),
}


def rel_err(a, b) -> float:
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def _torch_model(kw: dict, seed: int, wrapper=transformers.Wav2Vec2Model):
  torch.manual_seed(seed)
  model = wrapper(transformers.Wav2Vec2Config(**kw)).eval()
  with torch.no_grad():  # Non-trivial norm affines and biases so a dropped scale or bias is caught.
    for name, p in model.named_parameters():
      if "norm" in name or name.endswith("bias"):
        p.add_(0.1 * torch.randn_like(p))
  return model


@pytest.fixture(scope="module", params=[("base", True), ("large", False)], ids=["base-safetensors", "large-bin"])
def pair(request, tmp_path_factory):
  name, safe = request.param
  model = _torch_model(CONFIGS[name], seed=0)
  path = str(tmp_path_factory.mktemp(name))
  if safe:
    model.save_pretrained(path)
  else:  # transformers 5 always writes safetensors: write an old-style .bin with legacy weight_g/weight_v.
    model.config.save_pretrained(path)
    legacy = {k.replace("parametrizations.weight.original0", "weight_g").replace(
        "parametrizations.weight.original1", "weight_v"): v for k, v in model.state_dict().items()}
    assert "encoder.pos_conv_embed.conv.weight_g" in legacy
    torch.save(legacy, os.path.join(path, "pytorch_model.bin"))
  assert os.path.isfile(os.path.join(path, "model.safetensors" if safe else "pytorch_model.bin"))
  module, params = load_wav2vec2(path)
  return model, module, params


def test_every_hidden_state_matches_transformers(pair):
  model, module, params = pair
  wave = np.random.default_rng(0).standard_normal((2, 900)).astype(np.float32)
  with torch.no_grad():
    ref = model(torch.from_numpy(wave), output_hidden_states=True)
  fn = jax.jit(module.apply, static_argnames="normalize_last")
  ours = fn({"params": params}, jnp.asarray(wave))
  assert len(ours) == len(ref.hidden_states) == module.cfg.num_hidden_layers + 1
  assert ours[0].shape[1] == module.num_frames(900)
  for i, (a, b) in enumerate(zip(ours, ref.hidden_states)):
    assert rel_err(a, b.numpy()) <= 1e-4, f"hidden state {i}: rel err {rel_err(a, b.numpy())}"
  last = fn({"params": params}, jnp.asarray(wave), normalize_last=True)[-1]
  assert rel_err(last, ref.last_hidden_state.numpy()) <= 1e-4
  if module.cfg.do_stable_layer_norm:  # The final encoder LayerNorm really is applied.
    assert rel_err(last, ours[-1]) > 1e-2


def test_loads_ctc_checkpoint_and_ignores_head(tmp_path):
  kw = dict(CONFIGS["base"], vocab_size=12)
  ctc = _torch_model(kw, seed=1, wrapper=transformers.Wav2Vec2ForCTC)
  ctc.save_pretrained(tmp_path)
  module, params = load_wav2vec2(str(tmp_path))
  wave = np.random.default_rng(1).standard_normal((1, 700)).astype(np.float32)
  with torch.no_grad():
    ref = ctc.wav2vec2(torch.from_numpy(wave)).last_hidden_state.numpy()
  assert rel_err(module.apply({"params": params}, jnp.asarray(wave))[-1], ref) <= 1e-4


def test_mismatched_checkpoint_names_the_key(tmp_path):
  from safetensors.torch import load_file, save_file

  _torch_model(CONFIGS["base"], seed=2).save_pretrained(tmp_path)
  weights = os.path.join(tmp_path, "model.safetensors")
  state = load_file(weights)
  del state["encoder.layers.1.feed_forward.output_dense.bias"]
  save_file(state, weights, metadata={"format": "pt"})
  with pytest.raises(CheckpointMismatchError, match=r"encoder/layers_1/feed_forward/output_dense/bias"):
    load_wav2vec2(str(tmp_path))


def test_missing_config_is_named(tmp_path):
  with pytest.raises(FileNotFoundError, match="config.json"):
    load_wav2vec2(str(tmp_path))


@pytest.mark.parametrize("do_normalize", [True, False])
def test_normalisation_matches_feature_extractor(do_normalize):
  fe = transformers.Wav2Vec2FeatureExtractor(do_normalize=do_normalize)
  wave = (3.0 + 0.5 * np.random.default_rng(2).standard_normal((2, 1600))).astype(np.float32)
  ref = fe(list(wave), sampling_rate=16000, return_tensors="np")["input_values"]
  ours = np.asarray(normalize_waveform(wave, do_normalize))
  np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-5)
  assert abs(float(ours.mean())) < 1e-4 if do_normalize else np.array_equal(ours, wave)


def test_base_param_count_matches_torch():
  hf_cfg = transformers.Wav2Vec2Config()  # transformers' default is wav2vec2-base.
  cfg = Wav2Vec2Config.from_hf(hf_cfg)
  assert cfg == Wav2Vec2Config()  # Our defaults are base too.
  module = Wav2Vec2Model(cfg)
  shapes = jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), jnp.zeros((1, 16000))))
  with torch.device("meta"):
    torch_model = transformers.Wav2Vec2Model(hf_cfg)
  n_torch = sum(p.numel() for p in torch_model.parameters())
  # Torch extra: masked_spec_embed [hidden] (unused at inference) and weight norm's g [1, 1, kernel].
  extra = hf_cfg.hidden_size + hf_cfg.num_conv_pos_embeddings
  assert param_count(shapes["params"]) == n_torch - extra
  assert 94_000_000 < param_count(shapes["params"]) < 95_000_000
