//! PNG output with the generation parameters embedded, written atomically.
//!
//! Pixels are quantised as diffusers does (`(x * 255).round()`, numpy's half-to-even rounding), so
//! a PNG of ours and one saved by diffusers from the same tensor are identical. The parameters go
//! into a `parameters` text chunk as JSON (tEXt when ASCII, else UTF-8 iTXt), so the image alone
//! says how to reproduce it; the same JSON can also go to a sidecar file.

use anyhow::{bail, ensure, Context, Result};
use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

/// The `semi` version written next to the parameters.
pub const SEMI_VERSION: &str = env!("CARGO_PKG_VERSION");

/// How an image was made; stored as JSON in the `parameters` chunk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageParams {
    pub prompt: String,
    pub negative_prompt: String,
    pub seed: u64,
    pub steps: usize,
    pub guidance: f64,
    pub eta: f64,
    /// The model as the user named it (folder or repo id).
    pub model: String,
    pub width: usize,
    pub height: usize,
    /// Anything else worth keeping (layout, initialisation method, ...).
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// `[1, 3, H, W]` (or `[3, H, W]`) in [0, 1] -> (width, height, RGB8 bytes, row-major).
pub fn to_rgb8(image: &Tensor) -> Result<(u32, u32, Vec<u8>)> {
    let image = match image.dims() {
        [1, 3, _, _] => image.squeeze(0)?,
        [3, _, _] => image.clone(),
        d => bail!("expected an image tensor [1, 3, H, W], got shape {d:?}"),
    };
    let (_, h, w) = image.dims3()?;
    let hwc = image
        .to_device(&Device::Cpu)?
        .to_dtype(DType::F32)?
        .permute((1, 2, 0))?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let bytes = hwc
        .iter()
        .map(|&x| (x * 255.0).round_ties_even().clamp(0.0, 255.0) as u8)
        .collect();
    Ok((w as u32, h as u32, bytes))
}

/// Writes a file through a temporary file in the same folder and a rename, so readers never see
/// a half-written file and a failed write leaves any previous file intact
/// ([`semi_jobs::write_atomic_file`]).
pub fn write_atomic(
    path: &Path,
    write: impl FnOnce(&mut std::fs::File) -> Result<()>,
) -> Result<()> {
    semi_jobs::write_atomic_file(path, write)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Saves an image in [0, 1] as an 8-bit RGB PNG with `parameters` and `semi` text chunks.
pub fn save_png(path: &Path, image: &Tensor, params: &ImageParams) -> Result<()> {
    let bytes = png_bytes(image, params)?;
    write_atomic(path, |f| Ok(f.write_all(&bytes)?))
}

/// The PNG of [`save_png`], in memory (for writers that commit several files together).
pub fn png_bytes(image: &Tensor, params: &ImageParams) -> Result<Vec<u8>> {
    let (w, h, rgb) = to_rgb8(image)?;
    let json = serde_json::to_string(params)?;
    let text = [("parameters", json.as_str()), ("semi", SEMI_VERSION)];
    semi_jobs::encode_png_rgb8(w, h, &rgb, &text)
}

/// Where [`save_sidecar`] writes: `x.png` -> `x.json` (`x.json.params.json` for an image
/// named `.json`, so the image itself is never overwritten).
pub fn sidecar_path(png_path: &Path) -> std::path::PathBuf {
    if png_path.extension().is_some_and(|e| e == "json") {
        let mut name = png_path.as_os_str().to_owned();
        name.push(".params.json");
        std::path::PathBuf::from(name)
    } else {
        png_path.with_extension("json")
    }
}

/// The sidecar of [`save_sidecar`]: the parameters as pretty JSON and a newline.
pub fn sidecar_bytes(params: &ImageParams) -> Result<Vec<u8>> {
    let mut json = serde_json::to_string_pretty(params)?;
    json.push('\n');
    Ok(json.into_bytes())
}

/// Writes the parameters as pretty JSON next to the image (`x.png` -> `x.json`), atomically:
/// easier to read and to batch-process than a PNG text chunk.
pub fn save_sidecar(png_path: &Path, params: &ImageParams) -> Result<std::path::PathBuf> {
    let path = sidecar_path(png_path);
    let bytes = sidecar_bytes(params)?;
    write_atomic(&path, |f| Ok(f.write_all(&bytes)?))?;
    Ok(path)
}

/// A decoded PNG: 8-bit RGB pixels and its text chunks.
#[derive(Debug, Clone)]
pub struct LoadedPng {
    pub width: u32,
    pub height: u32,
    pub rgb: Vec<u8>,
    pub text: BTreeMap<String, String>,
}

impl LoadedPng {
    /// The embedded generation parameters, if any.
    pub fn params(&self) -> Result<Option<ImageParams>> {
        self.text
            .get("parameters")
            .map(|t| serde_json::from_str(t).context("malformed `parameters` chunk"))
            .transpose()
    }

    /// `[1, 3, H, W]` f32 in [0, 1].
    pub fn to_tensor(&self, device: &Device) -> Result<Tensor> {
        let data: Vec<f32> = self.rgb.iter().map(|&b| b as f32 / 255.0).collect();
        let t = Tensor::from_vec(data, (self.height as usize, self.width as usize, 3), device)?;
        Ok(t.permute((2, 0, 1))?.unsqueeze(0)?.contiguous()?)
    }
}

/// Reads an 8-bit RGB or RGBA PNG (alpha dropped) with its tEXt/zTXt/iTXt chunks.
pub fn load_png(path: &Path) -> Result<LoadedPng> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut decoder = png::Decoder::new(std::io::BufReader::new(file));
    decoder.set_transformations(png::Transformations::EXPAND);
    let mut reader = decoder
        .read_info()
        .with_context(|| format!("{} is not a readable PNG", path.display()))?;
    let mut buf = vec![0; reader.output_buffer_size().context("PNG too large")?];
    let frame = reader.next_frame(&mut buf)?;
    ensure!(
        frame.bit_depth == png::BitDepth::Eight,
        "{}: only 8-bit PNGs are supported",
        path.display()
    );
    let channels = match frame.color_type {
        png::ColorType::Rgb => 3,
        png::ColorType::Rgba => 4,
        c => bail!("{}: unsupported PNG color type {c:?}", path.display()),
    };
    let rgb: Vec<u8> = buf[..frame.buffer_size()]
        .chunks_exact(channels)
        .flat_map(|p| [p[0], p[1], p[2]])
        .collect();
    let info = reader.info();
    let mut text = BTreeMap::new();
    for t in &info.uncompressed_latin1_text {
        text.insert(t.keyword.clone(), t.text.clone());
    }
    for t in &info.compressed_latin1_text {
        text.insert(t.keyword.clone(), t.get_text()?);
    }
    for t in &info.utf8_text {
        text.insert(t.keyword.clone(), t.get_text()?);
    }
    Ok(LoadedPng {
        width: frame.width,
        height: frame.height,
        rgb,
        text,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(prompt: &str) -> ImageParams {
        ImageParams {
            prompt: prompt.into(),
            negative_prompt: "blurry".into(),
            seed: 42,
            steps: 50,
            guidance: 7.5,
            eta: 0.0,
            model: "runwayml/stable-diffusion-v1-5".into(),
            width: 3,
            height: 2,
            extra: Default::default(),
        }
    }

    #[test]
    fn rounding_is_half_to_even_like_numpy() {
        // 0.5/255 * 255 = 0.5 -> 0; 1.5/255 * 255 = 1.5 -> 2; values outside [0, 1] clamp.
        assert_eq!((0.5f32 / 255.0 * 255.0, 1.5f32 / 255.0 * 255.0), (0.5, 1.5));
        let t = Tensor::new(
            &[0.5f32 / 255.0, 1.5 / 255.0, 1.0, -0.2, 1.3, 0.2],
            &Device::Cpu,
        )
        .unwrap()
        .reshape((1, 3, 1, 2))
        .unwrap();
        let (w, h, rgb) = to_rgb8(&t).unwrap();
        assert_eq!((w, h), (2, 1));
        // HWC order: pixel 0 = (c0[0], c1[0], c2[0]).
        assert_eq!(rgb, vec![0, 255, 255, 2, 0, 51]);
        assert!(to_rgb8(&Tensor::zeros((1, 4, 2, 2), DType::F32, &Device::Cpu).unwrap()).is_err());
    }

    #[test]
    fn png_round_trip_with_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<f32> = (0..18).map(|i| i as f32 / 17.0).collect();
        let img = Tensor::from_vec(data, (1, 3, 2, 3), &Device::Cpu).unwrap();
        for prompt in ["a cat", "un chat très mignon, 猫"] {
            let path = dir.path().join("out.png");
            let mut p = params(prompt);
            p.extra
                .insert("layout".into(), serde_json::json!({"objects": []}));
            save_png(&path, &img, &p).unwrap();
            let loaded = load_png(&path).unwrap();
            assert_eq!((loaded.width, loaded.height), (3, 2));
            assert_eq!(loaded.params().unwrap().unwrap(), p);
            assert_eq!(loaded.text["semi"], SEMI_VERSION);
            let back = loaded.to_tensor(&Device::Cpu).unwrap();
            let err = (back - &img)
                .unwrap()
                .abs()
                .unwrap()
                .flatten_all()
                .unwrap()
                .max(0)
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(err <= 0.5 / 255.0 + 1e-6, "{err}");
        }
        // Only the final file remains: no temporary files left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
        let side = save_sidecar(&dir.path().join("out.png"), &params("a cat")).unwrap();
        assert_eq!(side, dir.path().join("out.json"));
        let back: ImageParams =
            serde_json::from_str(&std::fs::read_to_string(side).unwrap()).unwrap();
        assert_eq!(back, params("a cat"));
    }

    #[test]
    fn failed_atomic_write_keeps_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.bin");
        std::fs::write(&path, b"old").unwrap();
        let r = write_atomic(&path, |f| {
            f.write_all(b"partial")?;
            bail!("disk full")
        });
        assert!(r.is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        write_atomic(&path, |f| Ok(f.write_all(b"new")?)).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
    }
}
