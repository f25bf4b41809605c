//! Latents -> RGB pictures for the page: the per-step preview of the current estimate, and PNG
//! encoding in memory.
//!
//! Pixel-space models (the toy model): the latents are the image in [-1, 1], so the preview is
//! exact. Latent models (SD): a full VAE decode per step would double a CPU step's cost, so the
//! preview is a cheap fixed linear map from the 4 latent channels to RGB, the widely used
//! approximation of SD 1.x's VAE colours (a rough, low-resolution picture, 1/8 of the size).

use anyhow::{bail, Result};
use candle_core::{DType, Device, Tensor};
use semi_diffusion::pipeline::to_unit_range;

/// RGB = sum_c latent_c * LATENT_RGB[c] for SD 1.x's 4-channel latents (approximately the VAE
/// decoder's output colour in [-1, 1]).
const LATENT_RGB: [[f32; 3]; 4] = [
    [0.298, 0.207, 0.208],
    [0.187, 0.286, 0.173],
    [-0.158, 0.189, 0.264],
    [-0.184, -0.271, -0.473],
];

/// A `[1, C, h, w]` estimate of the clean latents as a `[1, 3, h', w']` image in [0, 1].
pub fn latents_to_image(latents: &Tensor, pixel_space: bool) -> Result<Tensor> {
    let x = latents.to_device(&Device::Cpu)?.to_dtype(DType::F32)?;
    let raw = match (pixel_space, x.dims()) {
        (true, [1, 3, _, _]) => x,
        (false, [1, 4, _, _]) => {
            let m: Vec<f32> = LATENT_RGB.iter().flatten().copied().collect();
            let m = Tensor::from_vec(m, (4, 3), &Device::Cpu)?;
            // [1, 4, h, w] -> [h*w, 4] x [4, 3] -> [1, 3, h, w]
            let (_, c, h, w) = x.dims4()?;
            let flat = x.reshape((c, h * w))?.t()?;
            flat.matmul(&m)?.t()?.reshape((1, 3, h, w))?
        }
        (_, d) => bail!("no preview for latents of shape {d:?}"),
    };
    to_unit_range(&raw)
}

/// An image tensor `[1, 3, H, W]` in [0, 1] as PNG bytes, with optional text chunks.
pub fn png_bytes(image: &Tensor, text: &[(&str, &str)]) -> Result<Vec<u8>> {
    let (w, h, rgb) = semi_diffusion::image::to_rgb8(image)?;
    encode_rgb(w, h, &rgb, text)
}

/// RGB8 pixels as PNG bytes.
pub fn encode_rgb(w: u32, h: u32, rgb: &[u8], text: &[(&str, &str)]) -> Result<Vec<u8>> {
    semi_jobs::encode_png_rgb8(w, h, rgb, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pixel_space_preview_is_the_image() {
        let x = Tensor::from_vec(
            vec![-1f32, 0.0, 1.0, 0.5, -0.5, 0.0],
            (1, 3, 1, 2),
            &Device::Cpu,
        )
        .unwrap();
        let img = latents_to_image(&x, true).unwrap();
        let v: Vec<f32> = img.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(v, vec![0.0, 0.5, 1.0, 0.75, 0.25, 0.5]);
    }

    #[test]
    fn latent_preview_is_the_linear_map() {
        // One latent pixel with channel 0 = 1: RGB = LATENT_RGB[0], then to [0, 1].
        let x = Tensor::from_vec(vec![1f32, 0.0, 0.0, 0.0], (1, 4, 1, 1), &Device::Cpu).unwrap();
        let img = latents_to_image(&x, false).unwrap();
        let v: Vec<f32> = img.flatten_all().unwrap().to_vec1().unwrap();
        for (got, want) in v.iter().zip(LATENT_RGB[0]) {
            assert!((got - (want * 0.5 + 0.5)).abs() < 1e-6);
        }
        assert!(latents_to_image(&x, true).is_err());
    }

    #[test]
    fn png_round_trips_dimensions() {
        let bytes = encode_rgb(2, 1, &[255, 0, 0, 0, 255, 0], &[("Title", "t")]).unwrap();
        let dec = png::Decoder::new(std::io::Cursor::new(bytes));
        let reader = dec.read_info().unwrap();
        assert_eq!((reader.info().width, reader.info().height), (2, 1));
    }
}
