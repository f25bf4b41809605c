//! CLIP byte-level BPE tokenizer, behaving as transformers 5.x `CLIPTokenizer` (which diffusers
//! loads): special tokens are cut out first, the rest is NFC-normalised, runs of whitespace become
//! one space, lower-cased, split with CLIP's regex, mapped byte -> printable char, and BPE-merged
//! with a `</w>` suffix on each word's last symbol. Then `<|startoftext|> ... <|endoftext|>`,
//! truncated and padded to `model_max_length` with the pad token of the files (SD 1.x pads with
//! `<|endoftext|>`, SD 2.x with `!`).
use anyhow::{bail, Context, Result};
use regex::Regex;
use serde_json::Value;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use unicode_normalization::UnicodeNormalization;

/// CLIP's pre-tokenisation pattern (applied to normalised, lower-cased text).
const SPLIT_PATTERN: &str =
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";
/// The byte-level pre-tokeniser's GPT-2 pattern, which tokenizers applies again to each CLIP
/// piece (pieces hold no whitespace, so its space alternatives are left out). It only changes
/// a literal special token that was not matched as one, e.g. `<|ENDOFTEXT|>` -> `<|`, `endoftext`, `|>`.
const BYTE_LEVEL_PATTERN: &str = r"'s|'t|'re|'ve|'m|'ll|'d|\p{L}+|\p{N}+|[^\s\p{L}\p{N}]+";
const WORD_END: &str = "</w>";
const DEFAULT_BOS: &str = "<|startoftext|>";
const DEFAULT_EOS: &str = "<|endoftext|>";
const DEFAULT_MAX_LENGTH: usize = 77;
/// Pre-token cache bound: prompts repeat words, but a long-running server must not grow forever.
const CACHE_LIMIT: usize = 65_536;

/// A token matched literally in the text before BPE (bos, eos, pad, unk and other added tokens).
#[derive(Debug, Clone)]
struct SpecialToken {
    content: String,
    id: u32,
    /// Matched in the normalised (lower-cased) text rather than the raw text.
    normalized: bool,
}

pub struct ClipTokenizer {
    vocab: HashMap<String, u32>,
    /// (left, right) -> merge rank; lower merges first.
    ranks: HashMap<(String, String), usize>,
    byte_chars: [char; 256],
    split: Regex,
    byte_level: Regex,
    whitespace: Regex,
    specials: Vec<SpecialToken>,
    bos_id: u32,
    eos_id: u32,
    pad_id: u32,
    unk_id: u32,
    max_length: usize,
    cache: Mutex<HashMap<String, Vec<u32>>>,
}

impl ClipTokenizer {
    /// Loads `tokenizer/` of a diffusers folder: vocab.json + merges.txt, or tokenizer.json;
    /// pad token from special_tokens_map.json / tokenizer_config.json.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let files = TokenizerFiles::read(dir)?;
        let (vocab, merges, added) = if dir.join("vocab.json").exists() {
            let vocab_path = dir.join("vocab.json");
            let merges_path = dir.join("merges.txt");
            let vocab = parse_vocab(&read_json(&vocab_path)?, &vocab_path.display().to_string())?;
            let text = std::fs::read_to_string(&merges_path)
                .with_context(|| format!("cannot read {}", merges_path.display()))?;
            let merges = parse_merges_txt(&text, &merges_path.display().to_string())?;
            (vocab, merges, Vec::new())
        } else if let Some(json) = &files.tokenizer_json {
            let what = dir.join("tokenizer.json").display().to_string();
            parse_tokenizer_json(json, &what)?
        } else {
            bail!(
                "{}: no tokenizer files (need vocab.json + merges.txt, or tokenizer.json)",
                dir.display()
            );
        };
        Self::build(vocab, merges, added, &files, &dir.display().to_string())
    }

    fn build(
        vocab: HashMap<String, u32>,
        merges: Vec<(String, String)>,
        added: Vec<SpecialToken>,
        files: &TokenizerFiles,
        what: &str,
    ) -> Result<Self> {
        let mut ranks = HashMap::with_capacity(merges.len());
        for (rank, (a, b)) in merges.into_iter().enumerate() {
            let merged = format!("{a}{b}");
            if !vocab.contains_key(&merged) {
                bail!("{what}: merge #{rank} `{a} {b}` makes `{merged}`, which is not in the vocabulary");
            }
            ranks.entry((a, b)).or_insert(rank);
        }
        let mut specials = added;
        let mut resolve = |name: &str, default: &str| -> Result<u32> {
            let (content, normalized) = files
                .special(name)
                .unwrap_or_else(|| (default.to_string(), None));
            // As transformers: a token written as a plain string is not normalised, and a later
            // definition of the same content (pad after eos) overrides the flag.
            let normalized = normalized.unwrap_or(false);
            if let Some(known) = specials.iter_mut().find(|s| s.content == content) {
                known.normalized = normalized;
                return Ok(known.id);
            }
            let Some(&id) = vocab.get(&content) else {
                bail!("{what}: {name} `{content}` is not in the vocabulary");
            };
            specials.push(SpecialToken {
                content,
                id,
                normalized,
            });
            Ok(id)
        };
        let bos_id = resolve("bos_token", DEFAULT_BOS)?;
        let eos_id = resolve("eos_token", DEFAULT_EOS)?;
        let unk_id = resolve("unk_token", DEFAULT_EOS)?;
        let pad_id = resolve("pad_token", DEFAULT_EOS)?;
        let max_length = files.max_length(what)?;
        Ok(Self {
            vocab,
            ranks,
            byte_chars: bytes_to_unicode(),
            split: Regex::new(SPLIT_PATTERN).expect("valid CLIP pattern"),
            byte_level: Regex::new(BYTE_LEVEL_PATTERN).expect("valid GPT-2 pattern"),
            whitespace: Regex::new(r"\s+").expect("valid pattern"),
            specials,
            bos_id,
            eos_id,
            pad_id,
            unk_id,
            max_length,
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// Token ids with start and end tokens, truncated and padded to `max_length` (77).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let mut ids = Vec::with_capacity(self.max_length);
        ids.push(self.bos_id);
        let content = self.encode_plain(text)?;
        let room = self.max_length.saturating_sub(2);
        ids.extend_from_slice(&content[..content.len().min(room)]);
        ids.push(self.eos_id);
        ids.resize(self.max_length.max(ids.len()), self.pad_id);
        Ok(ids)
    }

    /// Token ids of `text` with start and end tokens, not truncated (how far a long prompt
    /// goes beyond [`Self::max_length`]).
    pub fn encode_full(&self, text: &str) -> Result<Vec<u32>> {
        let mut ids = vec![self.bos_id];
        ids.extend(self.encode_plain(text)?);
        ids.push(self.eos_id);
        Ok(ids)
    }

    /// `Some(tokens)` when `text` has more tokens (start and end included) than the text
    /// encoder reads, so [`Self::encode`] cuts it.
    pub fn cut(&self, text: &str) -> Result<Option<usize>> {
        let n = self.encode_plain(text)?.len() + 2;
        Ok((n > self.max_length).then_some(n))
    }

    /// Token ids of `text` without start/end/padding (e.g. a category name).
    pub fn encode_plain(&self, text: &str) -> Result<Vec<u32>> {
        let mut ids = Vec::new();
        for (raw_piece, raw_special) in split_specials(text, &self.specials, false) {
            if let Some(id) = raw_special {
                ids.push(id);
                continue;
            }
            let normalized = self.normalize(raw_piece);
            for (piece, special) in split_specials(&normalized, &self.specials, true) {
                match special {
                    Some(id) => ids.push(id),
                    None => {
                        for m in self.split.find_iter(piece) {
                            for word in self.byte_level.find_iter(m.as_str()) {
                                ids.extend(self.bpe_word(word.as_str()));
                            }
                        }
                    }
                }
            }
        }
        Ok(ids)
    }

    /// Positions in `prompt_ids` (as from [`Self::encode`]) of the first occurrence of the tokens
    /// of `phrase`; `None` when the phrase has no tokens or does not occur (e.g. truncated away).
    pub fn token_positions(&self, prompt_ids: &[u32], phrase: &str) -> Option<Vec<usize>> {
        let needle = self.encode_plain(phrase).ok()?;
        if needle.is_empty() || needle.len() > prompt_ids.len() {
            return None;
        }
        let start = prompt_ids
            .windows(needle.len())
            .position(|w| w == needle.as_slice())?;
        Some((start..start + needle.len()).collect())
    }

    pub fn max_length(&self) -> usize {
        self.max_length
    }
    pub fn bos_id(&self) -> u32 {
        self.bos_id
    }
    pub fn eos_id(&self) -> u32 {
        self.eos_id
    }
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }
    pub fn vocab_size(&self) -> usize {
        self.vocab.len()
    }

    /// NFC, whitespace runs -> one space, lower case (char by char, as the tokenizers crate).
    fn normalize(&self, text: &str) -> String {
        let nfc: String = text.nfc().collect();
        let spaced = self.whitespace.replace_all(&nfc, " ");
        spaced.chars().flat_map(char::to_lowercase).collect()
    }

    /// BPE of one pre-token, cached.
    fn bpe_word(&self, word: &str) -> Vec<u32> {
        if let Some(ids) = self.cache.lock().ok().and_then(|c| c.get(word).cloned()) {
            return ids;
        }
        let mut symbols: Vec<String> = word
            .bytes()
            .map(|b| self.byte_chars[b as usize].to_string())
            .collect();
        if let Some(last) = symbols.last_mut() {
            last.push_str(WORD_END);
        }
        while symbols.len() > 1 {
            let best = symbols
                .windows(2)
                .filter_map(|w| self.ranks.get(&(w[0].clone(), w[1].clone())))
                .min();
            let Some(&best) = best else { break };
            let mut merged = Vec::with_capacity(symbols.len());
            let mut i = 0;
            while i < symbols.len() {
                if i + 1 < symbols.len()
                    && self
                        .ranks
                        .get(&(symbols[i].clone(), symbols[i + 1].clone()))
                        == Some(&best)
                {
                    merged.push(format!("{}{}", symbols[i], symbols[i + 1]));
                    i += 2;
                } else {
                    merged.push(std::mem::take(&mut symbols[i]));
                    i += 1;
                }
            }
            symbols = merged;
        }
        let ids: Vec<u32> = symbols
            .iter()
            .map(|s| self.vocab.get(s).copied().unwrap_or(self.unk_id))
            .collect();
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= CACHE_LIMIT {
                cache.clear();
            }
            cache.insert(word.to_string(), ids.clone());
        }
        ids
    }
}

/// Splits `text` at the leftmost-longest occurrences of the special tokens whose `normalized`
/// flag equals `normalized`; pieces between them come with `None`.
fn split_specials<'a>(
    text: &'a str,
    specials: &[SpecialToken],
    normalized: bool,
) -> Vec<(&'a str, Option<u32>)> {
    let mut out = Vec::new();
    let mut rest = 0;
    let mut pos = 0;
    while pos < text.len() {
        let hit = specials
            .iter()
            .filter(|s| s.normalized == normalized && !s.content.is_empty())
            .filter(|s| text[pos..].starts_with(s.content.as_str()))
            .max_by_key(|s| s.content.len());
        match hit {
            Some(s) => {
                if rest < pos {
                    out.push((&text[rest..pos], None));
                }
                out.push((&text[pos..pos + s.content.len()], Some(s.id)));
                pos += s.content.len();
                rest = pos;
            }
            None => pos += text[pos..].chars().next().map_or(1, char::len_utf8),
        }
    }
    if rest < text.len() {
        out.push((&text[rest..], None));
    }
    out
}

/// GPT-2/CLIP's reversible byte -> printable character table.
fn bytes_to_unicode() -> [char; 256] {
    let printable = |b: u32| (33..=126).contains(&b) || (161..=172).contains(&b) || b >= 174;
    let mut table = ['\0'; 256];
    let mut extra = 0;
    for b in 0..256u32 {
        let c = if printable(b) {
            b
        } else {
            extra += 1;
            255 + extra
        };
        table[b as usize] = char::from_u32(c).expect("valid code point");
    }
    table
}

fn read_json(path: &Path) -> Result<Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{}: malformed JSON", path.display()))
}

fn parse_vocab(value: &Value, what: &str) -> Result<HashMap<String, u32>> {
    let Value::Object(map) = value else {
        bail!("{what}: vocabulary must be a JSON object of token -> id")
    };
    map.iter()
        .map(|(k, v)| {
            let id = v
                .as_u64()
                .and_then(|id| u32::try_from(id).ok())
                .with_context(|| format!("{what}: token `{k}` has a non-integer id"))?;
            Ok((k.clone(), id))
        })
        .collect()
}

fn parse_merges_txt(text: &str, what: &str) -> Result<Vec<(String, String)>> {
    let mut merges = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if (i == 0 && line.starts_with("#version")) || line.is_empty() {
            continue;
        }
        let mut parts = line.split(' ');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(a), Some(b), None) if !a.is_empty() && !b.is_empty() => {
                merges.push((a.to_string(), b.to_string()))
            }
            _ => bail!(
                "{what}: line {} is not a merge `left right`: {line:?}",
                i + 1
            ),
        }
    }
    Ok(merges)
}

type JsonModel = (
    HashMap<String, u32>,
    Vec<(String, String)>,
    Vec<SpecialToken>,
);

/// `model.vocab`, `model.merges` (strings "a b" or pairs) and `added_tokens` of a tokenizer.json.
fn parse_tokenizer_json(json: &Value, what: &str) -> Result<JsonModel> {
    let model = json
        .get("model")
        .with_context(|| format!("{what}: missing `model`"))?;
    if let Some(kind) = model.get("type").and_then(Value::as_str) {
        if kind != "BPE" {
            bail!("{what}: model type `{kind}` is not BPE");
        }
    }
    if let Some(suffix) = model.get("end_of_word_suffix").and_then(Value::as_str) {
        if suffix != WORD_END {
            bail!(
                "{what}: end_of_word_suffix `{suffix}` is not `{WORD_END}` (not a CLIP tokenizer)"
            );
        }
    }
    let vocab = parse_vocab(
        model
            .get("vocab")
            .with_context(|| format!("{what}: missing `model.vocab`"))?,
        what,
    )?;
    let Some(Value::Array(raw)) = model.get("merges") else {
        bail!("{what}: missing or malformed `model.merges`")
    };
    let mut merges = Vec::with_capacity(raw.len());
    for (i, m) in raw.iter().enumerate() {
        let pair = match m {
            Value::String(s) => s
                .split_once(' ')
                .map(|(a, b)| (a.to_string(), b.to_string())),
            Value::Array(p) if p.len() == 2 => match (&p[0], &p[1]) {
                (Value::String(a), Value::String(b)) => Some((a.clone(), b.clone())),
                _ => None,
            },
            _ => None,
        };
        merges.push(pair.with_context(|| format!("{what}: merge #{i} is malformed: {m}"))?);
    }
    let mut added = Vec::new();
    if let Some(Value::Array(tokens)) = json.get("added_tokens") {
        for t in tokens {
            let content = t.get("content").and_then(Value::as_str);
            let id = t
                .get("id")
                .and_then(Value::as_u64)
                .and_then(|id| u32::try_from(id).ok());
            let (Some(content), Some(id)) = (content, id) else {
                bail!("{what}: malformed added token {t}");
            };
            added.push(SpecialToken {
                content: content.to_string(),
                id,
                normalized: t
                    .get("normalized")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
            });
        }
    }
    Ok((vocab, merges, added))
}

/// The optional JSON side files of a tokenizer folder.
struct TokenizerFiles {
    special_map: Option<Value>,
    config: Option<Value>,
    tokenizer_json: Option<Value>,
    config_name: String,
}

impl TokenizerFiles {
    fn read(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            bail!("tokenizer folder {} does not exist", dir.display());
        }
        let optional = |name: &str| -> Result<Option<Value>> {
            let path = dir.join(name);
            path.exists().then(|| read_json(&path)).transpose()
        };
        Ok(Self {
            special_map: optional("special_tokens_map.json")?,
            config: optional("tokenizer_config.json")?,
            tokenizer_json: optional("tokenizer.json")?,
            config_name: dir.join("tokenizer_config.json").display().to_string(),
        })
    }

    /// A special token's content (and `normalized` flag when written as a dict), looked up in
    /// special_tokens_map.json, then tokenizer_config.json, then tokenizer.json's padding.
    fn special(&self, name: &str) -> Option<(String, Option<bool>)> {
        let from = |v: &Option<Value>| -> Option<(String, Option<bool>)> {
            match v.as_ref()?.get(name)? {
                Value::String(s) => Some((s.clone(), None)),
                Value::Object(o) => Some((
                    o.get("content")?.as_str()?.to_string(),
                    o.get("normalized").and_then(Value::as_bool),
                )),
                _ => None,
            }
        };
        from(&self.special_map)
            .or_else(|| from(&self.config))
            .or_else(|| {
                (name == "pad_token")
                    .then(|| {
                        self.tokenizer_json
                            .as_ref()?
                            .get("padding")?
                            .get("pad_token")
                    })
                    .flatten()
                    .and_then(Value::as_str)
                    .map(|s| (s.to_string(), None))
            })
    }

    /// `model_max_length` of tokenizer_config.json; 77 when absent or set to transformers'
    /// "unlimited" placeholder (1e30).
    fn max_length(&self, what: &str) -> Result<usize> {
        let Some(v) = self.config.as_ref().and_then(|c| c.get("model_max_length")) else {
            return Ok(DEFAULT_MAX_LENGTH);
        };
        match v.as_u64() {
            Some(n) if (2..=1_000_000).contains(&n) => Ok(n as usize),
            Some(n) if n > 1_000_000 => Ok(DEFAULT_MAX_LENGTH),
            None if v.as_f64().is_some_and(|f| f > 1e6) => Ok(DEFAULT_MAX_LENGTH),
            _ => bail!(
                "{what}: {}: model_max_length must be an integer >= 2, got {v}",
                self.config_name
            ),
        }
    }
}
