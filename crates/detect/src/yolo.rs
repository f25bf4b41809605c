//! YOLOv8 detect (ultralytics' `yolov8.yaml`, sizes n/s/m/l/x) on candle: the network, its
//! head's decoding (DFL, anchors, strides) and ultralytics' NMS. Tensor names are ultralytics'
//! state-dict names (`model.<layer>.<...>`), so a safetensors file of a `.pt`'s `state_dict()`
//! loads as it is.
//!
//! Layers (yaml index: module): 0-1 Conv s2, 2 C2f, 3 Conv s2, 4 C2f, 5 Conv s2, 6 C2f, 7 Conv
//! s2, 8 C2f, 9 SPPF; 10 up, 11 cat(6), 12 C2f; 13 up, 14 cat(4), 15 C2f (P3); 16 Conv s2,
//! 17 cat(12), 18 C2f (P4); 19 Conv s2, 20 cat(9), 21 C2f (P5); 22 Detect(P3, P4, P5).

use anyhow::{bail, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use semi_diffusion::kernels::{ConvWeights, Epilogue};

/// Box distribution bins per side (ultralytics' `reg_max`).
const REG_MAX: usize = 16;
/// The strides of P3, P4, P5.
pub const STRIDES: [usize; 3] = [8, 16, 32];

/// A YOLOv8 size: ultralytics' compound scaling constants.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scale {
    pub depth: f64,
    pub width: f64,
    pub max_channels: usize,
}

impl Scale {
    /// `n`, `s`, `m`, `l` or `x` (yolov8.yaml's `scales`).
    pub fn named(name: &str) -> Result<Scale> {
        let (depth, width, max_channels) = match name {
            "n" => (0.33, 0.25, 1024),
            "s" => (0.33, 0.50, 1024),
            "m" => (0.67, 0.75, 768),
            "l" => (1.00, 1.00, 512),
            "x" => (1.00, 1.25, 512),
            other => bail!("unknown YOLOv8 size {other:?} (n, s, m, l or x)"),
        };
        Ok(Scale {
            depth,
            width,
            max_channels,
        })
    }

    /// The size's letter, if it is one of ultralytics' five.
    pub fn name(&self) -> Option<&'static str> {
        ["n", "s", "m", "l", "x"]
            .into_iter()
            .find(|n| Scale::named(n).ok() == Some(*self))
    }

    /// Channels of a yaml width `c`: `make_divisible(min(c, max) * width, 8)`.
    fn ch(&self, c: usize) -> usize {
        let x = c.min(self.max_channels) as f64 * self.width;
        ((x / 8.0).ceil() as usize) * 8
    }

    /// Repeats of a yaml depth `n`: `max(round(n * depth), 1)`.
    fn n(&self, n: usize) -> usize {
        ((n as f64 * self.depth).round() as usize).max(1)
    }
}

/// Conv2d (no bias) + BatchNorm (eps 1e-3) + optional SiLU, the BatchNorm folded into the
/// convolution's weight and a bias at load, as ultralytics' `fuse()` does. The convolution runs
/// on `semi-diffusion`'s kernel seam (its CPU 3x3, 1x1 and im2col kernels, candle's elsewhere).
struct Conv {
    conv: ConvWeights,
    act: bool,
}

impl Conv {
    fn new(vb: VarBuilder, c1: usize, c2: usize, k: usize, s: usize, act: bool) -> Result<Conv> {
        let weight = vb.pp("conv").get((c2, c1, k, k), "weight")?;
        let bn = vb.pp("bn");
        let (w, b) = (bn.get(c2, "weight")?, bn.get(c2, "bias")?);
        let (mean, var) = (bn.get(c2, "running_mean")?, bn.get(c2, "running_var")?);
        let scale = (w / (var + 1e-3)?.sqrt()?)?;
        let shift = (b - (mean * &scale)?)?;
        let weight = weight.broadcast_mul(&scale.reshape((c2, 1, 1, 1))?)?;
        Ok(Conv {
            conv: conv_weights(weight, shift, k, s)?,
            act,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let silu = Epilogue {
            silu: self.act,
            ..Epilogue::default()
        };
        Ok(self.conv.forward_then(x, silu)?)
    }
}

/// A square convolution with bias, padding `k / 2`, in its kernel's layout.
fn conv_weights(weight: Tensor, bias: Tensor, k: usize, stride: usize) -> Result<ConvWeights> {
    let cfg = candle_nn::Conv2dConfig {
        padding: k / 2,
        stride,
        ..Default::default()
    };
    Ok(ConvWeights::prepare_any(
        candle_nn::Conv2d::new(weight, Some(bias), cfg),
        k,
        stride,
        k / 2,
    )?)
}

struct Bottleneck {
    cv1: Conv,
    cv2: Conv,
    add: bool,
}

impl Bottleneck {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = self.cv2.forward(&self.cv1.forward(x)?)?;
        Ok(if self.add { (x + y)? } else { y })
    }
}

/// CSP bottleneck with two convolutions.
struct C2f {
    cv1: Conv,
    cv2: Conv,
    m: Vec<Bottleneck>,
    c: usize,
}

impl C2f {
    fn new(vb: VarBuilder, c1: usize, c2: usize, n: usize, shortcut: bool) -> Result<C2f> {
        let c = c2 / 2;
        let m = (0..n)
            .map(|i| {
                let b = vb.pp(format!("m.{i}"));
                Ok(Bottleneck {
                    cv1: Conv::new(b.pp("cv1"), c, c, 3, 1, true)?,
                    cv2: Conv::new(b.pp("cv2"), c, c, 3, 1, true)?,
                    add: shortcut,
                })
            })
            .collect::<Result<_>>()?;
        Ok(C2f {
            cv1: Conv::new(vb.pp("cv1"), c1, 2 * c, 1, 1, true)?,
            cv2: Conv::new(vb.pp("cv2"), (2 + n) * c, c2, 1, 1, true)?,
            m,
            c,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = self.cv1.forward(x)?;
        let mut ys = vec![y.narrow(1, 0, self.c)?, y.narrow(1, self.c, self.c)?];
        for m in &self.m {
            let next = m.forward(ys.last().expect("two chunks"))?;
            ys.push(next);
        }
        self.cv2.forward(&Tensor::cat(&ys, 1)?)
    }
}

/// Spatial pyramid pooling, fast: three 5x5 max pools in a row.
struct Sppf {
    cv1: Conv,
    cv2: Conv,
}

/// 5x5 max pool, stride 1, padding 2 (padding never wins: it is -inf).
fn max_pool5(x: &Tensor) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    let ninf = |hh: usize, ww: usize| {
        Tensor::full(f32::NEG_INFINITY, (b, c, hh, ww), x.device())?.to_dtype(x.dtype())
    };
    let x = Tensor::cat(&[&ninf(h, 2)?, x, &ninf(h, 2)?], 3)?;
    let x = Tensor::cat(&[&ninf(2, w + 4)?, &x, &ninf(2, w + 4)?], 2)?;
    Ok(x.max_pool2d_with_stride(5, 1)?)
}

impl Sppf {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let a = self.cv1.forward(x)?;
        let b = max_pool5(&a)?;
        let c = max_pool5(&b)?;
        let d = max_pool5(&c)?;
        self.cv2.forward(&Tensor::cat(&[a, b, c, d], 1)?)
    }
}

/// One level's branch of the head: two 3x3 Convs, then a 1x1 convolution with bias.
struct Branch {
    a: Conv,
    b: Conv,
    out: ConvWeights,
}

impl Branch {
    fn new(vb: VarBuilder, c1: usize, c: usize, out: usize) -> Result<Branch> {
        Ok(Branch {
            a: Conv::new(vb.pp("0"), c1, c, 3, 1, true)?,
            b: Conv::new(vb.pp("1"), c, c, 3, 1, true)?,
            out: conv_weights(
                vb.pp("2").get((out, c, 1, 1), "weight")?,
                vb.pp("2").get(out, "bias")?,
                1,
                1,
            )?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.out.forward(&self.b.forward(&self.a.forward(x)?)?)?)
    }
}

/// YOLOv8 detect.
pub struct YoloV8 {
    stem: [Conv; 2],
    c2f: Vec<C2f>,
    down: Vec<Conv>,
    sppf: Sppf,
    boxes: Vec<Branch>,
    classes: Vec<Branch>,
    pub num_classes: usize,
    pub scale: Scale,
}

impl YoloV8 {
    /// The network of size `scale` with `num_classes` classes from `vb` (ultralytics' names).
    pub fn new(vb: VarBuilder, scale: Scale, num_classes: usize) -> Result<YoloV8> {
        let m = |i: usize| vb.pp(format!("model.{i}"));
        let (c64, c128, c256, c512, c1024) = (
            scale.ch(64),
            scale.ch(128),
            scale.ch(256),
            scale.ch(512),
            scale.ch(1024),
        );
        let (n3, n6) = (scale.n(3), scale.n(6));
        let stem = [
            Conv::new(m(0), 3, c64, 3, 2, true)?,
            Conv::new(m(1), c64, c128, 3, 2, true)?,
        ];
        let c2f = vec![
            C2f::new(m(2), c128, c128, n3, true)?,
            C2f::new(m(4), c256, c256, n6, true)?,
            C2f::new(m(6), c512, c512, n6, true)?,
            C2f::new(m(8), c1024, c1024, n3, true)?,
            C2f::new(m(12), c1024 + c512, c512, n3, false)?,
            C2f::new(m(15), c512 + c256, c256, n3, false)?,
            C2f::new(m(18), c256 + c512, c512, n3, false)?,
            C2f::new(m(21), c512 + c1024, c1024, n3, false)?,
        ];
        let down = vec![
            Conv::new(m(3), c128, c256, 3, 2, true)?,
            Conv::new(m(5), c256, c512, 3, 2, true)?,
            Conv::new(m(7), c512, c1024, 3, 2, true)?,
            Conv::new(m(16), c256, c256, 3, 2, true)?,
            Conv::new(m(19), c512, c512, 3, 2, true)?,
        ];
        let sppf = Sppf {
            cv1: Conv::new(m(9).pp("cv1"), c1024, c1024 / 2, 1, 1, false)?,
            cv2: Conv::new(m(9).pp("cv2"), c1024 / 2 * 4, c1024, 1, 1, true)?,
        };
        let levels = [c256, c512, c1024];
        let c2 = 16.max(levels[0] / 4).max(REG_MAX * 4);
        let c3 = levels[0].max(num_classes.min(100));
        let head = m(22);
        let boxes = (0..3)
            .map(|i| Branch::new(head.pp(format!("cv2.{i}")), levels[i], c2, 4 * REG_MAX))
            .collect::<Result<_>>()?;
        let classes = (0..3)
            .map(|i| Branch::new(head.pp(format!("cv3.{i}")), levels[i], c3, num_classes))
            .collect::<Result<_>>()?;
        Ok(YoloV8 {
            stem,
            c2f,
            down,
            sppf,
            boxes,
            classes,
            num_classes,
            scale,
        })
    }

    /// A YOLOv8 detect weights file: a `.pt`'s `state_dict()` as safetensors
    /// (`tools/convert_yolo.py`). The size comes from the stem's width (16, 32, 48, 64, 80
    /// channels: n, s, m, l, x) and the classes from the head; anything else in the file that
    /// does not fit is an error naming the file.
    pub fn from_file(path: &std::path::Path, device: &Device) -> Result<YoloV8> {
        // SAFETY: read-only map of a weights file nobody should truncate while it loads.
        let st = unsafe { candle_core::safetensors::MmapedSafetensors::new(path) }
            .map_err(|e| anyhow::anyhow!("{}: not a safetensors file ({e})", path.display()))?;
        let dim = |name: &str, i: usize| -> Result<usize> {
            let view = st.get(name).map_err(|_| {
                anyhow::anyhow!(
                    "{} is not a YOLOv8 detect state dict (no `{name}`; convert an ultralytics \
                     .pt with tools/convert_yolo.py)",
                    path.display()
                )
            })?;
            view.shape().get(i).copied().ok_or_else(|| {
                anyhow::anyhow!("{}: `{name}` has shape {:?}", path.display(), view.shape())
            })
        };
        let size = match dim("model.0.conv.weight", 0)? {
            16 => "n",
            32 => "s",
            48 => "m",
            64 => "l",
            80 => "x",
            w => bail!(
                "{}: a stem of {w} channels is no YOLOv8 size (16, 32, 48, 64 or 80: n to x)",
                path.display()
            ),
        };
        let classes = dim("model.22.cv3.0.2.bias", 0)?;
        let vb = VarBuilder::from_backend(Box::new(st), DType::F32, device.clone());
        YoloV8::new(vb, Scale::named(size)?, classes).map_err(|e| {
            anyhow::anyhow!(
                "{} is not a YOLOv8{size} detect file with {classes} classes: {e}",
                path.display()
            )
        })
    }

    /// The P3, P4, P5 feature maps of images `x` [B, 3, H, W] (RGB in [0, 1]).
    fn features(&self, x: &Tensor) -> Result<[Tensor; 3]> {
        let x = self.stem[1].forward(&self.stem[0].forward(x)?)?;
        let x = self.c2f[0].forward(&x)?;
        let p3 = self.c2f[1].forward(&self.down[0].forward(&x)?)?;
        let p4 = self.c2f[2].forward(&self.down[1].forward(&p3)?)?;
        let p5 = self
            .sppf
            .forward(&self.c2f[3].forward(&self.down[2].forward(&p4)?)?)?;
        let up = |t: &Tensor| -> Result<Tensor> {
            let (_, _, h, w) = t.dims4()?;
            Ok(t.upsample_nearest2d(2 * h, 2 * w)?)
        };
        let h12 = self.c2f[4].forward(&Tensor::cat(&[&up(&p5)?, &p4], 1)?)?;
        let out3 = self.c2f[5].forward(&Tensor::cat(&[&up(&h12)?, &p3], 1)?)?;
        let h18 = self.c2f[6].forward(&Tensor::cat(&[&self.down[3].forward(&out3)?, &h12], 1)?)?;
        let out5 = self.c2f[7].forward(&Tensor::cat(&[&self.down[4].forward(&h18)?, &p5], 1)?)?;
        Ok([out3, h18, out5])
    }

    /// ultralytics' eval-mode output [B, 4 + classes, anchors]: box centre x, y, width, height
    /// in input pixels, then each class's probability; anchors level by level (strides 8, 16,
    /// 32), row-major within a level.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let feats = self.features(x)?;
        let b = x.dim(0)?;
        let mut dist = Vec::new();
        let mut cls = Vec::new();
        let mut anchors = Vec::new();
        for (i, f) in feats.iter().enumerate() {
            let (_, _, h, w) = f.dims4()?;
            dist.push(self.boxes[i].forward(f)?.reshape((b, 4 * REG_MAX, h * w))?);
            cls.push(
                self.classes[i]
                    .forward(f)?
                    .reshape((b, self.num_classes, h * w))?,
            );
            let s = STRIDES[i] as f32;
            for y in 0..h {
                for xx in 0..w {
                    anchors.push([xx as f32 + 0.5, y as f32 + 0.5, s]);
                }
            }
        }
        let dist = Tensor::cat(&dist, 2)?;
        let cls = Tensor::cat(&cls, 2)?;
        let a = anchors.len();
        // DFL: softmax over the 16 bins of each side, then the expected bin.
        let p = candle_nn::ops::softmax(&dist.reshape((b, 4, REG_MAX, a))?, 2)?;
        let ramp = Tensor::arange(0f32, REG_MAX as f32, x.device())?
            .to_dtype(p.dtype())?
            .reshape((1, 1, REG_MAX, 1))?;
        let d = p.broadcast_mul(&ramp)?.sum(2)?; // [b, 4, a]: left, top, right, bottom
        let flat: Vec<f32> = anchors.iter().flat_map(|v| *v).collect();
        let anc = Tensor::from_vec(flat, (a, 3), &Device::Cpu)?
            .to_device(x.device())?
            .to_dtype(d.dtype())?
            .t()?; // [3, a]
        let (ax, ay, st) = (anc.get(0)?, anc.get(1)?, anc.get(2)?);
        let side = |k: usize| d.narrow(1, k, 1).map(|t| t.squeeze(1).expect("[b, a]"));
        let (l, t, r, bt) = (side(0)?, side(1)?, side(2)?, side(3)?);
        let x1 = ax.broadcast_sub(&l)?;
        let y1 = ay.broadcast_sub(&t)?;
        let x2 = ax.broadcast_add(&r)?;
        let y2 = ay.broadcast_add(&bt)?;
        let cx = ((&x1 + &x2)? / 2.0)?.broadcast_mul(&st)?;
        let cy = ((&y1 + &y2)? / 2.0)?.broadcast_mul(&st)?;
        let bw = (x2 - x1)?.broadcast_mul(&st)?;
        let bh = (y2 - y1)?.broadcast_mul(&st)?;
        let boxes = Tensor::stack(&[cx, cy, bw, bh], 1)?;
        Ok(Tensor::cat(&[boxes, candle_nn::ops::sigmoid(&cls)?], 1)?)
    }
}

/// One detection after NMS, in input pixels.
#[derive(Debug, Clone, PartialEq)]
pub struct Detection {
    pub x0: f32,
    pub y0: f32,
    pub x1: f32,
    pub y1: f32,
    pub score: f32,
    pub class: usize,
}

/// ultralytics' NMS settings. The default is its validation (`yolo val`): every class above
/// `conf` per box (`multi_label`), conf 0.001, IoU 0.7, at most 300 boxes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Nms {
    pub conf: f32,
    pub iou: f32,
    pub max_det: usize,
    /// A box once per class scoring above `conf` (validation), or only for its best class
    /// (ultralytics' prediction).
    pub multi_label: bool,
}

impl Default for Nms {
    fn default() -> Self {
        Nms {
            conf: 0.001,
            iou: 0.7,
            max_det: 300,
            multi_label: true,
        }
    }
}

/// ultralytics' `non_max_suppression` for one image's output `[4 + classes, anchors]`:
/// candidates (box, class) with the class's probability above `conf` (every such class with
/// `multi_label`, else the best one), at most 30,000 by score, greedy suppression of IoU > `iou`
/// within a class (boxes offset by class * 7680 as ultralytics does), at most `max_det` kept,
/// best first. Equal scores keep their anchor order.
pub fn non_max_suppression(out: &Tensor, nms: &Nms) -> Result<Vec<Detection>> {
    let Nms {
        conf,
        iou,
        max_det,
        multi_label,
    } = *nms;
    let out = out.to_dtype(DType::F32)?.to_device(&Device::Cpu)?;
    let rows: Vec<Vec<f32>> = out.t()?.contiguous()?.to_vec2()?;
    let mut cands: Vec<Detection> = Vec::new();
    for r in &rows {
        let (cx, cy, w, h) = (r[0], r[1], r[2], r[3]);
        let mut push = |class: usize, score: f32| {
            cands.push(Detection {
                x0: cx - w / 2.0,
                y0: cy - h / 2.0,
                x1: cx + w / 2.0,
                y1: cy + h / 2.0,
                score,
                class,
            })
        };
        let scores = &r[4..];
        if multi_label && scores.len() > 1 {
            for (class, &s) in scores.iter().enumerate() {
                if s > conf {
                    push(class, s);
                }
            }
            continue;
        }
        let (class, &score) =
            scores
                .iter()
                .enumerate()
                .fold((0, &f32::NEG_INFINITY), |best, (i, s)| {
                    if *s > *best.1 {
                        (i, s)
                    } else {
                        best
                    }
                });
        if score > conf {
            push(class, score);
        }
    }
    cands.sort_by(|a, b| b.score.total_cmp(&a.score));
    cands.truncate(30_000);
    const MAX_WH: f32 = 7680.0;
    let offset = |d: &Detection| {
        let o = d.class as f32 * MAX_WH;
        [d.x0 + o, d.y0 + o, d.x1 + o, d.y1 + o]
    };
    let area = |b: &[f32; 4]| (b[2] - b[0]) * (b[3] - b[1]);
    let mut kept: Vec<Detection> = Vec::new();
    let mut suppressed = vec![false; cands.len()];
    for i in 0..cands.len() {
        if suppressed[i] {
            continue;
        }
        kept.push(cands[i].clone());
        if kept.len() == max_det {
            break;
        }
        let a = offset(&cands[i]);
        for j in i + 1..cands.len() {
            if suppressed[j] {
                continue;
            }
            let b = offset(&cands[j]);
            let w = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
            let h = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
            let inter = w * h;
            if inter / (area(&a) + area(&b) - inter) > iou {
                suppressed[j] = true;
            }
        }
    }
    Ok(kept)
}
