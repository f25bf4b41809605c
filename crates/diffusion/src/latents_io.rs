//! Initial latents on disk (docs/design.md section 3), the one implementation every crate uses:
//! safetensors with the key `latents`, or `.npy`, f32 `[N, C, h, w]`, so diffusers users can pass
//! them as `latents=` (and `np.save(path, latents.numpy())` files load here). Written atomically.
//!
//! Safetensors files carry the caller's metadata as one `__metadata__` entry `semi` holding a
//! JSON object with sorted keys (one entry, so the file bytes do not depend on hash order).
//! The `.npy` reader is deliberately tiny: little-endian f32 in C order is what diffusers users
//! produce, and anything else gets a clear error instead of a silent conversion.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::Path;

use anyhow::{bail, ensure, Context, Result};
use candle_core::{DType, Device, Tensor};
use safetensors::{tensor::TensorView, Dtype, SafeTensors};

use crate::image::write_atomic;

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() * 4);
    for v in values {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

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

/// Refuse a latents path whose extension names no format semi writes (`.safetensors`, `.npy`),
/// so a file never carries bytes other than its name says.
pub fn check_latents_path(path: &Path) -> Result<()> {
    let ok = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("safetensors") || e.eq_ignore_ascii_case("npy"));
    ensure!(
        ok,
        "{}: latents are written as .safetensors or .npy; name the file with one of them",
        path.display()
    );
    Ok(())
}

/// The bytes of [`save_latents`]: `.npy` as NumPy, `.safetensors` with the key `latents`.
pub fn latents_bytes(
    path: &Path,
    data: &[f32],
    shape: &[usize],
    metadata: &BTreeMap<String, String>,
) -> Result<Vec<u8>> {
    check_latents_path(path)?;
    check_shape(data, shape)?;
    if is_npy(path) {
        Ok(npy_bytes(data, shape))
    } else {
        safetensors_bytes(data, shape, metadata)
    }
}

/// Save by extension (see [`latents_bytes`]); other extensions are refused.
pub fn save_latents(
    path: &Path,
    data: &[f32],
    shape: &[usize],
    metadata: &BTreeMap<String, String>,
) -> Result<()> {
    let bytes = latents_bytes(path, data, shape, metadata)?;
    write_atomic(path, |f| Ok(f.write_all(&bytes)?))
        .with_context(|| format!("cannot save latents to {}", path.display()))
}

/// Latents as an f32 CPU tensor (any `latents` safetensors dtype that candle reads, or `.npy`).
pub fn read_latents(path: &Path) -> Result<Tensor> {
    let l = load_latents(path)?;
    Ok(Tensor::from_vec(l.data, l.shape, &Device::Cpu)?)
}

/// Write a tensor's values (converted to f32) with [`save_latents`] and no metadata.
pub fn write_latents(path: &Path, latents: &Tensor) -> Result<()> {
    let (data, shape) = tensor_values(latents)?;
    save_latents(path, &data, &shape, &BTreeMap::new())
}

/// The bytes [`write_latents`] writes.
pub fn tensor_latents_bytes(path: &Path, latents: &Tensor) -> Result<Vec<u8>> {
    let (data, shape) = tensor_values(latents)?;
    latents_bytes(path, &data, &shape, &BTreeMap::new())
}

fn tensor_values(latents: &Tensor) -> Result<(Vec<f32>, Vec<usize>)> {
    let t = latents
        .to_device(&Device::Cpu)?
        .to_dtype(DType::F32)?
        .contiguous()?;
    let shape = t.dims().to_vec();
    Ok((t.flatten_all()?.to_vec1::<f32>()?, shape))
}

/// Load latents saved by [`save_latents`] (or any f32 `latents` safetensors / `<f4` C-order npy).
pub fn load_latents(path: &Path) -> Result<Latents> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("cannot read latents from {}", path.display()))?;
    let parsed = if is_npy(path) {
        parse_npy(&bytes).map(|(shape, data)| Latents {
            data,
            shape,
            metadata: BTreeMap::new(),
        })
    } else {
        parse_safetensors(&bytes)
    };
    parsed.with_context(|| format!("cannot read latents from {}", path.display()))
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
    let st = SafeTensors::deserialize(bytes).context("not a readable safetensors file")?;
    let t = st.tensor("latents").map_err(|_| {
        let mut keys = st.names();
        keys.sort();
        let keys: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
        anyhow::anyhow!("no tensor named `latents` (found: {})", keys.join(", "))
    })?;
    let data: Vec<f32> = if t.dtype() == Dtype::F32 {
        t.data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    } else {
        // Half-precision (or f64) latents from other tools: convert, as diffusers would.
        candle_core::safetensors::load_buffer(bytes, &Device::Cpu)
            .and_then(|mut m| {
                let x = m.remove("latents").expect("checked above");
                x.to_dtype(DType::F32)?.flatten_all()?.to_vec1()
            })
            .with_context(|| format!("cannot convert `latents` of dtype {:?} to f32", t.dtype()))?
    };
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

/// `np.save` of a C-order little-endian f32 array (format version 1.0).
pub fn npy_bytes(data: &[f32], shape: &[usize]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape_str = match dims.len() {
        1 => format!("({},)", dims[0]),
        _ => format!("({})", dims.join(", ")),
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape_str}, }}");
    // magic(6) + version(2) + len(2) + header + '\n' is a multiple of 64.
    while !(10 + header.len() + 1).is_multiple_of(64) {
        header.push(' ');
    }
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + data.len() * 4);
    out.extend(b"\x93NUMPY\x01\x00");
    out.extend((header.len() as u16).to_le_bytes());
    out.extend(header.as_bytes());
    for v in data {
        out.extend(v.to_le_bytes());
    }
    out
}

/// Parses an `.npy` file holding a C-order little-endian f32 array.
pub fn parse_npy(bytes: &[u8]) -> Result<(Vec<usize>, Vec<f32>)> {
    ensure!(
        bytes.len() >= 10 && &bytes[..6] == b"\x93NUMPY",
        "not a .npy file"
    );
    let (header_len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 => {
            ensure!(bytes.len() >= 12, "truncated .npy header");
            (
                u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
                12,
            )
        }
        v => bail!("unsupported .npy format version {v}"),
    };
    let end = start + header_len;
    ensure!(bytes.len() >= end, "truncated .npy header");
    let header = std::str::from_utf8(&bytes[start..end]).context("bad .npy header")?;
    let descr = header_value(header, "descr")?;
    let descr = descr.trim_matches(|c| c == '\'' || c == '"');
    if descr != "<f4" {
        bail!("the array has dtype {descr}; latents must be float32 little endian ('<f4'), e.g. np.save(path, latents.astype(np.float32))");
    }
    if header_value(header, "fortran_order")? != "False" {
        bail!("the array is in Fortran order; save it in C order (np.ascontiguousarray)");
    }
    let shape_str = header_value(header, "shape")?;
    let shape: Vec<usize> = shape_str
        .trim_start_matches('(')
        .trim_end_matches(')')
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse()
                .with_context(|| format!("bad .npy shape {shape_str}"))
        })
        .collect::<Result<_>>()?;
    let n: usize = shape.iter().product();
    let body = &bytes[end..];
    ensure!(
        body.len() == n * 4,
        "the .npy data has {} bytes, but shape {shape:?} needs {}",
        body.len(),
        n * 4
    );
    let data = body
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Ok((shape, data))
}

/// The raw text of `key`'s value in a numpy header dict (`{'descr': '<f4', 'shape': (1, 4), }`).
fn header_value<'a>(header: &'a str, key: &str) -> Result<&'a str> {
    let pat_single = format!("'{key}':");
    let pat_double = format!("\"{key}\":");
    let pos = header
        .find(&pat_single)
        .map(|p| p + pat_single.len())
        .or_else(|| header.find(&pat_double).map(|p| p + pat_double.len()))
        .with_context(|| format!(".npy header has no `{key}`"))?;
    let rest = header[pos..].trim_start();
    let len = if rest.starts_with('(') {
        rest.find(')').map(|i| i + 1)
    } else {
        rest.find([',', '}'])
    }
    .with_context(|| format!("bad .npy header value for `{key}`"))?;
    Ok(rest[..len].trim())
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

    #[test]
    fn npy_round_trip_and_numpy_header() {
        let data: Vec<f32> = (0..24).map(|i| i as f32 * 0.5 - 3.0).collect();
        let bytes = npy_bytes(&data, &[1, 2, 3, 4]);
        // np.save writes 224 bytes here: a 118-byte header (10 + 118 = 128) and 96 data bytes.
        assert_eq!(bytes.len(), 224);
        assert_eq!(&bytes[..10], b"\x93NUMPY\x01\x00\x76\x00");
        // The exact bytes np.save writes for this dtype/shape (header padded to a multiple of 64 bytes).
        let header = std::str::from_utf8(&bytes[10..128]).unwrap();
        assert_eq!(
            header.trim_end(),
            "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 2, 3, 4), }"
        );
        assert!(header.ends_with('\n'));
        let (shape, back) = parse_npy(&bytes).unwrap();
        assert_eq!(shape, vec![1, 2, 3, 4]);
        assert_eq!(back, data);
        let (shape, _) = parse_npy(&npy_bytes(&[0.0; 5], &[5])).unwrap();
        assert_eq!(shape, vec![5]);
    }

    #[test]
    fn npy_rejections() {
        let mut f8 = npy_bytes(&[1.0, 2.0], &[2]);
        let pos = f8.windows(3).position(|w| w == b"<f4").unwrap();
        f8[pos + 2] = b'8';
        let err = parse_npy(&f8).unwrap_err().to_string();
        assert!(err.contains("<f8"), "{err}");
        let mut fortran = npy_bytes(&[1.0, 2.0], &[2]);
        let pos = fortran.windows(5).position(|w| w == b"False").unwrap();
        fortran[pos..pos + 5].copy_from_slice(b"True ");
        assert!(parse_npy(&fortran).is_err());
        let mut short = npy_bytes(&[1.0, 2.0], &[2]);
        short.pop();
        assert!(parse_npy(&short)
            .unwrap_err()
            .to_string()
            .contains("needs 8"));
        assert!(parse_npy(b"garbage").is_err());
    }

    #[test]
    fn latents_files_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let t = Tensor::arange(0f32, 32.0, &Device::Cpu)
            .unwrap()
            .reshape((1, 2, 4, 4))
            .unwrap();
        for name in ["l.safetensors", "l.npy"] {
            let p = dir.path().join(name);
            write_latents(&p, &t).unwrap();
            let back = read_latents(&p).unwrap();
            assert_eq!(back.dims(), t.dims());
            assert_eq!(
                back.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
            );
        }
        // candle reads our safetensors too (format check).
        let m =
            candle_core::safetensors::load(dir.path().join("l.safetensors"), &Device::Cpu).unwrap();
        assert_eq!(m["latents"].dims(), &[1, 2, 4, 4]);
        let other = dir.path().join("o.safetensors");
        candle_core::safetensors::save(
            &[("noise".to_string(), t.clone())].into_iter().collect(),
            &other,
        )
        .unwrap();
        let err = format!("{:#}", read_latents(&other).unwrap_err());
        assert!(
            err.contains("no tensor named `latents` (found: noise)"),
            "{err}"
        );
    }
}
