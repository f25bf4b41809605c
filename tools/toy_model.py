"""The toy text-to-image model's architecture and scheduler, shared by train_toy.py and eval_toy.py.

Pixel space (no VAE): the UNet's sample is the 32x32 RGB image scaled to [-1, 1]. Our runtime
treats a `model_index.json` without a `vae` entry exactly like that (our extension of the format).

Choices (see models/toy/README.md for the measured consequences):
- UNet: down DownBlock2D (32x32, no attention: 1024-token self-attention would double the cost on
  two CPU cores) -> CrossAttnDownBlock2D (16x16: the ticket grid, 16x16 cells of 2x2 px like SD's
  256 cells) -> CrossAttnDownBlock2D (8x8), cross-attention mid block at 8x8. Channels 32/64/96.
  One layer per block (default; measured 1.1 vs 1.7 CPU-s per batch of 32 for two layers), so the
  16x16 down-path cross-attention, the analogue of SD's probe layer
  `down_blocks.2.attentions.1...`, is `down_blocks.1.attentions.0.transformer_blocks.0.attn2`
  (with `--layers 2` it would be `down_blocks.1.attentions.1...`, as in SD).
- `transformer_layers` (diffusers' transformer_layers_per_block): 1 in the shipped model; the
  grown stage-4 model (not shipped, models/toy/README.md) has 1,1,3, three transformer layers at
  8x8 (last down block, mid block, first up block); the 16x16 probe layer is the same in both.
- Text encoder: a 4-layer, 96-wide CLIPTextModel (quick_gelu, 77 positions) over a 589-token
  pruned CLIP vocabulary (tools/toy_tokenizer.py).
- Scheduler: cosine (`squaredcos_cap_v2`) betas, 1000 training steps, v-prediction (stable at the
  high-noise first steps, where epsilon-prediction amplifies errors by 1/sqrt(alpha_bar) ~ 16x),
  DDIM with `timestep_spacing` "leading" and `steps_offset` 1 like SD 1.x (50 steps start at 981).
"""

from __future__ import annotations

import json

from diffusers import DDIMScheduler, DDPMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

TEXT_HIDDEN = 96


def unet_config(width: str = "32,64,96", layers: int = 1, transformer_layers: str = "1", channels: int = 3) -> dict:
    """The toy UNet: 32x32 samples of `channels` channels (3: the first world's pixels; 4: the
    latent world's VAE latents)."""
    chans = [int(c) for c in width.split(",")]
    extra = {}
    if transformer_layers != "1":
        # Per down block (the mid block takes the last value, the up path the reversed list).
        tl = [int(t) for t in transformer_layers.split(",")]
        extra["transformer_layers_per_block"] = tl if len(tl) > 1 else tl[0]
    return dict(
        **extra,
        sample_size=32,
        in_channels=channels,
        out_channels=channels,
        down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
        mid_block_type="UNetMidBlock2DCrossAttn",
        up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
        block_out_channels=chans,
        layers_per_block=layers,
        norm_num_groups=16,
        cross_attention_dim=TEXT_HIDDEN,
        # diffusers' historical naming: this is the number of heads per block.
        attention_head_dim=[4, 4, 4],
        flip_sin_to_cos=True,
        freq_shift=0,
    )


def text_config(vocab_size: int, bos: int, eos: int) -> CLIPTextConfig:
    return CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=TEXT_HIDDEN,
        intermediate_size=4 * TEXT_HIDDEN,
        projection_dim=TEXT_HIDDEN,
        num_hidden_layers=4,
        num_attention_heads=4,
        max_position_embeddings=77,
        hidden_act="quick_gelu",
        layer_norm_eps=1e-5,
        pad_token_id=eos,
        bos_token_id=bos,
        eos_token_id=eos,
    )


SCHEDULER = dict(
    num_train_timesteps=1000,
    beta_schedule="squaredcos_cap_v2",
    beta_start=0.00085,  # unused by the cosine schedule; kept for readers of the config
    beta_end=0.012,
    prediction_type="v_prediction",
    clip_sample=False,
    set_alpha_to_one=False,
    steps_offset=1,
    timestep_spacing="leading",
)


def build_models(width: str, layers: int, vocab_size: int, bos: int, eos: int, transformer_layers: str = "1",
                 channels: int = 3):
    unet = UNet2DConditionModel(**unet_config(width, layers, transformer_layers, channels))
    text = CLIPTextModel(text_config(vocab_size, bos, eos))
    return unet, text


def train_scheduler() -> DDPMScheduler:
    keys = ("num_train_timesteps", "beta_schedule", "beta_start", "beta_end", "prediction_type")
    return DDPMScheduler(**{k: SCHEDULER[k] for k in keys})


def ddim_scheduler() -> DDIMScheduler:
    return DDIMScheduler(**SCHEDULER)


def describe(unet, text) -> str:
    nu = sum(p.numel() for p in unet.parameters())
    nt = sum(p.numel() for p in text.parameters())
    return f"unet {nu / 1e6:.2f}M params, text encoder {nt / 1e6:.2f}M params; " + json.dumps(
        {k: unet.config[k] for k in ("block_out_channels", "layers_per_block", "transformer_layers_per_block", "down_block_types")}
    )
