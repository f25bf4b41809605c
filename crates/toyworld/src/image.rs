//! A minimal 8-bit RGB image (row-major, interleaved HWC) and PNG input/output.

use anyhow::{bail, ensure, Context, Result};
use std::fs::File;
use std::io::BufReader;
use std::path::Path;

/// An 8-bit RGB image stored row-major as `[r, g, b, r, g, b, ...]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RgbImage {
    width: u32,
    height: u32,
    data: Vec<u8>,
}

impl RgbImage {
    /// An image filled with one colour.
    pub fn filled(width: u32, height: u32, color: [u8; 3]) -> Self {
        let n = width as usize * height as usize;
        let mut data = Vec::with_capacity(n * 3);
        for _ in 0..n {
            data.extend_from_slice(&color);
        }
        Self {
            width,
            height,
            data,
        }
    }

    /// Wraps raw HWC bytes, checking the length.
    pub fn from_raw(width: u32, height: u32, data: Vec<u8>) -> Result<Self> {
        let want = width as usize * height as usize * 3;
        ensure!(
            data.len() == want,
            "RGB buffer has {} bytes, expected {want} for {width}x{height}x3",
            data.len()
        );
        Ok(Self {
            width,
            height,
            data,
        })
    }

    pub fn width(&self) -> u32 {
        self.width
    }

    pub fn height(&self) -> u32 {
        self.height
    }

    /// Raw HWC bytes.
    pub fn as_raw(&self) -> &[u8] {
        &self.data
    }

    /// Mutable raw HWC bytes.
    pub fn as_raw_mut(&mut self) -> &mut [u8] {
        &mut self.data
    }

    fn offset(&self, x: u32, y: u32) -> usize {
        (y as usize * self.width as usize + x as usize) * 3
    }

    /// The pixel at (x, y). Panics when out of bounds, like slice indexing.
    pub fn get(&self, x: u32, y: u32) -> [u8; 3] {
        assert!(
            x < self.width && y < self.height,
            "pixel ({x}, {y}) outside image"
        );
        let o = self.offset(x, y);
        [self.data[o], self.data[o + 1], self.data[o + 2]]
    }

    /// Sets the pixel at (x, y). Panics when out of bounds, like slice indexing.
    pub fn put(&mut self, x: u32, y: u32, color: [u8; 3]) {
        assert!(
            x < self.width && y < self.height,
            "pixel ({x}, {y}) outside image"
        );
        let o = self.offset(x, y);
        self.data[o..o + 3].copy_from_slice(&color);
    }

    /// Nearest-neighbour upscale by an integer factor (keeps pixels crisp for eyeballing).
    pub fn upscale(&self, factor: u32) -> RgbImage {
        let factor = factor.max(1);
        let mut out = RgbImage::filled(self.width * factor, self.height * factor, [0, 0, 0]);
        for y in 0..out.height {
            for x in 0..out.width {
                out.put(x, y, self.get(x / factor, y / factor));
            }
        }
        out
    }

    /// Copies `src` into this image with its top-left corner at (x, y), clipping at the edges.
    pub fn blit(&mut self, src: &RgbImage, x: u32, y: u32) {
        for sy in 0..src.height {
            for sx in 0..src.width {
                let (tx, ty) = (x + sx, y + sy);
                if tx < self.width && ty < self.height {
                    self.put(tx, ty, src.get(sx, sy));
                }
            }
        }
    }

    /// Draws a 1-pixel rectangle just outside the pixel box `[x0, y0, x1, y1)` (exclusive max),
    /// so the outlined pixels themselves stay visible; sides that would fall outside the image are
    /// drawn on its border instead.
    pub fn draw_outline(&mut self, bbox: [u32; 4], color: [u8; 3]) {
        if self.width == 0 || self.height == 0 {
            return;
        }
        let [x0, y0, x1, y1] = bbox;
        let left = x0.saturating_sub(1).min(self.width - 1);
        let top = y0.saturating_sub(1).min(self.height - 1);
        let right = x1.min(self.width - 1);
        let bottom = y1.min(self.height - 1);
        for x in left..=right.max(left) {
            self.put(x, top, color);
            self.put(x, bottom, color);
        }
        for y in top..=bottom.max(top) {
            self.put(left, y, color);
            self.put(right, y, color);
        }
    }

    /// Writes an 8-bit RGB PNG, with optional text chunks (keyword, text): `tEXt` when the text
    /// is ASCII, UTF-8 `iTXt` otherwise ([`semi_jobs::write_png_rgb8`]).
    pub fn save_png(&self, path: &Path, text: &[(&str, &str)]) -> Result<()> {
        semi_jobs::write_atomic_file(path, |file| {
            semi_jobs::write_png_rgb8(file, self.width, self.height, &self.data, text)
        })
        .with_context(|| format!("writing PNG {}", path.display()))
    }

    /// Reads a PNG as 8-bit RGB (greyscale and palette images are expanded, alpha is dropped,
    /// 16-bit samples are reduced to 8 bits).
    pub fn load_png(path: &Path) -> Result<RgbImage> {
        let file = File::open(path).with_context(|| format!("opening PNG {}", path.display()))?;
        let mut dec = png::Decoder::new(BufReader::new(file));
        dec.set_transformations(png::Transformations::normalize_to_color8());
        let mut reader = dec
            .read_info()
            .with_context(|| format!("reading PNG header {}", path.display()))?;
        let size = reader
            .output_buffer_size()
            .with_context(|| format!("PNG {} is too large", path.display()))?;
        let mut buf = vec![0u8; size];
        let info = reader
            .next_frame(&mut buf)
            .with_context(|| format!("decoding PNG {}", path.display()))?;
        let (w, h) = (info.width, info.height);
        let px = w as usize * h as usize;
        let samples = info.buffer_size();
        let channels = samples / px.max(1);
        let src = &buf[..samples];
        let mut data = Vec::with_capacity(px * 3);
        match (info.color_type, channels) {
            (png::ColorType::Rgb, 3) => data.extend_from_slice(src),
            (png::ColorType::Rgba, 4) => src.chunks_exact(4).for_each(|p| data.extend(&p[..3])),
            (png::ColorType::Grayscale, 1) => src.iter().for_each(|&g| data.extend([g, g, g])),
            (png::ColorType::GrayscaleAlpha, 2) => src
                .chunks_exact(2)
                .for_each(|p| data.extend([p[0], p[0], p[0]])),
            (ct, ch) => bail!(
                "PNG {} has unsupported layout {ct:?} with {ch} channels",
                path.display()
            ),
        }
        RgbImage::from_raw(w, h, data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn png_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.png");
        let mut img = RgbImage::filled(5, 3, [1, 2, 3]);
        img.put(4, 2, [250, 0, 9]);
        img.save_png(&path, &[("prompt", "a circle")]).unwrap();
        assert_eq!(RgbImage::load_png(&path).unwrap(), img);
    }

    #[test]
    fn from_raw_checks_length() {
        assert!(RgbImage::from_raw(2, 2, vec![0; 11]).is_err());
        assert!(RgbImage::from_raw(2, 2, vec![0; 12]).is_ok());
    }

    #[test]
    fn outline_surrounds_box() {
        let mut img = RgbImage::filled(6, 6, [0, 0, 0]);
        img.draw_outline([2, 2, 4, 4], [9, 9, 9]);
        // Box pixels untouched, ring around them drawn.
        assert_eq!(img.get(2, 2), [0, 0, 0]);
        assert_eq!(img.get(3, 3), [0, 0, 0]);
        for (x, y) in [(1, 1), (4, 4), (1, 4), (4, 1), (2, 1), (4, 3)] {
            assert_eq!(img.get(x, y), [9, 9, 9], "({x},{y})");
        }
        assert_eq!(img.get(0, 0), [0, 0, 0]);
        assert_eq!(img.get(5, 5), [0, 0, 0]);
    }

    #[test]
    fn upscale_repeats_pixels() {
        let mut img = RgbImage::filled(2, 1, [0, 0, 0]);
        img.put(1, 0, [7, 7, 7]);
        let up = img.upscale(3);
        assert_eq!((up.width(), up.height()), (6, 3));
        assert_eq!(up.get(2, 2), [0, 0, 0]);
        assert_eq!(up.get(3, 0), [7, 7, 7]);
    }
}
