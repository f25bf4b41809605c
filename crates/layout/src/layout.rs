//! The native layout format (docs/design.md section 3) and its validation.

use std::path::Path;

use serde::{Deserialize, Deserializer, Serialize};

use crate::bbox::BBox;
use crate::error::{LayoutError, LayoutWarning, Problem};
use crate::grid::Grid;
use crate::region::RegionMap;
use crate::text;

/// One generation request: a prompt, an image size and the boxes that say where things go.
///
/// ```json
/// {"prompt": "a dog and a car on a street", "width": 512, "height": 512, "seed": 7,
///  "objects": [{"phrase": "a brown dog", "category": "dog", "bbox": [0.1, 0.4, 0.45, 0.9]},
///              {"phrase": "a red car", "category": "car", "bbox": [0.5, 0.3, 0.95, 0.8]}]}
/// ```
/// Unknown fields are errors (a misspelt `"sede"` must not silently fall back to a random seed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Layout {
    /// Names the layout in a batch (JSONL); a string or an integer (COCO image ids) in the file,
    /// kept as text. Optional anywhere.
    #[serde(
        default,
        deserialize_with = "string_or_integer",
        skip_serializing_if = "Option::is_none"
    )]
    pub id: Option<String>,
    pub prompt: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub negative_prompt: Option<String>,
    /// Image size in pixels. Whether the model accepts it (multiples of 8, ...) is the
    /// pipeline's business; here it only has to be positive. A file may leave out both, when
    /// read with the model's native size ([`Layout::from_json_sized`]).
    pub width: u32,
    pub height: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    pub objects: Vec<LayoutObject>,
}

/// Where a layout's pixel size came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SizeFrom {
    /// The layout's own `width` and `height`.
    Layout,
    /// The model's native size (the layout gave none).
    Model,
    /// Flags (`--width`/`--height`, a prompt without a layout).
    Flag,
}

/// One box of a layout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayoutObject {
    /// How the prompt describes the object ("a brown dog"); what Paint/Soft guidance attends to.
    pub phrase: String,
    /// The ticket-store key ("dog"); required in the native format because tickets are selected
    /// by it. Importers derive it when the source has none (see [`crate::derive_category`]).
    pub category: String,
    pub bbox: BBox,
}

impl LayoutObject {
    pub fn new(phrase: impl Into<String>, category: impl Into<String>, bbox: BBox) -> Self {
        LayoutObject {
            phrase: phrase.into(),
            category: category.into(),
            bbox,
        }
    }
}

fn string_or_integer<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Id {
        Text(String),
        Unsigned(u64),
        Signed(i64),
    }
    let id: Option<Id> = Option::deserialize(d)
        .map_err(|_| serde::de::Error::custom("invalid type: expected a string or an integer"))?;
    Ok(id.map(|id| match id {
        Id::Text(s) => s,
        Id::Unsigned(n) => n.to_string(),
        Id::Signed(n) => n.to_string(),
    }))
}

impl Layout {
    /// A layout with the given prompt, size and objects (not yet validated).
    pub fn new(
        prompt: impl Into<String>,
        width: u32,
        height: u32,
        objects: Vec<LayoutObject>,
    ) -> Self {
        Layout {
            id: None,
            prompt: prompt.into(),
            negative_prompt: None,
            width,
            height,
            seed: None,
            objects,
        }
    }

    /// Parse and validate one layout from JSON text.
    pub fn from_json(text: &str) -> Result<Self, LayoutError> {
        let mut de = serde_json::Deserializer::from_str(text);
        let layout: Layout =
            serde_path_to_error::deserialize(&mut de).map_err(LayoutError::from_serde)?;
        de.end().map_err(|e| LayoutError::from_json(None, e))?;
        layout.validate()?;
        Ok(layout)
    }

    /// Read and validate one layout from a JSON file; errors name the file.
    pub fn from_path(path: impl AsRef<Path>) -> Result<Self, LayoutError> {
        let path = path.as_ref();
        let text = read_text(path)?;
        Layout::from_json(&text).map_err(|e| e.in_file(path))
    }

    /// [`Layout::from_json`], where a layout that gives neither `width` nor `height` (GLIGEN
    /// inputs and COCO-style layouts carry no pixel size) gets `native` (width, height), the
    /// model's own size. Also says which: [`SizeFrom`].
    pub fn from_json_sized(
        text: &str,
        native: (u32, u32),
    ) -> Result<(Self, SizeFrom), LayoutError> {
        let err = match Layout::from_json(text) {
            Ok(l) => return Ok((l, SizeFrom::Layout)),
            Err(e) => e,
        };
        let Ok(serde_json::Value::Object(mut map)) = serde_json::from_str(text) else {
            return Err(err);
        };
        if map.contains_key("width") || map.contains_key("height") {
            return Err(err);
        }
        map.insert("width".into(), native.0.into());
        map.insert("height".into(), native.1.into());
        let layout = Layout::from_json(&serde_json::Value::Object(map).to_string())?;
        Ok((layout, SizeFrom::Model))
    }

    /// [`Layout::from_json_sized`] of a file; errors name the file.
    pub fn from_path_sized(
        path: impl AsRef<Path>,
        native: (u32, u32),
    ) -> Result<(Self, SizeFrom), LayoutError> {
        let path = path.as_ref();
        let text = read_text(path)?;
        Layout::from_json_sized(&text, native).map_err(|e| e.in_file(path))
    }

    /// Pretty JSON in the native format (what `from_json` reads back).
    pub fn to_json_pretty(&self) -> String {
        serde_json::to_string_pretty(self).expect("a layout always serialises")
    }

    /// One-line JSON, for JSONL.
    pub fn to_json_line(&self) -> String {
        serde_json::to_string(self).expect("a layout always serialises")
    }

    /// Check every rule of the format; the first broken one is returned, naming its field.
    pub fn validate(&self) -> Result<(), LayoutError> {
        if self.prompt.trim().is_empty() {
            return Err(LayoutError::invalid("prompt", Problem::Empty));
        }
        if self.width == 0 {
            return Err(LayoutError::invalid("width", Problem::Zero));
        }
        if self.height == 0 {
            return Err(LayoutError::invalid("height", Problem::Zero));
        }
        if self.objects.is_empty() {
            return Err(LayoutError::invalid("objects", Problem::NoObjects));
        }
        for (i, o) in self.objects.iter().enumerate() {
            if o.phrase.trim().is_empty() {
                return Err(LayoutError::invalid(
                    format!("objects[{i}].phrase"),
                    Problem::Empty,
                ));
            }
            if o.category.trim().is_empty() {
                return Err(LayoutError::invalid(
                    format!("objects[{i}].category"),
                    Problem::Empty,
                ));
            }
            o.bbox.check(&format!("objects[{i}].bbox"))?;
        }
        Ok(())
    }

    /// Validate, then list what is suspicious but allowed.
    pub fn check(&self) -> Result<Vec<LayoutWarning>, LayoutError> {
        self.validate()?;
        Ok(self.warnings())
    }

    /// Suspicious but allowed: categories the prompt does not name (see [`crate::text::names`]
    /// for the matching rule).
    pub fn warnings(&self) -> Vec<LayoutWarning> {
        self.objects
            .iter()
            .enumerate()
            .filter(|(_, o)| !text::names(&self.prompt, &o.category))
            .map(|(i, o)| LayoutWarning::CategoryNotInPrompt {
                object: i,
                category: o.category.clone(),
            })
            .collect()
    }

    pub fn boxes(&self) -> Vec<BBox> {
        self.objects.iter().map(|o| o.bbox).collect()
    }

    /// The distinct categories, in order of first appearance (the ticket categories C).
    pub fn categories(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for o in &self.objects {
            if !out.contains(&o.category) {
                out.push(o.category.clone());
            }
        }
        out
    }

    /// The objects' cells on `grid`, overlaps resolved (see the crate docs for the rules).
    pub fn region_map(&self, grid: Grid) -> RegionMap {
        RegionMap::new(grid, &self.boxes())
    }
}

pub(crate) fn read_text(path: &Path) -> Result<String, LayoutError> {
    std::fs::read_to_string(path).map_err(|source| LayoutError::Io {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_layout_without_a_size_takes_the_native_one() {
        let text = r#"{"prompt": "a cat", "objects": [{"phrase": "a cat", "category": "cat", "bbox": [0.1, 0.1, 0.5, 0.5]}]}"#;
        assert!(Layout::from_json(text).is_err());
        let (l, from) = Layout::from_json_sized(text, (512, 512)).unwrap();
        assert_eq!((l.width, l.height, from), (512, 512, SizeFrom::Model));
        let sized = text.replace("\"objects\"", "\"width\": 64, \"height\": 32, \"objects\"");
        let sized = sized.as_str();
        let (l, from) = Layout::from_json_sized(sized, (512, 512)).unwrap();
        assert_eq!((l.width, l.height, from), (64, 32, SizeFrom::Layout));
        // Half a size is not filled in; other errors stay as they were.
        let half = text.replace("\"objects\"", "\"width\": 64, \"objects\"");
        let half = half.as_str();
        let e = Layout::from_json_sized(half, (512, 512))
            .unwrap_err()
            .to_string();
        assert!(e.contains("height"), "{e}");
        assert!(Layout::from_json_sized("{", (8, 8)).is_err());
    }

    const GOOD: &str = r#"{"prompt": "a dog and a red car on a street", "negative_prompt": "blurry",
        "width": 512, "height": 384, "seed": 7,
        "objects": [{"phrase": "a brown dog", "category": "dog", "bbox": [0.1, 0.4, 0.45, 0.9]},
                    {"phrase": "a red car", "category": "car", "bbox": [0.5, 0.3, 0.95, 0.8]}]}"#;

    fn err(text: &str) -> String {
        Layout::from_json(text).unwrap_err().to_string()
    }

    /// GOOD with `from` replaced by `to` (exactly once).
    fn good_with(from: &str, to: &str) -> String {
        assert_eq!(GOOD.matches(from).count(), 1, "{from}");
        GOOD.replace(from, to)
    }

    #[test]
    fn parses_a_good_file() {
        let l = Layout::from_json(GOOD).unwrap();
        assert_eq!(l.prompt, "a dog and a red car on a street");
        assert_eq!(l.negative_prompt.as_deref(), Some("blurry"));
        assert_eq!((l.width, l.height, l.seed), (512, 384, Some(7)));
        assert_eq!(l.objects.len(), 2);
        assert_eq!(l.objects[1].category, "car");
        assert_eq!(l.objects[0].bbox, BBox::new(0.1, 0.4, 0.45, 0.9).unwrap());
        assert_eq!(l.categories(), vec!["dog".to_string(), "car".to_string()]);
        assert!(l.check().unwrap().is_empty());
        // Round trip through our own writer, pretty and one-line.
        assert_eq!(Layout::from_json(&l.to_json_pretty()).unwrap(), l);
        assert_eq!(Layout::from_json(&l.to_json_line()).unwrap(), l);
    }

    #[test]
    fn optional_fields_may_be_left_out() {
        let text = r#"{"prompt": "a cat", "width": 64, "height": 64,
            "objects": [{"phrase": "a cat", "category": "cat", "bbox": [0, 0, 1, 1]}]}"#;
        let l = Layout::from_json(text).unwrap();
        assert_eq!(
            (l.seed, l.negative_prompt.clone(), l.id.clone()),
            (None, None, None)
        );
        // Absent optionals are not written back as nulls.
        assert!(!l.to_json_line().contains("null"));
    }

    #[test]
    fn id_may_be_text_or_integer() {
        let with = |id: &str| good_with("\"seed\": 7", &format!("\"seed\": 7, \"id\": {id}"));
        assert_eq!(
            Layout::from_json(&with("\"a-1\"")).unwrap().id.as_deref(),
            Some("a-1")
        );
        assert_eq!(
            Layout::from_json(&with("139")).unwrap().id.as_deref(),
            Some("139")
        );
        let e = err(&with("[1]"));
        assert!(
            e.contains("id: invalid type: expected a string or an integer"),
            "{e}"
        );
    }

    #[test]
    fn rejects_unknown_fields_naming_them() {
        let e = err(&good_with("\"seed\": 7", "\"sede\": 7"));
        assert!(e.starts_with("line 2, column "), "{e}");
        assert!(e.contains("unknown field `sede`"), "{e}");
        let e = err(&good_with(
            "\"category\": \"car\"",
            "\"category\": \"car\", \"colour\": \"red\"",
        ));
        assert!(
            e.contains("objects[1].colour: unknown field `colour`"),
            "{e}"
        );
    }

    #[test]
    fn rejects_missing_and_mistyped_fields_naming_them() {
        let e = err(&good_with("\"category\": \"dog\", ", ""));
        assert!(e.contains("objects[0]: missing field `category`"), "{e}");
        let e = err(&good_with("\"width\": 512", "\"width\": 512.5"));
        assert!(
            e.contains("width: invalid type: floating point `512.5`"),
            "{e}"
        );
        let e = err(&good_with("\"seed\": 7", "\"seed\": -7"));
        assert!(e.contains("seed: invalid value: integer `-7`"), "{e}");
        let e = err(&good_with("[0.5, 0.3, 0.95, 0.8]", "[0.5, 0.3, 0.95]"));
        assert!(e.contains("objects[1].bbox: invalid length 3"), "{e}");
        let e = err(&good_with(
            "[0.5, 0.3, 0.95, 0.8]",
            "[0.5, \"0.3\", 0.95, 0.8]",
        ));
        assert!(
            e.contains("objects[1].bbox[1]: invalid type: string \"0.3\""),
            "{e}"
        );
        let e = err(&good_with("\"prompt\": ", "\"text\": "));
        assert!(e.contains("unknown field `text`"), "{e}");
    }

    #[test]
    fn rejects_bad_json_with_its_position() {
        let e = err("{\"prompt\": \"a dog\",\n \"width\": 512,, }");
        assert_eq!(e, "line 2, column 15: key must be a string");
        let e = err(&format!("{GOOD} {{}}"));
        assert!(e.contains("trailing characters"), "{e}");
    }

    #[test]
    fn validation_names_the_field() {
        let cases = [
            (
                "\"prompt\": \"a dog and a red car on a street\"",
                "\"prompt\": \"  \"",
                "prompt: must not be empty",
            ),
            (
                "\"width\": 512",
                "\"width\": 0",
                "width: must be greater than 0",
            ),
            (
                "\"height\": 384",
                "\"height\": 0",
                "height: must be greater than 0",
            ),
            (
                "\"phrase\": \"a red car\"",
                "\"phrase\": \"\"",
                "objects[1].phrase: must not be empty",
            ),
            (
                "\"category\": \"dog\"",
                "\"category\": \" \"",
                "objects[0].category: must not be empty",
            ),
            (
                "[0.5, 0.3, 0.95, 0.8]",
                "[0.5, 0.3, 1.2, 0.8]",
                "objects[1].bbox[2]: x1 = 1.2 is outside [0, 1]",
            ),
            (
                "[0.5, 0.3, 0.95, 0.8]",
                "[0.5, -0.01, 0.95, 0.8]",
                "objects[1].bbox[1]: y0 = -0.01 is outside [0, 1]",
            ),
            (
                "[0.1, 0.4, 0.45, 0.9]",
                "[0.45, 0.4, 0.1, 0.9]",
                "objects[0].bbox: x0 = 0.45 must be less than x1 = 0.1",
            ),
            (
                "[0.1, 0.4, 0.45, 0.9]",
                "[0.1, 0.4, 0.1, 0.9]",
                "objects[0].bbox: x0 = 0.1 must be less than x1 = 0.1",
            ),
            (
                "[0.1, 0.4, 0.45, 0.9]",
                "[0.1, 0.9, 0.45, 0.4]",
                "objects[0].bbox: y0 = 0.9 must be less than y1 = 0.4",
            ),
        ];
        for (from, to, want) in cases {
            assert_eq!(err(&good_with(from, to)), want, "{to}");
        }
        let no_objects = r#"{"prompt": "a dog", "width": 8, "height": 8, "objects": []}"#;
        assert_eq!(err(no_objects), "objects: must contain at least one object");
    }

    #[test]
    fn validation_catches_nan_built_in_code() {
        // JSON cannot spell NaN, but code can build one.
        let mut l = Layout::from_json(GOOD).unwrap();
        l.objects[1].bbox.x0 = f64::NAN;
        let e = l.validate().unwrap_err();
        assert_eq!(
            e.to_string(),
            "objects[1].bbox[0]: x0 is NaN, not a finite number"
        );
        assert_eq!(e.field(), Some("objects[1].bbox[0]"));
        assert_eq!(e.line(), None);
        let e = err(&good_with("0.95", "NaN"));
        assert!(e.contains("expected value"), "{e}");
    }

    #[test]
    fn category_missing_from_prompt_is_a_warning() {
        let l = Layout::from_json(&good_with(
            "\"category\": \"car\"",
            "\"category\": \"truck\"",
        ))
        .unwrap();
        let w = l.check().unwrap();
        assert_eq!(
            w,
            vec![LayoutWarning::CategoryNotInPrompt {
                object: 1,
                category: "truck".into()
            }]
        );
        assert_eq!(
            w[0].to_string(),
            "objects[1].category: \"truck\" is not named in the prompt"
        );
    }

    #[test]
    fn file_errors_name_the_file() {
        let dir = std::env::temp_dir().join(format!("semi-layout-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bad.json");
        std::fs::write(&path, good_with("\"width\": 512", "\"width\": 0")).unwrap();
        let e = Layout::from_path(&path).unwrap_err().to_string();
        assert_eq!(
            e,
            format!("{}: width: must be greater than 0", path.display())
        );
        let missing = dir.join("missing.json");
        let e = Layout::from_path(&missing).unwrap_err().to_string();
        assert!(e.starts_with(&format!("{}: ", missing.display())), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
