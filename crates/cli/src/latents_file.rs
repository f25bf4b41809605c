//! Initial/final latents on disk: safetensors (key `latents`) or numpy `.npy`, both f32.
//!
//! The `.npy` reader and writer are deliberately tiny: little-endian f32 in C order is all that
//! diffusers users produce with `np.save(path, latents.numpy())`, and anything else gets a clear
//! error instead of a silent conversion.

use anyhow::{bail, ensure, Context, Result};
use candle_core::{DType, Device, Tensor};
use semi_diffusion::image::write_atomic;
use std::io::Write;
use std::path::Path;

fn is_npy(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("npy"))
}

/// Reads latents from `.safetensors` (key `latents`) or `.npy` as an f32 CPU tensor.
pub fn read_latents(path: &Path) -> Result<Tensor> {
    let read = || -> Result<Tensor> {
        if is_npy(path) {
            let bytes = std::fs::read(path)?;
            let (shape, data) = parse_npy(&bytes)?;
            Ok(Tensor::from_vec(data, shape, &Device::Cpu)?)
        } else {
            let mut tensors = candle_core::safetensors::load(path, &Device::Cpu)
                .context("not a readable safetensors file")?;
            let t = tensors.remove("latents").with_context(|| {
                let mut keys: Vec<_> = tensors.keys().cloned().collect();
                keys.sort();
                format!("no tensor named `latents` (found: {})", keys.join(", "))
            })?;
            Ok(t.to_dtype(DType::F32)?)
        }
    };
    read().with_context(|| format!("cannot read latents from {}", path.display()))
}

/// Writes latents as `.npy` or (any other extension) safetensors with key `latents`, atomically.
pub fn write_latents(path: &Path, latents: &Tensor) -> Result<()> {
    let t = latents
        .to_device(&Device::Cpu)?
        .to_dtype(DType::F32)?
        .contiguous()?;
    let shape = t.dims().to_vec();
    let data = t.flatten_all()?.to_vec1::<f32>()?;
    let bytes = if is_npy(path) {
        npy_bytes(&shape, &data)
    } else {
        safetensors_bytes("latents", &shape, &data)
    };
    write_atomic(path, |f| Ok(f.write_all(&bytes)?))
}

/// A single-tensor f32 safetensors file.
fn safetensors_bytes(name: &str, shape: &[usize], data: &[f32]) -> Vec<u8> {
    let header = serde_json::json!({
        name: {"dtype": "F32", "shape": shape, "data_offsets": [0, data.len() * 4]}
    })
    .to_string();
    let mut header = header.into_bytes();
    // The data section starts 8-byte aligned, as the reference implementation writes it.
    while !header.len().is_multiple_of(8) {
        header.push(b' ');
    }
    let mut out = Vec::with_capacity(8 + header.len() + data.len() * 4);
    out.extend((header.len() as u64).to_le_bytes());
    out.extend(header);
    for v in data {
        out.extend(v.to_le_bytes());
    }
    out
}

/// `np.save` of a C-order little-endian f32 array (format version 1.0).
pub fn npy_bytes(shape: &[usize], data: &[f32]) -> Vec<u8> {
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
    fn npy_round_trip_and_numpy_header() {
        let data: Vec<f32> = (0..24).map(|i| i as f32 * 0.5 - 3.0).collect();
        let bytes = npy_bytes(&[1, 2, 3, 4], &data);
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
        let (shape, _) = parse_npy(&npy_bytes(&[5], &[0.0; 5])).unwrap();
        assert_eq!(shape, vec![5]);
    }

    #[test]
    fn npy_rejections() {
        let mut f8 = npy_bytes(&[2], &[1.0, 2.0]);
        let pos = f8.windows(3).position(|w| w == b"<f4").unwrap();
        f8[pos + 2] = b'8';
        let err = parse_npy(&f8).unwrap_err().to_string();
        assert!(err.contains("<f8"), "{err}");
        let mut fortran = npy_bytes(&[2], &[1.0, 2.0]);
        let pos = fortran.windows(5).position(|w| w == b"False").unwrap();
        fortran[pos..pos + 5].copy_from_slice(b"True ");
        assert!(parse_npy(&fortran).is_err());
        let mut short = npy_bytes(&[2], &[1.0, 2.0]);
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
