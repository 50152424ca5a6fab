"""Configs build every network; paper-scale sizes come out of `jax.eval_shape` without allocation."""

import os
import subprocess
import sys

import pytest

from configs import sd15_stage2, tiny
from emodiff_jax.models.build import abstract_params, build_models
from emodiff_jax.models.summary import backbone_groups, count


@pytest.fixture(scope="module")
def sd15():
  config = sd15_stage2.get_config()
  return abstract_params(build_models(config.model), config.model, config.num_frames)


def test_sd15_sizes_match_the_public_checkpoints(sd15):
  assert count(sd15["reference_net"]) == 859_520_964  # SD-1.5 UNet
  assert count(sd15["vae"]) == 83_653_863  # sd-vae-ft-mse
  groups = backbone_groups(sd15["backbone"])
  assert groups["2D UNet (SD-1.5 layout)"] == 859_520_964
  assert groups["temporal (motion modules)"] > 400e6  # AnimateDiff v1.5 v2 motion modules, with mid block
  assert count(sd15["wav2vec2"]) == 94_370_816  # wav2vec2-base without the unused masked_spec_embed


def test_expression_injection_override_changes_the_backbone():
  config = tiny.get_config()
  base = backbone_groups(abstract_params(build_models(config.model), config.model, 4)["backbone"])
  config.model.expression.injection = "none"
  off = backbone_groups(abstract_params(build_models(config.model), config.model, 4)["backbone"])
  assert "expression cross-attention" in base and "expression cross-attention" not in off
  assert "expression projection" not in off


def test_unet_channels_follow_the_vae_latents():
  config = tiny.get_config()
  config.model.vae.latent_channels = 16
  models = build_models(config.model)
  params = abstract_params(models, config.model, 2)
  assert models.backbone.config.unet.in_channels == models.backbone.config.unet.out_channels == 16
  assert models.reference_net.config.in_channels == 16
  assert params["backbone"]["unet"]["conv_in"]["kernel"].shape[-2] == 16
  assert params["backbone"]["unet"]["conv_out"]["kernel"].shape[-1] == 16
  config.model.unet.in_channels = 4  # an explicit width that disagrees with the VAE
  with pytest.raises(ValueError, match="in_channels=4 but model.vae.latent_channels=16"):
    build_models(config.model)


def test_inspect_cli_prints_table_with_overrides():
  out = subprocess.run([sys.executable, "-m", "launch.inspect", "--config=configs/tiny.py",
                        "--config.model.expression.injection=add_to_audio"],
                       capture_output=True, text=True, check=True,
                       cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__)))).stdout
  assert "backbone: audio cross-attention" in out and "expression cross-attention" not in out
  assert "expression projection" in out and out.strip().splitlines()[-1].startswith("total")
