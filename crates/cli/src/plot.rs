//! Simple raster plots (no text: captions go to stdout): score histograms for `tickets inspect`
//! (the layout boxes over a generated image are `semi_run::outputs::boxes_over`).

use anyhow::Result;
use semi_toyworld::image::RgbImage;

const PANEL_W: u32 = 200;
const PANEL_H: u32 = 100;
const GAP: u32 = 6;
const COLUMNS: usize = 4;

/// One panel per histogram (bins over [0, 1], bars scaled to the panel's largest bin), in rows
/// of four; optional vertical lines at `t_obj` (red) and `t_bg` (blue).
pub fn histograms(hists: &[&[usize]], t_obj: Option<f32>, t_bg: Option<f32>) -> Result<RgbImage> {
    let n = hists.len().max(1);
    let cols = n.min(COLUMNS) as u32;
    let rows = n.div_ceil(COLUMNS) as u32;
    let mut img = RgbImage::filled(
        cols * (PANEL_W + GAP) + GAP,
        rows * (PANEL_H + GAP) + GAP,
        [255, 255, 255],
    );
    for (i, h) in hists.iter().enumerate() {
        let x0 = GAP + (i % COLUMNS) as u32 * (PANEL_W + GAP);
        let y0 = GAP + (i / COLUMNS) as u32 * (PANEL_H + GAP);
        img.draw_outline([x0, y0, x0 + PANEL_W, y0 + PANEL_H], [160, 160, 160]);
        let max = h.iter().copied().max().unwrap_or(0).max(1);
        let bw = PANEL_W / h.len().max(1) as u32;
        for (b, &count) in h.iter().enumerate() {
            let bar = (count as u64 * PANEL_H as u64 / max as u64) as u32;
            for x in x0 + b as u32 * bw..x0 + (b as u32 + 1) * bw - 1 {
                for y in y0 + PANEL_H - bar..y0 + PANEL_H {
                    img.put(x, y, [90, 90, 90]);
                }
            }
        }
        for (t, colour) in [(t_obj, [220, 30, 30]), (t_bg, [30, 60, 220])] {
            if let Some(t) = t {
                let x = x0 + ((t * PANEL_W as f32) as u32).min(PANEL_W - 1);
                for y in y0..y0 + PANEL_H {
                    img.put(x, y, colour);
                }
            }
        }
    }
    Ok(img)
}
