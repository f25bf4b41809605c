//! Batches: JSONL, one native layout per line.

use std::path::Path;

use serde_json::error::Category;

use crate::error::LayoutError;
use crate::layout::{read_text, Layout};

/// One layout of a batch and the line it came from (for later messages about it).
#[derive(Debug, Clone, PartialEq)]
pub struct BatchEntry {
    /// 1-based line number in the file.
    pub line: usize,
    pub layout: Layout,
}

/// Parse and validate a JSONL batch. Blank lines are skipped; every other line must be one
/// complete layout. Errors name the line (`line 3: objects[0].bbox[2]: ...`); a last line that
/// stops mid-value is reported as truncated. An empty batch is an error.
pub fn parse_jsonl(text: &str) -> Result<Vec<BatchEntry>, LayoutError> {
    let lines: Vec<&str> = text.lines().collect();
    let last_content = lines.iter().rposition(|l| !l.trim().is_empty());
    let mut out = Vec::new();
    for (i, raw) in lines.iter().enumerate() {
        if raw.trim().is_empty() {
            continue;
        }
        let line = i + 1;
        match Layout::from_json(raw) {
            Ok(layout) => out.push(BatchEntry { line, layout }),
            Err(_) if Some(i) == last_content && ends_early(raw) => {
                return Err(LayoutError::Truncated { line });
            }
            Err(LayoutError::Json {
                column,
                field,
                message,
                ..
            }) if ends_early(raw) => {
                return Err(LayoutError::Json {
                    line,
                    column,
                    field,
                    message: format!("{message} (in JSONL each layout must be on one line)"),
                });
            }
            Err(e) => return Err(e.at_line(line)),
        }
    }
    if out.is_empty() {
        return Err(LayoutError::invalid("batch", crate::error::Problem::Empty));
    }
    Ok(out)
}

/// Whether a line is the beginning of a JSON value that never ends.
fn ends_early(line: &str) -> bool {
    match serde_json::from_str::<serde_json::Value>(line) {
        Err(e) => e.classify() == Category::Eof,
        Ok(_) => false,
    }
}

/// Read and validate a JSONL batch file; errors name the file and the line.
pub fn read_jsonl(path: impl AsRef<Path>) -> Result<Vec<BatchEntry>, LayoutError> {
    let path = path.as_ref();
    let text = read_text(path)?;
    parse_jsonl(&text).map_err(|e| e.in_file(path))
}

/// Read layouts from a file: JSONL when the name ends in `.jsonl`, otherwise one JSON layout
/// (reported as line 1).
pub fn read_layouts(path: impl AsRef<Path>) -> Result<Vec<BatchEntry>, LayoutError> {
    let path = path.as_ref();
    if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("jsonl"))
    {
        read_jsonl(path)
    } else {
        Ok(vec![BatchEntry {
            line: 1,
            layout: Layout::from_path(path)?,
        }])
    }
}

/// Write layouts as JSONL (one line each, newline-terminated).
pub fn to_jsonl<'a>(layouts: impl IntoIterator<Item = &'a Layout>) -> String {
    let mut out = String::new();
    for l in layouts {
        out.push_str(&l.to_json_line());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(id: &str, bbox: &str) -> String {
        format!(
            r#"{{"id": "{id}", "prompt": "a dog", "width": 512, "height": 512, "objects": [{{"phrase": "a dog", "category": "dog", "bbox": {bbox}}}]}}"#
        )
    }

    #[test]
    fn reads_lines_and_skips_blank_ones() {
        let text = format!(
            "{}\n\n{}\n",
            line("a", "[0,0,0.5,0.5]"),
            line("b", "[0.5,0.5,1,1]")
        );
        let batch = parse_jsonl(&text).unwrap();
        assert_eq!(batch.len(), 2);
        assert_eq!(
            (batch[0].line, batch[0].layout.id.as_deref()),
            (1, Some("a"))
        );
        assert_eq!(
            (batch[1].line, batch[1].layout.id.as_deref()),
            (3, Some("b"))
        );
        // Writing and reading back gives the same layouts.
        let layouts: Vec<Layout> = batch.iter().map(|e| e.layout.clone()).collect();
        let again = parse_jsonl(&to_jsonl(&layouts)).unwrap();
        assert_eq!(
            again.iter().map(|e| &e.layout).collect::<Vec<_>>(),
            layouts.iter().collect::<Vec<_>>()
        );
        // No trailing newline is fine when the last line is complete.
        assert_eq!(parse_jsonl(text.trim_end()).unwrap().len(), 2);
    }

    #[test]
    fn bad_line_3_is_named() {
        let text = [
            line("a", "[0,0,0.5,0.5]"),
            line("b", "[0,0,0.5,0.5]"),
            line("c", "[0,0,0.5,1.5]"),
            line("d", "[0,0,0.5,0.5]"),
        ]
        .join("\n");
        let e = parse_jsonl(&text).unwrap_err();
        assert_eq!(
            e.to_string(),
            "line 3: objects[0].bbox[3]: y1 = 1.5 is outside [0, 1]"
        );
        assert_eq!((e.line(), e.field()), (Some(3), Some("objects[0].bbox[3]")));
    }

    #[test]
    fn json_errors_give_line_and_column() {
        let text = [
            line("a", "[0,0,0.5,0.5]"),
            line("b", "[0,0,0.5,0.5]"),
            line("c", "[0,0,0.5,0.5]").replace("\"width\"", "\"widht\""),
        ]
        .join("\n");
        let e = parse_jsonl(&text).unwrap_err().to_string();
        assert!(e.starts_with("line 3, column "), "{e}");
        assert!(e.contains("unknown field `widht`"), "{e}");
        // A layout broken over two lines is not JSONL; it is an error on its first line.
        let text = format!(
            "{}\n{{\"prompt\": \"a dog\",\n \"width\": 8}}\n{}",
            line("a", "[0,0,1,1]"),
            line("b", "[0,0,1,1]")
        );
        let e = parse_jsonl(&text).unwrap_err().to_string();
        assert!(e.starts_with("line 2, column "), "{e}");
        assert!(e.contains("EOF while parsing"), "{e}");
        assert!(
            e.ends_with("(in JSONL each layout must be on one line)"),
            "{e}"
        );
    }

    #[test]
    fn truncated_last_line_is_named() {
        let full = line("b", "[0,0,0.5,0.5]");
        for cut in [full.len() - 1, full.len() / 2, 1] {
            let text = format!("{}\n{}", line("a", "[0,0,0.5,0.5]"), &full[..cut]);
            let e = parse_jsonl(&text).unwrap_err();
            assert_eq!(
                e.to_string(),
                "line 2: truncated (the file ends in the middle of a layout)",
                "cut {cut}"
            );
            // Also when a newline follows the cut.
            let e = parse_jsonl(&format!("{text}\n\n")).unwrap_err();
            assert_eq!(e.line(), Some(2));
        }
    }

    #[test]
    fn empty_batch_is_an_error() {
        assert_eq!(
            parse_jsonl("\n \n").unwrap_err().to_string(),
            "batch: must not be empty"
        );
    }

    #[test]
    fn read_layouts_picks_the_format_by_extension() {
        let dir = std::env::temp_dir().join(format!("semi-layout-jsonl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let batch = dir.join("b.jsonl");
        std::fs::write(
            &batch,
            format!("{}\n{}\n", line("a", "[0,0,1,1]"), line("b", "[0,0,1,1]")),
        )
        .unwrap();
        assert_eq!(read_layouts(&batch).unwrap().len(), 2);
        let single = dir.join("one.json");
        std::fs::write(&single, line("a", "[0,0,1,1]")).unwrap();
        let one = read_layouts(&single).unwrap();
        assert_eq!((one.len(), one[0].line), (1, 1));
        std::fs::write(
            &batch,
            format!("{}\n{}", line("a", "[0,0,1,1]"), "{\"prompt\": "),
        )
        .unwrap();
        let e = read_layouts(&batch).unwrap_err().to_string();
        assert_eq!(
            e,
            format!(
                "{}: line 2: truncated (the file ends in the middle of a layout)",
                batch.display()
            )
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
