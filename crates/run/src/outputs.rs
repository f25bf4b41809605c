//! The files of one run: the image (PNG with its parameters), the sidecar JSON, for a layout the
//! image with the boxes drawn over it, and optionally the final latents. Paths are checked
//! before the long work starts; every file is written atomically.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use semi_diffusion::image::{save_png, save_sidecar, to_rgb8, ImageParams};
use semi_diffusion::latents_io::write_latents;
use semi_methods::Generation;
use semi_toyworld::image::RgbImage;

use crate::run::Run;

/// Fails early when a file could not be written at the end of a long run.
pub fn check_path(path: &Path, flag: &str) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        bail!(
            "{flag} {}: folder {} does not exist",
            path.display(),
            dir.display()
        );
    }
    if path.is_dir() {
        bail!("{flag} {} is a folder", path.display());
    }
    Ok(())
}

/// `<out>.boxes.png` next to the image: `image.png` -> `image.boxes.png`.
pub fn boxes_path(out: &Path) -> PathBuf {
    out.with_extension("boxes.png")
}

/// Where a run's files go.
#[derive(Debug, Clone)]
pub struct Outputs {
    /// The image; the sidecar is `<image>.json`, the boxes `<image>.boxes.png`.
    pub image: PathBuf,
    /// The final latents (safetensors key `latents`, or .npy).
    pub latents: Option<PathBuf>,
}

impl Outputs {
    /// Check the paths (`--out`, `--save-latents`) before the work starts.
    pub fn check(&self) -> Result<()> {
        check_path(&self.image, "--out")?;
        if let Some(p) = &self.latents {
            check_path(p, "--save-latents")?;
        }
        Ok(())
    }

    /// Write every file of `generation`; returns the paths written, image first.
    pub fn write(
        &self,
        run: &Run,
        params: &ImageParams,
        generation: &Generation,
    ) -> Result<Vec<PathBuf>> {
        save_png(&self.image, &generation.image, params)?;
        let mut written = vec![self.image.clone(), save_sidecar(&self.image, params)?];
        if !run.layout.objects.is_empty() {
            let preview = boxes_path(&self.image);
            let (w, h, rgb) = to_rgb8(&generation.image)?;
            let image = RgbImage::from_raw(w, h, rgb)?;
            let boxes: Vec<[f64; 4]> = run
                .layout
                .objects
                .iter()
                .map(|o| o.bbox.to_array())
                .collect();
            let drawn = boxes_over(&image, &boxes);
            semi_jobs::write_atomic_with(&preview, |tmp| {
                drawn.save_png(tmp, &[("Title", "layout boxes")])
            })?;
            written.push(preview);
        }
        if let Some(p) = &self.latents {
            write_latents(p, &generation.latents)?;
            written.push(p.clone());
        }
        Ok(written)
    }
}

/// Distinct outline colours for layout objects.
pub const BOX_COLOURS: [[u8; 3]; 6] = [
    [230, 25, 75],
    [60, 180, 75],
    [0, 130, 200],
    [245, 130, 48],
    [145, 30, 180],
    [255, 225, 25],
];

/// The image (upscaled to at least 256 px wide so small test images stay visible) with each
/// box drawn as a 3-pixel outline in its object's colour, framed in black.
pub fn boxes_over(image: &RgbImage, boxes: &[[f64; 4]]) -> RgbImage {
    let factor = 256u32.div_ceil(image.width().max(1)).max(1);
    let mut img = if factor > 1 {
        image.upscale(factor)
    } else {
        image.clone()
    };
    let (w, h) = (img.width() as f64, img.height() as f64);
    for (i, b) in boxes.iter().enumerate() {
        let colour = BOX_COLOURS[i % BOX_COLOURS.len()];
        let px = [
            (b[0] * w).round() as u32,
            (b[1] * h).round() as u32,
            (b[2] * w).round() as u32,
            (b[3] * h).round() as u32,
        ];
        // Three pixels of colour framed by black, visible on any image.
        for k in 0..5u32 {
            let (x0, y0) = ((px[0] + k).saturating_sub(1), (px[1] + k).saturating_sub(1));
            let (x1, y1) = ((px[2] + 1).saturating_sub(k), (px[3] + 1).saturating_sub(k));
            if x1 <= x0 + 1 || y1 <= y0 + 1 {
                break;
            }
            let c = if k == 0 || k == 4 { [0, 0, 0] } else { colour };
            img.draw_outline([x0, y0, x1, y1], c);
        }
    }
    img
}
