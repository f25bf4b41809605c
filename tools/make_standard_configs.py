"""Writes models/standard/: the diffusers configs and CLIP tokenizer settings of the published
checkpoints (SD 1.5, SD 2.1 (v-prediction, 768), SD 2.1-base (epsilon, 512), SDXL base 1.0), which
semi uses for a single-file checkpoint given without --config, as diffusers' `from_single_file`
fetches them from the hub. The values are those of the hub repos' config files; the fields come
from the tiny fixtures' configs (written by diffusers 0.42.1 / transformers 5.24), so every field
is one semi knows. The CLIP BPE files (vocab.json, merges.txt: OpenAI's, MIT-licensed) are stored
once in models/standard/clip-vocab/ and written into each tokenizer folder when semi unpacks them.

Usage: python tools/make_standard_configs.py  (no third-party packages)
"""

import copy
import json
import pathlib
import shutil

ROOT = pathlib.Path(__file__).resolve().parent.parent
FIX = ROOT / "crates/diffusion/tests/fixtures"
OUT = ROOT / "models/standard"


def load(*parts):
    return json.loads((FIX.joinpath(*parts)).read_text())


def write(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


SCHED_COMMON = {"beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085,
                "clip_sample": False, "num_train_timesteps": 1000, "set_alpha_to_one": False,
                "skip_prk_steps": True, "steps_offset": 1, "trained_betas": None}

UNET_SD = {"attention_head_dim": 8, "block_out_channels": [320, 640, 1280, 1280],
           "cross_attention_dim": 768, "layers_per_block": 2, "sample_size": 64,
           "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
           "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
           "transformer_layers_per_block": 1, "use_linear_projection": False,
           "upcast_attention": False, "mid_block_type": "UNetMidBlock2DCrossAttn"}

VAE_SD = {"block_out_channels": [128, 256, 512, 512], "layers_per_block": 2,
          "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4,
          "sample_size": 512, "scaling_factor": 0.18215, "force_upcast": True}

CLIP_L = {"architectures": ["CLIPTextModel"], "hidden_act": "quick_gelu", "hidden_size": 768,
          "intermediate_size": 3072, "num_attention_heads": 12, "num_hidden_layers": 12,
          "projection_dim": 768, "vocab_size": 49408, "bos_token_id": 0, "eos_token_id": 2,
          "pad_token_id": 1, "dtype": "float32"}

# OpenCLIP ViT-H/14 as diffusers keeps it for SD 2.x: 23 of its 24 layers (SD 2 reads the
# penultimate state), no projection.
OPEN_CLIP_H = {"architectures": ["CLIPTextModel"], "hidden_act": "gelu", "hidden_size": 1024,
               "intermediate_size": 4096, "num_attention_heads": 16, "num_hidden_layers": 23,
               "projection_dim": 512, "vocab_size": 49408, "bos_token_id": 0, "eos_token_id": 2,
               "pad_token_id": 1, "dtype": "float32"}

OPEN_CLIP_BIGG = {"architectures": ["CLIPTextModelWithProjection"], "hidden_act": "gelu",
                  "hidden_size": 1280, "intermediate_size": 5120, "num_attention_heads": 20,
                  "num_hidden_layers": 32, "projection_dim": 1280, "vocab_size": 49408,
                  "bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1, "dtype": "float32"}


def merged(base, over):
    out = copy.deepcopy(base)
    out.update(over)
    out.pop("transformers_version", None)
    out["_diffusers_version"] = "0.42.1" if "_class_name" in out else out.get("_diffusers_version")
    if out["_diffusers_version"] is None:
        del out["_diffusers_version"]
    return out


def tokenizer(folder, pad):
    tok_src = FIX / "clip-tokenizer"
    special = json.loads((tok_src / "special_tokens_map.json").read_text())
    cfg = json.loads((tok_src / "tokenizer_config.json").read_text())
    special["pad_token"] = pad
    cfg["pad_token"] = pad
    cfg.pop("name_or_path", None)
    write(folder / "special_tokens_map.json", special)
    write(folder / "tokenizer_config.json", cfg)


def sd_folder(name, unet_over, text, sched, vae_over=None, pad="<|endoftext|>"):
    d = OUT / name
    index = merged(load("tiny-sd1", "model_index.json"), {})
    index["scheduler"] = ["diffusers", sched["_class_name"]]
    write(d / "model_index.json", index)
    write(d / "unet/config.json", merged(load("tiny-sd2", "unet", "config.json"), {**UNET_SD, **unet_over}))
    write(d / "vae/config.json", merged(load("tiny-sd2", "vae", "config.json"), {**VAE_SD, **(vae_over or {})}))
    write(d / "text_encoder/config.json", merged(load("tiny-sd2", "text_encoder", "config.json"), text))
    write(d / "scheduler/scheduler_config.json", {**sched, "_diffusers_version": "0.42.1"})
    tokenizer(d / "tokenizer", pad)


def main():
    if OUT.exists():
        shutil.rmtree(OUT)
    vocab = OUT / "clip-vocab"
    vocab.mkdir(parents=True)
    for f in ("vocab.json", "merges.txt"):
        shutil.copy(FIX / "clip-tokenizer" / f, vocab / f)

    # stable-diffusion-v1-5/stable-diffusion-v1-5
    sd_folder("sd1", {}, CLIP_L, {"_class_name": "PNDMScheduler", **SCHED_COMMON})
    # stabilityai/stable-diffusion-2-1 (v-prediction, 768x768)
    sd2 = {"attention_head_dim": [5, 10, 20, 20], "cross_attention_dim": 1024,
           "use_linear_projection": True}
    sd_folder("sd2", {**sd2, "sample_size": 96, "upcast_attention": True}, OPEN_CLIP_H,
              {"_class_name": "DDIMScheduler", **SCHED_COMMON, "prediction_type": "v_prediction"},
              {"sample_size": 768}, pad="!")
    # stabilityai/stable-diffusion-2-1-base (epsilon, 512x512)
    sd_folder("sd2-base", sd2, OPEN_CLIP_H,
              {"_class_name": "PNDMScheduler", **SCHED_COMMON, "prediction_type": "epsilon"}, pad="!")

    # stabilityai/stable-diffusion-xl-base-1.0
    d = OUT / "sdxl"
    write(d / "model_index.json", merged(load("tiny-sdxl", "model_index.json"), {}))
    write(d / "unet/config.json", merged(load("tiny-sdxl", "unet", "config.json"), {
        "addition_embed_type": "text_time", "addition_time_embed_dim": 256,
        "attention_head_dim": [5, 10, 20], "block_out_channels": [320, 640, 1280],
        "cross_attention_dim": 2048, "layers_per_block": 2,
        "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
        "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
        "projection_class_embeddings_input_dim": 2816, "sample_size": 128,
        "transformer_layers_per_block": [1, 2, 10], "upcast_attention": None,
        "use_linear_projection": True, "mid_block_type": "UNetMidBlock2DCrossAttn"}))
    write(d / "vae/config.json", merged(load("tiny-sdxl", "vae", "config.json"),
                                        {**VAE_SD, "sample_size": 1024, "scaling_factor": 0.13025}))
    write(d / "text_encoder/config.json", merged(load("tiny-sdxl", "text_encoder", "config.json"), CLIP_L))
    write(d / "text_encoder_2/config.json", merged(load("tiny-sdxl", "text_encoder_2", "config.json"), OPEN_CLIP_BIGG))
    write(d / "scheduler/scheduler_config.json", {
        **load("tiny-sdxl", "scheduler", "scheduler_config.json"), "_diffusers_version": "0.42.1"})
    tokenizer(d / "tokenizer", "<|endoftext|>")
    tokenizer(d / "tokenizer_2", "!")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
