//! A safetensors file's header, read and checked before any weights are mapped: the one place
//! that knows the format's layout (8-byte length, JSON header, data section), so that folders,
//! single files, VAE files and LoRAs fail alike on a truncated file or a lying header.

use anyhow::{bail, Context, Result};
use std::io::Read;
use std::path::Path;

/// One tensor of a safetensors header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    pub dtype: String,
    pub shape: Vec<usize>,
}

/// A safetensors file's header: its tensors' dtypes and shapes (no data read).
#[derive(Debug, Clone, Default)]
pub struct Header {
    pub tensors: std::collections::BTreeMap<String, TensorInfo>,
}

/// Bytes per element of a safetensors dtype name.
fn dtype_size(dtype: &str) -> Option<u64> {
    Some(match dtype {
        "BOOL" | "U8" | "I8" | "F8_E4M3" | "F8_E5M2" => 1,
        "U16" | "I16" | "F16" | "BF16" => 2,
        "U32" | "I32" | "F32" => 4,
        "U64" | "I64" | "F64" => 8,
        _ => return None,
    })
}

/// Reads and checks a safetensors header: complete, valid JSON, and every tensor's offsets inside
/// the file and as long as its dtype and shape say (a truncated file or a header that lies about
/// its offsets fails here, in one line, before anything is mapped).
pub fn read_header(path: &Path) -> Result<Header> {
    let mut f = std::fs::File::open(path).context("cannot open")?;
    let len = f.metadata()?.len();
    let mut n = [0u8; 8];
    f.read_exact(&mut n)
        .map_err(|_| anyhow::anyhow!("truncated: {len} bytes, no header"))?;
    let n = u64::from_le_bytes(n);
    if n > 100_000_000 || 8 + n > len {
        bail!("truncated or not safetensors: header of {n} bytes in a file of {len} bytes");
    }
    let mut header = vec![0u8; n as usize];
    f.read_exact(&mut header)?;
    let header: serde_json::Value =
        serde_json::from_slice(&header).context("header is not valid JSON")?;
    let obj = header.as_object().context("header is not a JSON object")?;
    let data_len = len - 8 - n;
    let mut out = Header::default();
    for (name, info) in obj {
        if name == "__metadata__" {
            continue;
        }
        let offset = |i: usize| {
            info.get("data_offsets")
                .and_then(|o| o.get(i))
                .and_then(serde_json::Value::as_u64)
                .with_context(|| format!("tensor {name} has no data_offsets"))
        };
        let (begin, end) = (offset(0)?, offset(1)?);
        if end > data_len {
            bail!("truncated: tensor {name} ends at byte {end} but the data section has {data_len} bytes");
        }
        let dtype = info
            .get("dtype")
            .and_then(serde_json::Value::as_str)
            .with_context(|| format!("tensor {name} has no dtype"))?
            .to_string();
        let shape: Vec<usize> = info
            .get("shape")
            .and_then(serde_json::Value::as_array)
            .and_then(|a| a.iter().map(|d| d.as_u64().map(|d| d as usize)).collect())
            .with_context(|| format!("tensor {name} has no shape"))?;
        let want = shape
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64))
            .and_then(|e| dtype_size(&dtype).and_then(|s| e.checked_mul(s)));
        if begin > end || want != Some(end - begin) {
            bail!(
                "the header lies: tensor {name} ({dtype} {shape:?}) is given bytes {begin}..{end}"
            );
        }
        out.tensors
            .insert(name.clone(), TensorInfo { dtype, shape });
    }
    Ok(out)
}
