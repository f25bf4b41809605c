//! The files of one run: the image (PNG with its parameters), the sidecar JSON, for a layout the
//! image with the boxes drawn over it, and optionally the final latents. Paths are checked
//! before the long work starts; every file is written atomically.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use semi_diffusion::image::{png_bytes, sidecar_bytes, sidecar_path, to_rgb8, ImageParams};
use semi_diffusion::latents_io::{check_latents_path, tensor_latents_bytes};
use semi_methods::Generation;
use semi_toyworld::image::RgbImage;

use crate::run::Run;

/// Fails early when a file could not be written at the end of a long run: its folder is
/// missing, or it names a folder, a device (`/dev/null`), a pipe or a socket.
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
    semi_jobs::check_target(path).with_context(|| format!("{flag} {}", path.display()))
}

/// [`check_path`] for an image: semi writes PNG, so the name must say `.png`.
pub fn check_png_path(path: &Path, flag: &str) -> Result<()> {
    if !path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("png"))
    {
        bail!(
            "{flag} {}: semi writes PNG images; name the file .png",
            path.display()
        );
    }
    check_path(path, flag)
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
    /// The final latents (`.safetensors` with the key `latents`, or `.npy`).
    pub latents: Option<PathBuf>,
}

impl Outputs {
    /// Every file a run writes, with the flag or rule that names it: the image, its sidecar,
    /// the boxes when `boxes`, the latents.
    fn files(&self, boxes: bool) -> Vec<(PathBuf, String)> {
        let mut files = vec![
            (self.image.clone(), "--out".to_string()),
            (
                sidecar_path(&self.image),
                "the sidecar of --out".to_string(),
            ),
        ];
        if boxes {
            files.push((
                boxes_path(&self.image),
                "the boxes image of --out".to_string(),
            ));
        }
        if let Some(p) = &self.latents {
            files.push((p.clone(), "--save-latents".to_string()));
        }
        files
    }

    /// Check the paths before the work starts: formats their names promise, folders that
    /// exist, targets that are files, no two outputs on one file, and no output over one of
    /// `inputs` (`--layout x.json --out x.png` would replace the layout with the sidecar).
    /// `boxes`: the run draws the layout's boxes.
    pub fn check(&self, boxes: bool, inputs: &[(&Path, &str)]) -> Result<()> {
        check_png_path(&self.image, "--out")?;
        if let Some(p) = &self.latents {
            check_latents_path(p).context("--save-latents")?;
        }
        let files = self.files(boxes);
        for (i, (path, what)) in files.iter().enumerate() {
            check_path(path, what)?;
            if let Some((_, first)) = files[..i]
                .iter()
                .find(|(p, _)| semi_jobs::same_file_name(p, path))
            {
                bail!(
                    "{what} and {first} are both {}; give each output its own file",
                    path.display()
                );
            }
            if let Some((_, input)) = inputs
                .iter()
                .find(|(p, _)| semi_jobs::same_file_name(p, path))
            {
                bail!(
                    "{what} would overwrite {input} {}; choose another --out",
                    path.display()
                );
            }
        }
        Ok(())
    }

    /// Write every file of `generation` together (all written, then all renamed: Ctrl-C never
    /// leaves an image without its sidecar); returns the paths written, image first.
    pub fn write(
        &self,
        run: &Run,
        params: &ImageParams,
        generation: &Generation,
    ) -> Result<Vec<PathBuf>> {
        let boxes = !run.layout.objects.is_empty();
        self.check(boxes, &[])?;
        let mut bytes = vec![
            png_bytes(&generation.image, params)?,
            sidecar_bytes(params)?,
        ];
        if boxes {
            let (w, h, rgb) = to_rgb8(&generation.image)?;
            let image = RgbImage::from_raw(w, h, rgb)?;
            let boxes: Vec<[f64; 4]> = run
                .layout
                .objects
                .iter()
                .map(|o| o.bbox.to_array())
                .collect();
            let drawn = boxes_over(&image, &boxes);
            bytes.push(semi_jobs::encode_png_rgb8(
                drawn.width(),
                drawn.height(),
                drawn.as_raw(),
                &[("Title", "layout boxes")],
            )?);
        }
        if let Some(p) = &self.latents {
            bytes.push(tensor_latents_bytes(p, &generation.latents)?);
        }
        let paths: Vec<PathBuf> = self.files(boxes).into_iter().map(|(p, _)| p).collect();
        let files: Vec<(&Path, &[u8])> = paths
            .iter()
            .zip(&bytes)
            .map(|(p, b)| (p.as_path(), b.as_slice()))
            .collect();
        semi_jobs::write_atomic_files(&files)?;
        Ok(paths)
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
