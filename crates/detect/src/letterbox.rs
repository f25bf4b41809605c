//! ultralytics' preprocessing, to the byte: `LetterBox(new_shape=size, auto=False)` (resize
//! keeping the aspect ratio with OpenCV's `INTER_LINEAR` on 8-bit pixels, then centred padding
//! with grey 114), and `scale_boxes` to map boxes back to the original image.
//!
//! OpenCV's 8-bit bilinear resize is fixed-point (11-bit coefficients) and its x86 vector path
//! rounds in two steps; [`resize_linear`] does the same arithmetic, so the network sees the very
//! bytes ultralytics feeds it (checked against `cv2.resize` in the fixtures).

/// Padding grey (ultralytics' `padding_value`).
pub const PAD_VALUE: u8 = 114;

/// Fixed-point scale of the interpolation coefficients (OpenCV's `INTER_RESIZE_COEF_BITS` = 11).
const COEF_SCALE: f32 = 2048.0;

/// Where a resized image sits in its letterboxed square.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    /// The square's side.
    pub size: usize,
    pub orig_w: usize,
    pub orig_h: usize,
    /// The resized image's size.
    pub new_w: usize,
    pub new_h: usize,
    /// Padding left of and above the resized image.
    pub left: usize,
    pub top: usize,
}

impl Placement {
    /// ultralytics' `LetterBox.get_params` for a fixed square (`auto=False`, `scaleup=True`,
    /// centred). Python rounds half to even, and so does this.
    pub fn new(orig_w: usize, orig_h: usize, size: usize) -> Placement {
        let r = (size as f64 / orig_h as f64).min(size as f64 / orig_w as f64);
        let side = |s: usize| ((s as f64 * r).round_ties_even() as usize).max(1);
        let (new_w, new_h) = (side(orig_w), side(orig_h));
        let pad = |d: usize| ((d as f64 / 2.0) - 0.1).round_ties_even().max(0.0) as usize;
        Placement {
            size,
            orig_w,
            orig_h,
            new_w,
            new_h,
            left: pad(size - new_w),
            top: pad(size - new_h),
        }
    }

    /// A box `[x0, y0, x1, y1]` in the square mapped back to the original image and clipped to
    /// it (ultralytics' `scale_boxes` then `clip_boxes`).
    pub fn to_original(&self, b: [f32; 4]) -> [f32; 4] {
        let gx = self.new_w as f32 / self.orig_w as f32;
        let gy = self.new_h as f32 / self.orig_h as f32;
        let (w, h) = (self.orig_w as f32, self.orig_h as f32);
        let x = |v: f32| ((v - self.left as f32) / gx).clamp(0.0, w);
        let y = |v: f32| ((v - self.top as f32) / gy).clamp(0.0, h);
        [x(b[0]), y(b[1]), x(b[2]), y(b[3])]
    }
}

/// An RGB image (`w * h * 3` bytes, row-major) letterboxed into a `size` square: the square's
/// bytes and where the image sits in it.
pub fn letterbox(rgb: &[u8], w: usize, h: usize, size: usize) -> (Vec<u8>, Placement) {
    let p = Placement::new(w, h, size);
    let resized;
    let src = if (p.new_w, p.new_h) == (w, h) {
        rgb
    } else {
        resized = resize_linear(rgb, w, h, p.new_w, p.new_h);
        &resized
    };
    let mut out = vec![PAD_VALUE; size * size * 3];
    for y in 0..p.new_h {
        let row = &src[y * p.new_w * 3..(y + 1) * p.new_w * 3];
        let at = ((p.top + y) * size + p.left) * 3;
        out[at..at + row.len()].copy_from_slice(row);
    }
    (out, p)
}

/// Source index pairs and fixed-point weights of one axis. OpenCV clamps the horizontal
/// position (a weight of 1 on the edge pixel) but not the vertical one, whose out-of-range rows
/// are then clamped: both are reproduced.
fn axis(src: usize, dst: usize, clamp_weight: bool) -> Vec<(usize, usize, i32, i32)> {
    let scale = 1.0 / (dst as f64 / src as f64);
    (0..dst)
        .map(|d| {
            let f = ((d as f64 + 0.5) * scale - 0.5) as f32;
            let mut s = f.floor() as i64;
            let mut f = f - s as f32;
            if clamp_weight {
                if s < 0 {
                    (s, f) = (0, 0.0);
                }
                if s >= src as i64 - 1 {
                    (s, f) = (src as i64 - 1, 0.0);
                }
            }
            let at = |i: i64| i.clamp(0, src as i64 - 1) as usize;
            let w0 = ((1.0 - f) * COEF_SCALE).round_ties_even() as i32;
            let w1 = (f * COEF_SCALE).round_ties_even() as i32;
            (at(s), at(s + 1), w0, w1)
        })
        .collect()
}

/// `cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR)` on 8-bit RGB, bit for bit as
/// OpenCV computes it on x86-64: a horizontal pass into 2048-scaled integers, then a vertical
/// pass of `((r0 >> 4) * b0 >> 16) + ((r1 >> 4) * b1 >> 16)`, rounded with `(v + 2) >> 2`.
pub fn resize_linear(rgb: &[u8], w: usize, h: usize, nw: usize, nh: usize) -> Vec<u8> {
    let xs = axis(w, nw, true);
    let ys = axis(h, nh, false);
    let rows: Vec<Vec<i32>> = (0..h)
        .map(|y| {
            let line = &rgb[y * w * 3..(y + 1) * w * 3];
            let mut row = Vec::with_capacity(nw * 3);
            for &(s0, s1, a0, a1) in &xs {
                for c in 0..3 {
                    row.push(i32::from(line[s0 * 3 + c]) * a0 + i32::from(line[s1 * 3 + c]) * a1);
                }
            }
            row
        })
        .collect();
    let mut out = Vec::with_capacity(nw * nh * 3);
    for &(s0, s1, b0, b1) in &ys {
        let (r0, r1) = (&rows[s0], &rows[s1]);
        out.extend(r0.iter().zip(r1).map(|(&p, &q)| {
            let v = (((p >> 4) * b0) >> 16) + (((q >> 4) * b1) >> 16);
            ((v + 2) >> 2).clamp(0, 255) as u8
        }));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placement_rounds_like_python() {
        // 512 -> 640: no padding.
        let p = Placement::new(512, 512, 640);
        assert_eq!((p.new_w, p.new_h, p.left, p.top), (640, 640, 0, 0));
        // 640x480 -> 640x480, 80 px above and below.
        let p = Placement::new(640, 480, 640);
        assert_eq!((p.new_w, p.new_h, p.left, p.top), (640, 480, 0, 80));
        // Odd padding: 33 px split 16 / 17 (round(16.5 - 0.1) = 16).
        let p = Placement::new(640, 607, 640);
        assert_eq!((p.new_h, p.top), (607, 16));
        let b = p.to_original([10.0, 16.0, 700.0, 700.0]);
        assert_eq!(b, [10.0, 0.0, 640.0, 607.0]);
    }

    #[test]
    fn identity_and_constant_images() {
        let img: Vec<u8> = (0..5 * 4 * 3).map(|i| (i * 7 % 256) as u8).collect();
        assert_eq!(resize_linear(&img, 5, 4, 5, 4), img);
        let grey = vec![200u8; 7 * 3 * 3];
        assert!(resize_linear(&grey, 7, 3, 19, 11).iter().all(|&v| v == 200));
    }
}
