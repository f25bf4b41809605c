"""Builds the toy model's CLIP BPE tokenizer: the real CLIP merges, pruned to the caption words.

Why: the toy text encoder is tiny, so a 49,408-entry embedding table would dominate the model, and
SemI's probe reads one attention column per category word, which is simplest when each word is one
token. We therefore keep the classic SD tokenizer layout and algorithm (byte-level BPE with `</w>`
word ends, exactly what `transformers.CLIPTokenizer` and our Rust runtime implement) but only:

- the 256 byte tokens and their 256 `</w>` variants (so any text still tokenizes),
- the CLIP merges that BPE applies while encoding the toy caption vocabulary, in their original
  order (BPE always applies the lowest-ranked available merge; the merges used for a word keep the
  same relative order, so with this subset every vocabulary word encodes exactly as with full
  CLIP, as one token if CLIP has it as one),
- `<|startoftext|>` and `<|endoftext|>` (pad = `<|endoftext|>`, like SD 1.x), model_max_length 77.

Usage: python tools/toy_tokenizer.py OUT_DIR [--clip-dir DIR]
where DIR holds the full CLIP `vocab.json` + `merges.txt` (default: the runtime's test fixture).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

# The toy world's caption grammar (crates/toyworld/src/caption.rs): articles, counts, connectives,
# the six shape names and their plurals. "an" and "one" are accepted by the parser, so keep them.
CATEGORIES = ["circle", "square", "triangle", "cross", "ring", "diamond"]
PLURALS = ["circles", "squares", "triangles", "crosses", "rings", "diamonds"]
COUNTS = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]
WORDS = ["a", "an", "and", ","] + CATEGORIES + PLURALS + COUNTS

BOS, EOS = "<|startoftext|>", "<|endoftext|>"


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable-character table (the byte tokens' spelling)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def read_merges(path: str) -> list[tuple[str, str]]:
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    if lines and lines[0].startswith("#version"):
        lines = lines[1:]
    # CLIP uses the first 49152 - 256 - 2 merges (as transformers.CLIPTokenizer does).
    merges = [tuple(l.split()) for l in lines if l.strip()][: 49152 - 256 - 2]
    return [m for m in merges if len(m) == 2]


def bpe_trace(word: str, ranks: dict[tuple[str, str], int]) -> tuple[list[str], list[int]]:
    """Encodes one pre-tokenized word with CLIP's BPE; returns its tokens and the merge ranks used."""
    b2u = bytes_to_unicode()
    chars = [b2u[b] for b in word.encode("utf-8")]
    parts = chars[:-1] + [chars[-1] + "</w>"]
    used = []
    while len(parts) > 1:
        pairs = [(parts[i], parts[i + 1]) for i in range(len(parts) - 1)]
        best = min(pairs, key=lambda p: ranks.get(p, float("inf")))
        if best not in ranks:
            break
        used.append(ranks[best])
        merged, i = [], 0
        while i < len(parts):
            if i < len(parts) - 1 and (parts[i], parts[i + 1]) == best:
                merged.append(parts[i] + parts[i + 1])
                i += 2
            else:
                merged.append(parts[i])
                i += 1
        parts = merged
    return parts, used


def build(clip_dir: str, out_dir: str) -> dict[str, list[str]]:
    merges = read_merges(os.path.join(clip_dir, "merges.txt"))
    ranks = {m: i for i, m in enumerate(merges)}
    keep: set[int] = set()
    expected: dict[str, list[str]] = {}
    for w in WORDS:
        toks, used = bpe_trace(w, ranks)
        keep.update(used)
        expected[w] = toks
    kept = [merges[i] for i in sorted(keep)]

    b2u = bytes_to_unicode()
    vocab_list = list(b2u.values())
    vocab_list += [v + "</w>" for v in vocab_list]
    vocab_list += ["".join(m) for m in kept]
    vocab_list += [BOS, EOS]
    vocab = {tok: i for i, tok in enumerate(vocab_list)}
    assert len(vocab) == len(vocab_list), "duplicate vocabulary entry"

    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False)
    with open(os.path.join(out_dir, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n")
        for a, b in kept:
            f.write(f"{a} {b}\n")
    special = {
        "content": None,
        "lstrip": False,
        "normalized": True,
        "rstrip": False,
        "single_word": False,
    }
    bos = dict(special, content=BOS)
    eos = dict(special, content=EOS)
    with open(os.path.join(out_dir, "special_tokens_map.json"), "w") as f:
        json.dump({"bos_token": bos, "eos_token": eos, "pad_token": EOS, "unk_token": eos}, f, indent=2)
    config = {
        "add_prefix_space": False,
        "bos_token": bos,
        "do_lower_case": True,
        "eos_token": eos,
        "errors": "replace",
        "model_max_length": 77,
        "pad_token": EOS,
        "tokenizer_class": "CLIPTokenizer",
        "unk_token": eos,
    }
    with open(os.path.join(out_dir, "tokenizer_config.json"), "w") as f:
        json.dump(config, f, indent=2)
    return expected


def check(out_dir: str, expected: dict[str, list[str]]) -> None:
    """Loads the result with transformers.CLIPTokenizer and checks words and captions."""
    from transformers import CLIPTokenizer

    tok = CLIPTokenizer(
        os.path.join(out_dir, "vocab.json"),
        os.path.join(out_dir, "merges.txt"),
        pad_token=EOS,
        model_max_length=77,
    )
    for w, toks in expected.items():
        got = tok.convert_ids_to_tokens(tok(w, add_special_tokens=False).input_ids)
        assert got == toks, f"{w!r}: {got} != {toks}"
    caption = "a circle, two crosses and a diamond"
    ids = tok(caption, padding="max_length", max_length=77).input_ids
    toks = tok.convert_ids_to_tokens(ids[:9])
    want = [BOS, "a</w>", "circle</w>", ",</w>", "two</w>", "crosses</w>", "and</w>", "a</w>", "diamond</w>"]
    assert toks == want, toks
    assert ids[9] == tok.convert_tokens_to_ids(EOS) and ids[-1] == ids[9], "pad is <|endoftext|>"
    assert len(ids) == 77


def main() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    default_clip = os.path.join(here, "..", "crates", "diffusion", "tests", "fixtures", "clip-tokenizer")
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out_dir")
    ap.add_argument("--clip-dir", default=default_clip)
    args = ap.parse_args()
    expected = build(args.clip_dir, args.out_dir)
    check(args.out_dir, expected)
    multi = {w: t for w, t in expected.items() if len(t) > 1}
    n = len(json.load(open(os.path.join(args.out_dir, "vocab.json"))))
    print(f"wrote {args.out_dir}: vocab {n}; words that are not one token: {multi or 'none'}")


if __name__ == "__main__":
    sys.exit(main())
