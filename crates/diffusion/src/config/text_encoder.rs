//! `text_encoder/config.json` of a transformers `CLIPTextModel`.

use anyhow::{bail, Result};
use std::path::Path;

use super::{config, parse_validated, read_validated, require};

config! {
    /// `text_encoder/config.json` of a transformers `CLIPTextModel`.
    pub struct TextEncoderConfig {
        vocab_size: usize = 49408,
        hidden_size: usize = 512,
        intermediate_size: usize = 2048,
        projection_dim: usize = 512,
        num_hidden_layers: usize = 12,
        num_attention_heads: usize = 8,
        max_position_embeddings: usize = 77,
        hidden_act: String = "quick_gelu".to_string(),
        layer_norm_eps: f64 = 1e-5,
        pad_token_id: Option<u32> = None,
        bos_token_id: Option<u32> = None,
        eos_token_id: Option<u32> = None,
    }
}

/// Generic `PretrainedConfig` bookkeeping that transformers writes into every config; none of it
/// changes inference of a `CLIPTextModel`.
const TRANSFORMERS_BOOKKEEPING: &[&str] = &[
    "architectures",
    "model_type",
    "torch_dtype",
    "dtype",
    "transformers_version",
    "attention_dropout",
    "dropout",
    "initializer_range",
    "initializer_factor",
    "add_cross_attention",
    "bad_words_ids",
    "begin_suppress_tokens",
    "chunk_size_feed_forward",
    "cross_attention_hidden_size",
    "decoder_start_token_id",
    "diversity_penalty",
    "do_sample",
    "early_stopping",
    "encoder_no_repeat_ngram_size",
    "exponential_decay_length_penalty",
    "finetuning_task",
    "forced_bos_token_id",
    "forced_eos_token_id",
    "id2label",
    "is_decoder",
    "is_encoder_decoder",
    "label2id",
    "length_penalty",
    "max_length",
    "min_length",
    "no_repeat_ngram_size",
    "num_beam_groups",
    "num_beams",
    "num_return_sequences",
    "output_attentions",
    "output_hidden_states",
    "output_scores",
    "prefix",
    "problem_type",
    "pruned_heads",
    "remove_invalid_values",
    "repetition_penalty",
    "return_dict",
    "return_dict_in_generate",
    "sep_token_id",
    "suppress_tokens",
    "task_specific_params",
    "temperature",
    "tf_legacy_loss",
    "tie_encoder_decoder",
    "tie_word_embeddings",
    "tokenizer_class",
    "top_k",
    "top_p",
    "torchscript",
    "typical_p",
    "use_bfloat16",
    "gradient_checkpointing",
    "use_cache",
    "output_past",
];

impl TextEncoderConfig {
    pub fn from_file(path: &Path) -> Result<Self> {
        read_validated(path, Self::FIELDS, TRANSFORMERS_BOOKKEEPING, Self::validate)
    }

    pub fn parse(text: &str) -> Result<Self> {
        parse_validated(
            text,
            "text encoder config",
            Self::FIELDS,
            TRANSFORMERS_BOOKKEEPING,
            Self::validate,
        )
    }

    pub fn validate(&self, what: &str) -> Result<()> {
        require(
            matches!(self.hidden_act.as_str(), "quick_gelu" | "gelu"),
            what,
            "hidden_act",
            &self.hidden_act,
        )?;
        if self.num_attention_heads == 0
            || !self.hidden_size.is_multiple_of(self.num_attention_heads)
        {
            bail!(
                "{what}: hidden_size {} is not divisible by num_attention_heads {}",
                self.hidden_size,
                self.num_attention_heads
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn text_encoder_tolerates_transformers_bookkeeping() {
        let text = r#"{"architectures":["CLIPTextModel"],"hidden_act":"gelu","hidden_size":1024,
            "num_attention_heads":16,"num_hidden_layers":23,"torch_dtype":"float32","use_bfloat16":false}"#;
        let cfg = TextEncoderConfig::parse(text).unwrap();
        assert_eq!(cfg.num_hidden_layers, 23);
        assert!(TextEncoderConfig::parse(r#"{"hidden_act":"relu"}"#).is_err());
    }
}
