//! CLIP byte-level BPE tokenizer (vocab.json + merges.txt), as transformers' CLIPTokenizer.
// SKELETON: owned by the "text" helper; the signatures below are the agreed interface.
use anyhow::Result;
use std::path::Path;

pub struct ClipTokenizer {}

impl ClipTokenizer {
    /// Loads `tokenizer/` of a diffusers folder: vocab.json + merges.txt, or tokenizer.json;
    /// pad token from special_tokens_map.json / tokenizer_config.json.
    pub fn from_dir(_dir: &Path) -> Result<Self> {
        todo!()
    }
    /// Token ids with start and end tokens, truncated and padded to `max_length` (77).
    pub fn encode(&self, _text: &str) -> Result<Vec<u32>> {
        todo!()
    }
    /// Token ids of `text` without start/end/padding (e.g. a category name).
    pub fn encode_plain(&self, _text: &str) -> Result<Vec<u32>> {
        todo!()
    }
    pub fn max_length(&self) -> usize {
        todo!()
    }
}
