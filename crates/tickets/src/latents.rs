//! Initial latents on disk (DESIGN.md section 3): safetensors with the key `latents`, or `.npy`,
//! f32 `[N, C, h, w]`, so diffusers users can pass them as `latents=`. Written atomically.
//!
//! Safetensors files carry the caller's metadata as one `__metadata__` entry `semi` holding a
//! JSON object with sorted keys (one entry, so the file bytes do not depend on hash order).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use anyhow::{bail, Context, Result};
use safetensors::{tensor::TensorView, Dtype, SafeTensors};

use crate::fsutil::{f32_bytes, write_atomic};

/// Latents and their shape.
#[derive(Debug, Clone, PartialEq)]
pub struct Latents {
    pub data: Vec<f32>,
    pub shape: Vec<usize>,
    /// The `semi` metadata (safetensors only; empty for `.npy`).
    pub metadata: BTreeMap<String, String>,
}

fn check_shape(data: &[f32], shape: &[usize]) -> Result<()> {
    if shape.iter().product::<usize>() != data.len() {
        bail!(
            "latents shape {shape:?} does not match {} values",
            data.len()
        );
    }
    Ok(())
}

fn is_npy(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("npy"))
}

/// Save by extension: `.npy` as NumPy, anything else as safetensors (key `latents`).
pub fn save_latents(
    path: &Path,
    data: &[f32],
    shape: &[usize],
    metadata: &BTreeMap<String, String>,
) -> Result<()> {
    check_shape(data, shape)?;
    let bytes = if is_npy(path) {
        npy_bytes(data, shape)
    } else {
        safetensors_bytes(data, shape, metadata)?
    };
    write_atomic(path, &bytes).with_context(|| format!("cannot save latents to {}", path.display()))
}

/// Load latents saved by [`save_latents`] (or any f32 `latents` safetensors / `<f4` C-order npy).
pub fn load_latents(path: &Path) -> Result<Latents> {
    let bytes =
        std::fs::read(path).with_context(|| format!("cannot read latents {}", path.display()))?;
    let parsed = if is_npy(path) {
        parse_npy(&bytes)
    } else {
        parse_safetensors(&bytes)
    };
    parsed.with_context(|| format!("cannot load latents from {}", path.display()))
}

/// Safetensors bytes with tensor `latents` (f32) and the `semi` metadata entry.
pub fn safetensors_bytes(
    data: &[f32],
    shape: &[usize],
    metadata: &BTreeMap<String, String>,
) -> Result<Vec<u8>> {
    check_shape(data, shape)?;
    let raw = f32_bytes(data);
    let view = TensorView::new(Dtype::F32, shape.to_vec(), &raw)?;
    let info = (!metadata.is_empty()).then(|| {
        HashMap::from([(
            "semi".to_string(),
            serde_json::to_string(metadata).expect("metadata serialises"),
        )])
    });
    Ok(safetensors::tensor::serialize([("latents", view)], info)?)
}

fn parse_safetensors(bytes: &[u8]) -> Result<Latents> {
    let st = SafeTensors::deserialize(bytes)?;
    let t = st
        .tensor("latents")
        .context("no tensor named `latents` in the file")?;
    if t.dtype() != Dtype::F32 {
        bail!("`latents` is {:?}, expected F32", t.dtype());
    }
    let data: Vec<f32> = t
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let (_, header) = SafeTensors::read_metadata(bytes)?;
    let metadata = match header.metadata().as_ref().and_then(|m| m.get("semi")) {
        Some(json) => serde_json::from_str(json).context("malformed `semi` metadata")?,
        None => BTreeMap::new(),
    };
    Ok(Latents {
        data,
        shape: t.shape().to_vec(),
        metadata,
    })
}

/// NumPy format 1.0, `<f4`, C order.
pub fn npy_bytes(data: &[f32], shape: &[usize]) -> Vec<u8> {
    let dims = match shape.len() {
        1 => format!("({},)", shape[0]),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {dims}, }}");
    // Magic (6) + version (2) + length (2) + header + '\n' padded to a multiple of 64.
    let total = 10 + header.len() + 1;
    header.push_str(&" ".repeat(total.next_multiple_of(64) - total));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + data.len() * 4);
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(&f32_bytes(data));
    out
}

fn parse_npy(bytes: &[u8]) -> Result<Latents> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        bail!("not a .npy file");
    }
    let (len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        v => bail!("unsupported .npy version {v}"),
    };
    let header = std::str::from_utf8(bytes.get(start..start + len).context("truncated header")?)
        .context("header is not text")?;
    let compact: String = header.chars().filter(|c| !c.is_whitespace()).collect();
    if !compact.contains("'descr':'<f4'") {
        bail!("only little-endian f32 (<f4) arrays are supported (header {header:?})");
    }
    if !compact.contains("'fortran_order':False") {
        bail!("only C-order arrays are supported");
    }
    let dims = compact
        .split("'shape':(")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .context("no shape in header")?;
    let shape: Vec<usize> = dims
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().with_context(|| format!("bad dimension {s:?}")))
        .collect::<Result<_>>()?;
    let body = &bytes[start + len..];
    let n: usize = shape.iter().product();
    if body.len() != n * 4 {
        bail!(
            "data has {} bytes, shape {shape:?} needs {}",
            body.len(),
            n * 4
        );
    }
    let data = body
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    Ok(Latents {
        data,
        shape,
        metadata: BTreeMap::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<f32> = (0..2 * 3 * 2 * 2).map(|v| v as f32 * 0.5 - 1.0).collect();
        let shape = [2, 3, 2, 2];
        let meta = BTreeMap::from([("seed".to_string(), "7".to_string())]);
        for name in ["a.safetensors", "a.npy"] {
            let p = dir.path().join(name);
            save_latents(&p, &data, &shape, &meta).unwrap();
            let l = load_latents(&p).unwrap();
            assert_eq!(l.data, data);
            assert_eq!(l.shape, shape);
            if name.ends_with("safetensors") {
                assert_eq!(l.metadata, meta);
            }
        }
        let npy = npy_bytes(&data, &shape);
        assert_eq!((npy.len() - data.len() * 4) % 64, 0);
        assert!(std::str::from_utf8(&npy[10..npy.len() - data.len() * 4])
            .unwrap()
            .contains("'shape': (2, 3, 2, 2)"));
        assert!(save_latents(&dir.path().join("b.npy"), &data, &[5], &meta).is_err());
    }
}
