//! `model_index.json`: which components a pipeline folder holds.

use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// `model_index.json`: which components the pipeline folder holds.
#[derive(Debug, Clone)]
pub struct ModelIndex {
    pub class_name: String,
    /// component name -> (library, class); `None` for components set to `[null, null]`.
    pub components: BTreeMap<String, Option<(String, String)>>,
    pub requires_safety_checker: Option<bool>,
    /// SDXL: an empty negative prompt gives zero embeddings (the pipeline's default is true).
    pub force_zeros_for_empty_prompt: Option<bool>,
}

impl ModelIndex {
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        Self::parse(&text, &path.display().to_string())
    }

    pub fn parse(text: &str, what: &str) -> Result<Self> {
        let value: Value =
            serde_json::from_str(text).with_context(|| format!("{what}: malformed JSON"))?;
        let Value::Object(map) = value else {
            bail!("{what}: expected a JSON object")
        };
        let class_name = map
            .get("_class_name")
            .and_then(Value::as_str)
            .with_context(|| format!("{what}: missing `_class_name`"))?
            .to_string();
        let mut components = BTreeMap::new();
        let mut requires_safety_checker = None;
        let mut force_zeros_for_empty_prompt = None;
        for (k, v) in &map {
            if k.starts_with('_') {
                continue;
            }
            match k.as_str() {
                "requires_safety_checker" => {
                    requires_safety_checker = v.as_bool();
                    continue;
                }
                "force_zeros_for_empty_prompt" => {
                    force_zeros_for_empty_prompt = Some(v.as_bool().with_context(|| {
                        format!("{what}: `force_zeros_for_empty_prompt` must be true or false")
                    })?);
                    continue;
                }
                // The invisible watermark diffusers adds to SDXL images when the package is
                // installed: a property of the PNG, not of the generation; semi adds none.
                "add_watermarker" => continue,
                _ => {}
            }
            let entry = match v {
                Value::Array(a) if a.len() == 2 => match (&a[0], &a[1]) {
                    (Value::String(l), Value::String(c)) => Some((l.clone(), c.clone())),
                    (Value::Null, Value::Null) => None,
                    _ => bail!("{what}: component `{k}` must be [library, class] or [null, null]"),
                },
                _ => bail!("{what}: unsupported field `{k}`"),
            };
            components.insert(k.clone(), entry);
        }
        Ok(Self {
            class_name,
            components,
            requires_safety_checker,
            force_zeros_for_empty_prompt,
        })
    }

    /// The `(library, class)` of a present component.
    pub fn class_of(&self, name: &str) -> Option<&(String, String)> {
        self.components.get(name).and_then(Option::as_ref)
    }

    /// True when the component is present (not absent, not `[null, null]`).
    pub fn has(&self, name: &str) -> bool {
        matches!(self.components.get(name), Some(Some(_)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn model_index_reads_components() {
        let text = r#"{"_class_name":"StableDiffusionPipeline","feature_extractor":[null,null],
            "safety_checker":[null,null],"requires_safety_checker":false,
            "unet":["diffusers","UNet2DConditionModel"],"vae":["diffusers","AutoencoderKL"]}"#;
        let idx = ModelIndex::parse(text, "model_index.json").unwrap();
        assert!(idx.has("unet") && idx.has("vae") && !idx.has("safety_checker"));
    }
}
