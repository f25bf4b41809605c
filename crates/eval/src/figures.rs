//! Figures drawn directly into an `RgbImage`: a grouped bar chart (mean IoU and success rate
//! per size subset, one bar per method) and a contact sheet of a method's images with the
//! target boxes (and optionally the detections) outlined.

use anyhow::{bail, Context, Result};
use semi_toyworld::{contact_sheet, Outline, RgbImage, SheetConfig, Tile};

use crate::batch::MethodDir;
use crate::detector::Detection;
use crate::font::{draw_text, text_width, GLYPH_HEIGHT};
use crate::metrics::{Stats, Summary};
use crate::plan::Plan;

/// Method colours (cycled).
const PALETTE: [[u8; 3]; 10] = [
    [31, 119, 180],
    [255, 127, 14],
    [44, 160, 44],
    [214, 39, 40],
    [148, 103, 189],
    [140, 86, 75],
    [227, 119, 194],
    [127, 127, 127],
    [188, 189, 34],
    [23, 190, 207],
];
const WHITE: [u8; 3] = [255, 255, 255];
const BLACK: [u8; 3] = [0, 0, 0];
const GRID: [u8; 3] = [225, 225, 225];

fn fill(img: &mut RgbImage, x0: u32, y0: u32, x1: u32, y1: u32, color: [u8; 3]) {
    for y in y0..y1.min(img.height()) {
        for x in x0..x1.min(img.width()) {
            img.put(x, y, color);
        }
    }
}

// Geometry of the chart, in pixels.
const SCALE: u32 = 2; // font scale
const BAR: u32 = 26;
const BAR_GAP: u32 = 3;
const GROUP_GAP: u32 = 36;
const LEFT: u32 = 90;
const RIGHT: u32 = 24;
const PLOT_H: u32 = 220;
const PANEL_TITLE: u32 = 36;
const PANEL_FOOT: u32 = 64;
const LEGEND_ROW: u32 = 24;

/// The grouped bar chart of `rows` (method name, summary): two panels, mean IoU (0..1) and
/// success rate (0..100 %), each with groups ALL / SMALL / MEDIUM / LARGE (object counts under
/// each group, from the first method) and one coloured bar per method with its value on top;
/// legend on top. An empty subset has no bar.
pub fn bar_chart(rows: &[(String, Summary)]) -> Result<RgbImage> {
    if rows.is_empty() {
        bail!("a chart needs at least one method");
    }
    let n = rows.len() as u32;
    let group_w = n * (BAR + BAR_GAP) - BAR_GAP;
    let plot_w = 4 * group_w + 5 * GROUP_GAP;
    let legend_w = rows
        .iter()
        .map(|(m, _)| 30 + text_width(m, SCALE))
        .max()
        .unwrap_or(0);
    let width = (LEFT + plot_w + RIGHT).max(LEFT + legend_w + RIGHT);
    let legend_h = n * LEGEND_ROW + 16;
    let panel_h = PANEL_TITLE + PLOT_H + PANEL_FOOT;
    let height = 16 + legend_h + 2 * panel_h;
    let mut img = RgbImage::filled(width, height, WHITE);

    for (k, (method, _)) in rows.iter().enumerate() {
        let y = 16 + k as u32 * LEGEND_ROW;
        fill(
            &mut img,
            LEFT,
            y,
            LEFT + 18,
            y + 16,
            PALETTE[k % PALETTE.len()],
        );
        draw_text(&mut img, LEFT + 28, y + 1, method, SCALE, BLACK);
    }

    type Value = fn(&Stats) -> Option<f64>;
    let panels: [(&str, Value, [&str; 6]); 2] = [
        (
            "MEAN IOU",
            Stats::mean_iou,
            ["0", "0.2", "0.4", "0.6", "0.8", "1"],
        ),
        (
            "SUCCESS RATE %",
            Stats::success_rate,
            ["0", "20", "40", "60", "80", "100"],
        ),
    ];
    for (p, (title, value, ticks)) in panels.iter().enumerate() {
        let top = 16 + legend_h + p as u32 * panel_h;
        draw_text(&mut img, LEFT, top + 8, title, SCALE, BLACK);
        let (y_top, base) = (top + PANEL_TITLE, top + PANEL_TITLE + PLOT_H);
        for (t, label) in ticks.iter().enumerate() {
            let y = base - t as u32 * PLOT_H / 5;
            fill(&mut img, LEFT, y, LEFT + plot_w, y + 1, GRID);
            let lw = text_width(label, SCALE);
            draw_text(
                &mut img,
                LEFT - 8 - lw,
                y.saturating_sub(GLYPH_HEIGHT * SCALE / 2),
                label,
                SCALE,
                BLACK,
            );
        }
        fill(&mut img, LEFT, y_top, LEFT + 1, base + 1, BLACK);
        fill(&mut img, LEFT, base, LEFT + plot_w, base + 1, BLACK);
        let first = &rows[0].1;
        let groups = [
            ("ALL", first.overall.count),
            ("SMALL", first.small.count),
            ("MEDIUM", first.medium.count),
            ("LARGE", first.large.count),
        ];
        for (g, (label, count)) in groups.iter().enumerate() {
            let gx = LEFT + GROUP_GAP + g as u32 * (group_w + GROUP_GAP);
            for (k, (_, summary)) in rows.iter().enumerate() {
                let stats = match g {
                    0 => &summary.overall,
                    1 => &summary.small,
                    2 => &summary.medium,
                    _ => &summary.large,
                };
                if let Some(v) = value(stats) {
                    let v = v.clamp(0.0, 1.0);
                    let h = (v * f64::from(PLOT_H)).round() as u32;
                    let x = gx + k as u32 * (BAR + BAR_GAP);
                    fill(
                        &mut img,
                        x,
                        base - h,
                        x + BAR,
                        base,
                        PALETTE[k % PALETTE.len()],
                    );
                    // Value above the bar, small font (at most 4 characters fit a bar).
                    let label = match p {
                        0 => format!("{v:.2}"),
                        _ if v >= 0.9995 => "100".to_string(),
                        _ => format!("{:.1}", 100.0 * v),
                    };
                    let lw = text_width(&label, 1);
                    let ly = (base - h).saturating_sub(GLYPH_HEIGHT + 3);
                    draw_text(
                        &mut img,
                        x + BAR.saturating_sub(lw) / 2,
                        ly,
                        &label,
                        1,
                        BLACK,
                    );
                }
            }
            let cx = gx + group_w / 2;
            let lw = text_width(label, SCALE);
            draw_text(
                &mut img,
                cx.saturating_sub(lw / 2),
                base + 10,
                label,
                SCALE,
                BLACK,
            );
            let c = format!("N={count}");
            let cw = text_width(&c, SCALE);
            draw_text(
                &mut img,
                cx.saturating_sub(cw / 2),
                base + 34,
                &c,
                SCALE,
                BLACK,
            );
        }
    }
    Ok(img)
}

/// Pixel box of a normalised box in a `w` x `h` image, outward-rounded and clamped.
fn pixel_box(b: &semi_layout::BBox, w: u32, h: u32) -> [u32; 4] {
    let (fw, fh) = (f64::from(w), f64::from(h));
    [
        (b.x0 * fw).floor().clamp(0.0, fw) as u32,
        (b.y0 * fh).floor().clamp(0.0, fh) as u32,
        (b.x1 * fw).ceil().clamp(0.0, fw) as u32,
        (b.y1 * fh).ceil().clamp(0.0, fh) as u32,
    ]
}

/// Colours of target boxes (white) and detections (black) on contact sheets.
pub const TARGET_COLOR: [u8; 3] = WHITE;
pub const DETECTION_COLOR: [u8; 3] = BLACK;

/// A contact sheet of the first `count` images of `plan` in `dir` (plan order), target boxes
/// outlined in white and, when given, detections of the layout's categories in black, with the
/// method's name on top. Small images are upscaled to about 128 px per tile.
pub fn method_sheet(
    dir: &MethodDir,
    plan: &Plan,
    count: usize,
    detections: Option<&[(String, Vec<Detection>)]>,
    columns: u32,
) -> Result<RgbImage> {
    let items: Vec<_> = plan.items().iter().take(count).collect();
    if items.is_empty() {
        bail!("no images to show");
    }
    let images: Vec<RgbImage> = items
        .iter()
        .map(|it| RgbImage::load_png(&dir.image_path(&it.id)))
        .collect::<Result<_>>()
        .with_context(|| format!("contact sheet of method {:?}", dir.method()))?;
    let mut tiles = Vec::with_capacity(items.len());
    for (it, image) in items.iter().zip(&images) {
        let (w, h) = (image.width(), image.height());
        let mut outlines: Vec<Outline> = it
            .layout
            .objects
            .iter()
            .map(|o| Outline {
                bbox: pixel_box(&o.bbox, w, h),
                color: TARGET_COLOR,
            })
            .collect();
        if let Some(all) = detections {
            let dets = all
                .iter()
                .find(|(id, _)| *id == it.id)
                .map(|(_, d)| d.as_slice());
            for d in dets.unwrap_or(&[]) {
                let wanted = it
                    .layout
                    .objects
                    .iter()
                    .any(|o| o.category.trim().eq_ignore_ascii_case(d.category.trim()));
                if wanted {
                    let [x0, y0, x1, y1] = d.bbox;
                    let c = |v: f64, m: u32| v.round().clamp(0.0, f64::from(m)) as u32;
                    outlines.push(Outline {
                        bbox: [c(x0, w), c(y0, h), c(x1, w), c(y1, h)],
                        color: DETECTION_COLOR,
                    });
                }
            }
        }
        tiles.push(Tile { image, outlines });
    }
    let largest = images
        .iter()
        .map(|i| i.width().max(i.height()))
        .max()
        .unwrap_or(1);
    let cfg = SheetConfig {
        columns: columns.max(1),
        scale: (128 / largest.max(1)).max(1),
        padding: 4,
        padding_color: [64, 64, 64],
    };
    let sheet = contact_sheet(&tiles, &cfg)?;
    let title_h = 12 + GLYPH_HEIGHT * SCALE;
    let mut out = RgbImage::filled(sheet.width(), sheet.height() + title_h, [64, 64, 64]);
    draw_text(&mut out, 6, 6, dir.method(), SCALE, WHITE);
    out.blit(&sheet, 0, title_h);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Stats;

    fn stats(count: usize, iou_sum: f64, successes: usize) -> Stats {
        Stats {
            count,
            iou_sum,
            successes,
        }
    }

    #[test]
    fn bars_have_the_measured_heights() {
        let a = Summary {
            overall: stats(2, 1.0, 1),
            large: stats(2, 1.0, 1),
            ..Default::default()
        };
        let b = Summary {
            overall: stats(2, 2.0, 2),
            large: stats(2, 2.0, 2),
            ..Default::default()
        };
        let img = bar_chart(&[("sd".into(), a), ("semi".into(), b)]).unwrap();
        let n = 2;
        let group_w = n * (BAR + BAR_GAP) - BAR_GAP;
        let legend_h = n * LEGEND_ROW + 16;
        let base = 16 + legend_h + PANEL_TITLE + PLOT_H; // first panel's axis
        let x_sd = LEFT + GROUP_GAP + BAR / 2;
        let x_semi = x_sd + BAR + BAR_GAP;
        // sd: mean IoU 0.5 -> 110 px; semi: 1.0 -> 220 px.
        assert_eq!(img.get(x_sd, base - 1), PALETTE[0]);
        assert_eq!(img.get(x_sd, base - 110), PALETTE[0]);
        assert_ne!(img.get(x_sd, base - 111), PALETTE[0]);
        assert_eq!(img.get(x_semi, base - PLOT_H), PALETTE[1]);
        // Empty subsets (small) have no bar.
        let x_small = LEFT + 2 * GROUP_GAP + group_w + BAR / 2;
        assert_ne!(img.get(x_small, base - 1), PALETTE[0]);
        assert!(bar_chart(&[]).is_err());
    }

    #[test]
    fn pixel_boxes_round_outwards() {
        let b = semi_layout::BBox::from([0.1, 0.25, 0.55, 1.0]);
        assert_eq!(pixel_box(&b, 32, 32), [3, 8, 18, 32]);
    }
}
