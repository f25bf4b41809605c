#!/usr/bin/env python3
"""Reference fixtures for semi-diffusion's noise, tokenizer and text encoder.

Writes, under crates/diffusion/tests/fixtures/:
  randn.safetensors, randn_stream.safetensors   torch.randn on CPU (seeded torch.Generator)
  clip-tokenizer/                                the CLIP BPE vocabulary in the published SD layout
  clip-tokenizer-json/                           the same tokenizer as transformers 5.x saves it
  tokenizer_cases.json                           transformers CLIPTokenizer ids for awkward prompts
  text-encoder-quick_gelu/, text-encoder-gelu/   tiny random CLIPTextModels + reference outputs

Run from the repository root:  python tools/make_text_fixtures.py [--only randn|tokenizer|encoder]
Needs torch, transformers, safetensors, and open_clip_torch (only for its bundled BPE file:
`pip install --no-deps open_clip_torch`).
"""
import argparse
import gzip
import json
import os
import shutil
import sys
import tempfile

import torch
from safetensors.torch import save_file

FIXTURES = os.path.join("crates", "diffusion", "tests", "fixtures")

RANDN_SEEDS = [0, 1, 42, 123456789]
RANDN_SHAPES = [(1, 4, 64, 64), (1, 4, 8, 8), (3,), (15,), (16,), (17,), (2, 3, 5, 7), (1, 4, 96, 64)]


def shape_key(shape):
    return "x".join(str(d) for d in shape)


def make_randn():
    # The vectorised fill differs by ULPs between ATen's DEFAULT (libm) and AVX2/AVX-512 kernels
    # (avx_mathfun polynomials); the Rust side mirrors the AVX2 one, which every x86 CPU with
    # AVX2 uses. Refuse to write fixtures from the other kernel.
    cap = torch.backends.cpu.get_cpu_capability()
    if cap not in ("AVX2", "AVX512"):
        sys.exit(f"torch CPU capability is {cap}; need AVX2 or AVX512 for the reference fill")
    out = {}
    for seed in RANDN_SEEDS:
        for shape in RANDN_SHAPES:
            g = torch.Generator().manual_seed(seed)
            out[f"seed{seed}_{shape_key(shape)}"] = torch.randn(shape, generator=g, dtype=torch.float32)
    save_file(out, os.path.join(FIXTURES, "randn.safetensors"))
    g = torch.Generator().manual_seed(7)
    first = torch.randn((1, 4, 8, 8), generator=g)
    second = torch.randn((5,), generator=g)
    third = torch.randn((3,), generator=g)  # exercises the cached Box-Muller half across calls
    fourth = torch.randn((20,), generator=g)
    save_file(
        {"draw0_1x4x8x8": first, "draw1_5": second, "draw2_3": third, "draw3_20": fourth},
        os.path.join(FIXTURES, "randn_stream.safetensors"),
    )
    print("randn fixtures written")


# ------------------------------------------------------------------------------------------------
# tokenizer


def bytes_to_unicode():
    """GPT-2/CLIP reversible byte -> printable unicode character table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def find_bpe_file():
    import importlib.util

    spec = importlib.util.find_spec("open_clip")
    if spec is None:
        sys.exit("open_clip_torch is not installed: pip install --no-deps open_clip_torch")
    path = os.path.join(os.path.dirname(spec.origin), "bpe_simple_vocab_16e6.txt.gz")
    if not os.path.exists(path):
        sys.exit(f"{path} missing")
    return path


def build_clip_vocab():
    """vocab + merges exactly as OpenAI's CLIP builds them from the BPE file (49408 tokens)."""
    with gzip.open(find_bpe_file(), "rt", encoding="utf-8") as f:
        lines = f.read().split("\n")
    merges = lines[1 : 49152 - 256 - 2 + 1]
    merges = [tuple(m.split()) for m in merges]
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab]
    for m in merges:
        vocab.append("".join(m))
    vocab.extend(["<|startoftext|>", "<|endoftext|>"])
    assert len(vocab) == 49408 and len(merges) == 48894, (len(vocab), len(merges))
    return {tok: i for i, tok in enumerate(vocab)}, merges


def write_clip_tokenizer(dest):
    vocab, merges = build_clip_vocab()
    os.makedirs(dest, exist_ok=True)
    with open(os.path.join(dest, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False)
    with open(os.path.join(dest, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n")
        for a, b in merges:
            f.write(f"{a} {b}\n")
    special = {
        "bos_token": {"content": "<|startoftext|>", "lstrip": False, "normalized": True, "rstrip": False, "single_word": False},
        "eos_token": {"content": "<|endoftext|>", "lstrip": False, "normalized": True, "rstrip": False, "single_word": False},
        "pad_token": "<|endoftext|>",
        "unk_token": {"content": "<|endoftext|>", "lstrip": False, "normalized": True, "rstrip": False, "single_word": False},
    }
    with open(os.path.join(dest, "special_tokens_map.json"), "w") as f:
        json.dump(special, f, indent=2)
    config = {
        "add_prefix_space": False,
        "bos_token": special["bos_token"],
        "do_lower_case": True,
        "eos_token": special["eos_token"],
        "errors": "replace",
        "model_max_length": 77,
        "name_or_path": "openai/clip-vit-large-patch14",
        "pad_token": "<|endoftext|>",
        "special_tokens_map_file": "./special_tokens_map.json",
        "tokenizer_class": "CLIPTokenizer",
        "unk_token": special["unk_token"],
    }
    with open(os.path.join(dest, "tokenizer_config.json"), "w") as f:
        json.dump(config, f, indent=2)


TOKENIZER_PROMPTS = [
    "a photo of a cat",
    "A Photo Of A CAT, on the Beach!!!",
    "don't stop, it's fine; we're here, they've gone, I'm ok, you'll see, he'd go",
    "DON'T Panic: IT'S fine",
    "1234 5.6 and 3,000,000 people in 2024",
    "multiple   spaces\tand\ttabs\nand\n\nnewlines  ",
    "   leading and trailing whitespace   ",
    "café naïve résumé crème brûlée",
    "Straße groß ÄÖÜ",
    "Ωμέγα and αλφα βήτα",
    "a cat 🐱 and a dog 🐶 with 👍🏽",
    "東京の猫と犬",
    "a <|endoftext|> b <|startoftext|>c",
    "state-of-the-art, well-known, self-driving",
    "rock 'n' roll, the dog's bone, o'clock, ''quoted''",
    "e-mail: someone@example.com #hashtag $5 100% (paren) [bracket] {brace}",
    "ﬁ ligature and full-width ＡＢＣ１２３",
    "Ｃafe\u0301 combining accent vs café",
    "zero\u200bwidth space and non\u00a0breaking",
    "",
    "...",
    "a",
    "The quick brown fox jumps over the lazy dog. " * 12,
    "an extremely detailed photograph of a red sports car parked next to a bright yellow school bus "
    "on a busy street in new york city at sunset, with tall buildings, people walking on the sidewalk, "
    "street lamps, traffic lights, reflections on wet asphalt, cinematic lighting, 8k, highly detailed",
    "¿Qué tal? ¡Muy bien! «quoted» „German“ ‘single’ “double” — dash – en",
    "MiXeD CaSe WoRdS and CamelCaseWord and snake_case_word",
    "ΣΟΦΟΣ ΟΔΟΣ and İstanbul",
    "uppercase <|ENDOFTEXT|> special and !!! bangs!",
]

# The tokenizer.json fixture uses a cut-down vocabulary (the first merges only) to stay small.
JSON_FIXTURE_MERGES = 3000


def make_tokenizer_fixtures():
    from transformers import CLIPTokenizer

    src = os.path.join(FIXTURES, "clip-tokenizer")
    write_clip_tokenizer(src)
    tok1 = CLIPTokenizer.from_pretrained(src)
    ids = tok1("a photo of a cat").input_ids
    assert ids == [49406, 320, 1125, 539, 320, 2368, 49407], ids
    tok2 = CLIPTokenizer.from_pretrained(src, pad_token="!")
    assert tok2.pad_token_id == 0
    cases = []
    for text in TOKENIZER_PROMPTS:
        kw = dict(padding="max_length", max_length=77, truncation=True)
        cases.append({"text": text, "ids_sd1": tok1(text, **kw).input_ids, "ids_sd2": tok2(text, **kw).input_ids,
                      "plain": tok1(text, add_special_tokens=False).input_ids})
    with open(os.path.join(FIXTURES, "tokenizer_cases.json"), "w", encoding="utf-8") as f:
        json.dump(cases, f, ensure_ascii=False, indent=1)
    make_tokenizer_json_fixture()


def make_tokenizer_json_fixture():
    """transformers 5.x save_pretrained writes tokenizer.json + tokenizer_config.json only."""
    from transformers import CLIPTokenizer

    vocab, merges = build_clip_vocab()
    merges = merges[:JSON_FIXTURE_MERGES]
    small = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])][:512]
    small += ["".join(m) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    small_vocab = {t: i for i, t in enumerate(small)}
    dest = os.path.join(FIXTURES, "clip-tokenizer-json")
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "src")
        os.makedirs(src)
        with open(os.path.join(src, "vocab.json"), "w", encoding="utf-8") as f:
            json.dump(small_vocab, f, ensure_ascii=False)
        with open(os.path.join(src, "merges.txt"), "w", encoding="utf-8") as f:
            f.write("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
        tok = CLIPTokenizer.from_pretrained(src, pad_token="!", model_max_length=32)
        out = os.path.join(tmp, "out")
        tok.save_pretrained(out)
        if os.path.exists(dest):
            shutil.rmtree(dest)
        os.makedirs(dest)
        names = sorted(os.listdir(out))
        assert "vocab.json" not in names and "tokenizer.json" in names, names
        for name in names:
            with open(os.path.join(out, name), encoding="utf-8") as f:
                data = json.load(f)
            with open(os.path.join(dest, name), "w", encoding="utf-8") as f:
                json.dump(data, f, ensure_ascii=False, separators=(",", ":"))
        tok = CLIPTokenizer.from_pretrained(dest)
        assert tok.pad_token == "!" and tok.model_max_length == 32
        kw = dict(padding="max_length", max_length=32, truncation=True)
        cases = [{"text": t, "ids": tok(t, **kw).input_ids} for t in TOKENIZER_PROMPTS]
        with open(os.path.join(dest, "cases.json"), "w", encoding="utf-8") as f:
            json.dump(cases, f, ensure_ascii=False, indent=0)
    print("tokenizer fixtures written:", sorted(os.listdir(dest)))


# ------------------------------------------------------------------------------------------------
# text encoder


def make_encoder(hidden_act, prefixed, seed):
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    cfg = CLIPTextConfig(
        vocab_size=1000,
        hidden_size=32,
        intermediate_size=37,
        projection_dim=16,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        hidden_act=hidden_act,
        layer_norm_eps=1e-5,
        bos_token_id=998,
        eos_token_id=999,
        pad_token_id=1,
    )
    model = CLIPTextModel(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    dest = os.path.join(FIXTURES, f"text-encoder-{hidden_act}")
    if os.path.exists(dest):
        shutil.rmtree(dest)
    model.save_pretrained(dest)  # transformers 5.x: keys without `text_model.`
    st = os.path.join(dest, "model.safetensors")
    from safetensors.torch import load_file

    weights = load_file(st)
    assert any(k.startswith("embeddings.") for k in weights), list(weights)[:3]
    if prefixed:
        # Published SD repositories carry the `text_model.` prefix.
        weights = {f"text_model.{k}": v.contiguous() for k, v in weights.items()}
        save_file(weights, st, metadata={"format": "pt"})
    gen = torch.Generator().manual_seed(seed + 1)
    ids = torch.randint(0, 1000, (2, 77), generator=gen)
    ids[:, 0] = 998
    ids[0, 10] = 999
    ids[0, 11:] = 1
    with torch.no_grad():
        out = model(input_ids=ids).last_hidden_state
    save_file({"input_ids": ids.to(torch.int64).contiguous(), "last_hidden_state": out.contiguous()},
              os.path.join(dest, "reference.safetensors"))
    print(f"encoder {hidden_act} written (prefixed={prefixed}):", sorted(os.listdir(dest)))


def make_encoder_fixtures():
    make_encoder("quick_gelu", prefixed=True, seed=11)
    make_encoder("gelu", prefixed=False, seed=12)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", choices=["randn", "tokenizer", "encoder"])
    args = ap.parse_args()
    os.makedirs(FIXTURES, exist_ok=True)
    if args.only in (None, "randn"):
        make_randn()
    if args.only in (None, "tokenizer"):
        make_tokenizer_fixtures()
    if args.only in (None, "encoder"):
        make_encoder_fixtures()


if __name__ == "__main__":
    main()
