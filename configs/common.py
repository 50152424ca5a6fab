"""Model sections shared by the configs: SD-1.5 layout at paper scale and a tiny layout for tests.

Each section holds the keyword arguments of one model's config dataclass (`UNetConfig`, `VAEConfig`,
`MotionConfig`, `Wav2Vec2Config`, `AudioProjectionConfig`), so `--config.model.unet.layers_per_block=1`
style overrides reach the module directly. `emodiff_jax.models.build` turns a `model` section into modules.
"""

from __future__ import annotations

import ml_collections
from ml_collections.config_dict import placeholder

EXPRESSION_DIM = 50  # FLAME expression coefficients, as regressed by DECA.


def unet_runtime() -> dict:
  """UNet fields that change how it runs, not its params: the attention kernel (None: the backend's
  default, 'chunked' on CPU and 'xla' elsewhere; 'cudnn', 'matmul', ...) and the per-block
  rematerialisation policy (None: off; a `jax.checkpoint_policies` name such as 'nothing_saveable')."""
  return dict(attention_impl=placeholder(str), remat_policy=placeholder(str))


def sd15_model() -> ml_collections.ConfigDict:
  """Paper scale: SD-1.5 UNet and VAE, AnimateDiff motion modules, wav2vec2-base, 50-d expressions."""
  m = ml_collections.ConfigDict()
  m.resolution = 512
  m.vae = dict(block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
               norm_num_groups=32, scaling_factor=0.18215)
  m.unet = dict(block_out_channels=(320, 640, 1280, 1280), layers_per_block=2, cross_attention_dim=768,
                attention_head_dim=8, norm_num_groups=32, **unet_runtime())
  m.motion = dict(num_attention_heads=8, layers_per_block=2, norm_num_groups=32, max_seq_length=32,
                  use_mid_block=True)
  m.wav2vec2 = dict()  # wav2vec2-base defaults.
  m.audio_proj = dict(window=2, num_tokens=32, context_dim=768, hidden_dim=512)
  m.expression = dict(dim=EXPRESSION_DIM, tokens=4, injection="cross_attn", time_embedding=False)
  m.reference_attention = True
  return m


def tiny_model() -> ml_collections.ConfigDict:
  """A few-MB layout of the same shape for tests and CPU runs on 64x64 frames (8x8 latents)."""
  m = ml_collections.ConfigDict()
  m.resolution = 64
  m.vae = dict(block_out_channels=(32, 64, 64, 64), layers_per_block=1, latent_channels=4,
               norm_num_groups=8, scaling_factor=0.18215)
  m.unet = dict(block_out_channels=(32, 64), layers_per_block=1, cross_attention_dim=32,
                attention_head_dim=4, norm_num_groups=8,
                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), **unet_runtime())
  m.motion = dict(num_attention_heads=4, layers_per_block=1, norm_num_groups=8, max_seq_length=32,
                  use_mid_block=False)
  m.wav2vec2 = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                    conv_dim=(32, 32, 32), conv_kernel=(10, 8, 4), conv_stride=(5, 4, 16),
                    num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)
  m.audio_proj = dict(window=2, num_tokens=4, context_dim=32, hidden_dim=64)
  m.expression = dict(dim=EXPRESSION_DIM, tokens=2, injection="cross_attn", time_embedding=False)
  m.reference_attention = True
  return m


def diffusion() -> ml_collections.ConfigDict:
  """Noise schedule, objective and condition dropout (`emodiff_jax.diffusion`)."""
  d = ml_collections.ConfigDict()
  d.num_train_timesteps = 1000
  d.beta_schedule = "scaled_linear"  # SD-1.5
  d.beta_start = 0.00085
  d.beta_end = 0.012
  d.rescale_zero_terminal_snr = False
  d.prediction_type = "epsilon"  # or 'v_prediction' (use it with rescale_zero_terminal_snr)
  d.noise_offset = 0.0
  d.min_snr_gamma = 0.0  # 0: off; 5.0 is Hang et al.'s choice
  # The space the loss is measured in: '' = the prediction's own; 'v_prediction' on an epsilon model weights
  # each timestep's epsilon error by 1 / alpha_bar (= 1 + 1/SNR), so high-noise steps, where the sample's
  # layout is decided, count as much as in v-training (Salimans & Ho 2022) while the network stays epsilon.
  d.loss_target = ""
  # > 0: each latent cell's error weighted by 1 + change_weight * (its change against the reference latent,
  # over the frame's largest), so the mouth, brows and emotion marks count more than the still background
  # (`diffusion/losses.change_weights`). 0: plain mean.
  d.change_weight = 0.0
  # Each condition dropped independently per example (classifier-free guidance, see cond_dropout.py).
  d.cond_drop = dict(reference=0.05, audio=0.05, expression=0.05)
  d.latents = "vae"  # 'vae': encode frames in the step (frozen); 'precomputed': batch holds 'latents'
  return d


def optim() -> ml_collections.ConfigDict:
  """AdamW with warmup then constant/cosine/wsd, global-norm clipping, accumulation and EMA."""
  o = ml_collections.ConfigDict()
  o.learning_rate = 1e-5
  o.warmup_steps = 500
  o.schedule = "constant"  # or 'cosine' (decays to 0 at train.steps), or 'wsd' (constant, then linear to 0)
  o.decay_steps = 0  # the decay's horizon when not 0 (a run of train.steps stops partway through it)
  o.cooldown_steps = 0  # 'wsd': the horizon's last steps, over which the rate falls linearly to 0
  o.b1 = 0.9
  o.b2 = 0.999
  o.eps = 1e-8
  o.weight_decay = 1e-2
  o.clip_norm = 1.0
  o.accum_steps = 1  # micro-batches per optimizer update (the global batch is split into them)
  o.ema_decay = 0.9999  # 0: no EMA
  return o


def mesh() -> ml_collections.ConfigDict:
  """Device mesh: `data` (replicas) x `fsdp` (params and optimizer state sharded); -1 takes the rest."""
  m = ml_collections.ConfigDict()
  m.data = -1
  m.fsdp = 1
  # Logical axis -> mesh axis, first usable wins (see emodiff_jax/train/sharding.py).
  m.rules = (("embed", "fsdp"), ("mlp", "fsdp"))
  return m


def train_loop() -> ml_collections.ConfigDict:
  """Steps, logging, checkpointing, preview sampling and the non-finite guard."""
  t = ml_collections.ConfigDict()
  t.steps = 30_000
  t.seed = 0
  t.compute_dtype = "bfloat16"  # params and optimizer state stay float32
  t.log_every = 50
  t.checkpoint_every = 1000
  t.keep_checkpoints = 3
  t.async_checkpoints = True
  t.preview_every = 2000  # PNG grid reference | ground truth | sampled; 0: never
  t.preview_examples = 2
  t.preview_sampling_steps = 20
  t.max_bad_steps = 20  # consecutive non-finite steps before the run stops
  t.train_2d_in_stage2 = False  # stage 2 also trains the backbone's 2D layers (train/partition.py)
  return t


def init() -> ml_collections.ConfigDict:
  """Where the weights come from; empty strings mean random init (see emodiff_jax/train/init.py)."""
  i = ml_collections.ConfigDict()
  i.stage1_checkpoint = ""  # a stage-1 workdir: ReferenceNet + backbone 2D (+ VAE) from its latest step
  i.stage2_checkpoint = ""  # a stage-2 workdir: every network from its latest step (a fresh optimizer)
  i.bundle = ""  # an inference bundle (sampling/bundle.py): every network from it (a fresh optimizer)
  i.unet2d = ""  # diffusers UNet2DConditionModel folder (SD-1.5): ReferenceNet and backbone 2D layers
  i.motion_adapter = ""  # diffusers MotionAdapter folder (AnimateDiff)
  i.vae = ""  # diffusers AutoencoderKL folder
  i.vae_checkpoint = ""  # a VAE-run workdir (launch/train_vae.py): the VAE from its latest step (EMA if kept)
  i.wav2vec2 = ""  # transformers Wav2Vec2Model folder
  return i
