//! Errors and warnings. Every error names where the problem is (file line for JSONL, field path
//! such as `objects[2].bbox[0]`) so a user can fix the file without guessing.

use std::fmt;
use std::path::PathBuf;

/// Why a layout (or a file of layouts) was rejected.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LayoutError {
    /// Not valid JSON, or JSON that does not fit the format (wrong type, unknown or missing field).
    #[error("line {line}, column {column}: {}{message}", field_prefix(field))]
    Json {
        line: usize,
        column: usize,
        /// Path of the offending value (`objects[1].bbox`); `None` at the top level.
        field: Option<String>,
        message: String,
    },
    /// Well-formed JSON with a value that breaks a rule of the format.
    #[error("{}{field}: {problem}", line_prefix(*line))]
    Invalid {
        /// Line of a JSONL file; `None` for a single JSON document or a layout built in code.
        line: Option<usize>,
        field: String,
        problem: Problem,
    },
    /// The last line of a JSONL file ends in the middle of a JSON value.
    #[error("line {line}: truncated (the file ends in the middle of a layout)")]
    Truncated { line: usize },
    /// A grid that cannot exist (zero cells, latent size not a multiple of the cell size).
    #[error("invalid grid: {0}")]
    Grid(String),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Any other error, attributed to the file it came from.
    #[error("{}: {error}", path.display())]
    InFile {
        path: PathBuf,
        error: Box<LayoutError>,
    },
}

fn field_prefix(field: &Option<String>) -> String {
    field.as_ref().map(|f| format!("{f}: ")).unwrap_or_default()
}

fn line_prefix(line: Option<usize>) -> String {
    line.map(|l| format!("line {l}: ")).unwrap_or_default()
}

impl LayoutError {
    pub(crate) fn invalid(field: impl Into<String>, problem: Problem) -> Self {
        LayoutError::Invalid {
            line: None,
            field: field.into(),
            problem,
        }
    }

    /// The field path the error is about, when it is about one field.
    pub fn field(&self) -> Option<&str> {
        match self {
            LayoutError::Json { field, .. } => field.as_deref(),
            LayoutError::Invalid { field, .. } => Some(field),
            LayoutError::InFile { error, .. } => error.field(),
            _ => None,
        }
    }

    /// The JSONL line the error is about, when known.
    pub fn line(&self) -> Option<usize> {
        match self {
            LayoutError::Json { line, .. } => Some(*line),
            LayoutError::Invalid { line, .. } => *line,
            LayoutError::Truncated { line } => Some(*line),
            LayoutError::InFile { error, .. } => error.line(),
            _ => None,
        }
    }

    /// Attribute the error to line `line` of a JSONL file (JSON positions are per line there).
    pub(crate) fn at_line(self, line_no: usize) -> Self {
        match self {
            LayoutError::Json {
                column,
                field,
                message,
                ..
            } => LayoutError::Json {
                line: line_no,
                column,
                field,
                message,
            },
            LayoutError::Invalid { field, problem, .. } => LayoutError::Invalid {
                line: Some(line_no),
                field,
                problem,
            },
            other => other,
        }
    }

    pub(crate) fn in_file(self, path: impl Into<PathBuf>) -> Self {
        LayoutError::InFile {
            path: path.into(),
            error: Box::new(self),
        }
    }

    /// Convert a serde error that carries the path of the failing value.
    pub(crate) fn from_serde(err: serde_path_to_error::Error<serde_json::Error>) -> Self {
        // serde_path_to_error writes "." for the document and "?" for a key it could not read.
        let path = err.path().to_string();
        let path = path.trim_end_matches('?').trim_end_matches('.');
        let field = (!path.is_empty()).then(|| path.to_string());
        LayoutError::from_json(field, err.into_inner())
    }

    /// Convert a serde_json error about the value at `field` (`None`: the document).
    pub(crate) fn from_json(field: Option<String>, err: serde_json::Error) -> Self {
        let (line, column) = (err.line(), err.column());
        let mut message = err.to_string();
        // serde_json appends the position; we report it in our own prefix instead.
        let suffix = format!(" at line {line} column {column}");
        if let Some(stripped) = message.strip_suffix(&suffix) {
            message = stripped.to_string();
        }
        LayoutError::Json {
            line,
            column,
            field,
            message,
        }
    }
}

/// What is wrong with a field (the field itself is named by [`LayoutError::Invalid`]).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Problem {
    /// A text that must say something is empty or blank.
    Empty,
    /// The `objects` list is empty: a layout without objects has nothing to control.
    NoObjects,
    /// A size that must be positive is zero.
    Zero,
    /// A coordinate is NaN or infinite.
    NotFinite { name: &'static str, value: f64 },
    /// A normalised coordinate is outside [0, 1].
    OutsideUnit { name: &'static str, value: f64 },
    /// A box's low edge is not strictly below its high edge.
    NotIncreasing {
        low_name: &'static str,
        low: f64,
        high_name: &'static str,
        high: f64,
    },
    /// A pixel box has a width or height that is not positive.
    NotPositive { name: &'static str, value: f64 },
    /// A pixel box reaches more than one pixel outside its image.
    OutsideImage {
        width: f64,
        height: f64,
        xywh: [f64; 4],
    },
    /// Two parallel lists (GLIGEN's `phrases` and `boxes`) differ in length.
    LengthMismatch {
        found: usize,
        other: &'static str,
        expected: usize,
    },
    /// An imported object has no box (InstanceDiffusion points, scribbles and masks).
    MissingBox,
    /// An imported object has neither a phrase nor a category.
    Unnamed,
}

/// A number as a user would write it: `0.25`, `1e308` (not 309 digits), `NaN`.
pub fn short_number(v: f64) -> String {
    if v.is_finite() && v != 0.0 && !(1e-4..1e9).contains(&v.abs()) {
        format!("{v:e}")
    } else {
        format!("{v}")
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = |v: &f64| short_number(*v);
        match self {
            Problem::Empty => write!(f, "must not be empty"),
            Problem::NoObjects => write!(f, "must contain at least one object"),
            Problem::Zero => write!(f, "must be greater than 0"),
            Problem::NotFinite { name, value } => {
                write!(f, "{name} is {}, not a finite number", n(value))
            }
            Problem::OutsideUnit { name, value } => {
                write!(f, "{name} = {} is outside [0, 1]", n(value))
            }
            Problem::NotIncreasing {
                low_name,
                low,
                high_name,
                high,
            } => write!(
                f,
                "{low_name} = {} must be less than {high_name} = {}",
                n(low),
                n(high)
            ),
            Problem::NotPositive { name, value } => {
                write!(f, "{name} = {} must be greater than 0", n(value))
            }
            Problem::OutsideImage {
                width,
                height,
                xywh,
            } => write!(
                f,
                "box [x, y, w, h] = [{}] reaches more than 1 pixel outside the {width}x{height} image",
                xywh.iter().map(n).collect::<Vec<_>>().join(", ")
            ),
            Problem::LengthMismatch {
                found,
                other,
                expected,
            } => write!(
                f,
                "has {found} entries but `{other}` has {expected}; they must pair up one to one"
            ),
            Problem::MissingBox => write!(
                f,
                "no bbox (only boxes are supported, not points, scribbles or masks)"
            ),
            Problem::Unnamed => write!(f, "needs a phrase or a category"),
        }
    }
}

/// The most warnings shown one by one; [`summarize_warnings`] counts the rest.
pub const MAX_WARNINGS_SHOWN: usize = 5;

/// Warnings as the lines to show: the first [`MAX_WARNINGS_SHOWN`], then one line counting the
/// rest (a layout of 200 objects gets 6 lines, not 200).
pub fn summarize_warnings(warnings: &[LayoutWarning]) -> Vec<String> {
    let mut lines: Vec<String> = warnings
        .iter()
        .take(MAX_WARNINGS_SHOWN)
        .map(|w| w.to_string())
        .collect();
    if warnings.len() > MAX_WARNINGS_SHOWN {
        lines.push(format!(
            "... and {} more warnings like these",
            warnings.len() - MAX_WARNINGS_SHOWN
        ));
    }
    lines
}

/// Something suspicious in a valid layout: worth telling the user, not worth refusing.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum LayoutWarning {
    /// The object's category does not occur in the prompt, so the prompt will not steer the
    /// object and its tickets may not match what the model draws there.
    CategoryNotInPrompt { object: usize, category: String },
    /// Smaller (or equal, earlier) boxes took every grid cell the object's box claims, so the
    /// object gets no cells and no tickets.
    NoCells {
        object: usize,
        rows: usize,
        cols: usize,
    },
}

impl fmt::Display for LayoutWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LayoutWarning::CategoryNotInPrompt { object, category } => write!(
                f,
                "objects[{object}].category: \"{category}\" is not named in the prompt"
            ),
            LayoutWarning::NoCells { object, rows, cols } => write!(
                f,
                "objects[{object}].bbox: gets no cell of the {rows}x{cols} grid (smaller boxes \
                 cover every cell it would take); enlarge or move it"
            ),
        }
    }
}
