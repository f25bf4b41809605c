//! Seeded Gaussian noise identical to PyTorch's CPU generator (MT19937 + ATen's normal fill).
//!
//! `torch.randn(shape, generator=torch.Generator().manual_seed(seed))` in f32 is reproduced bit
//! for bit, so `--seed 42` gives the latents diffusers gives on CPU. ATen fills a tensor in one of
//! two ways, and both are mirrored here:
//! - `numel >= 16`: every element first gets a 24-bit uniform float, then Box-Muller runs over
//!   blocks of 16 (`u[j]` with `u[j+8]`); when `numel` is not a multiple of 16 the last 16
//!   elements are drawn again and transformed again. On x86 with AVX2/AVX-512 (every machine
//!   diffusers is realistically run on) ATen uses the Cephes-style `log256_ps`/`sincos256_ps`
//!   polynomials of `avx_mathfun.h` compiled with FMA contraction; we evaluate the same
//!   polynomials lane by lane with the same fused operations. (torch builds without AVX2, e.g.
//!   on ARM, use libm instead and differ from these values by up to ~2e-6.)
//! - `numel < 16`: per element, `normal_distribution<double>` (53-bit uniforms, Box-Muller with
//!   `log1p`, the sine half cached on the generator for the next draw, even across calls).
use candle_core::{Device, Result, Tensor};

const N: usize = 624;
const M: usize = 397;
const MATRIX_A: u32 = 0x9908_b0df;
const UPPER_MASK: u32 = 0x8000_0000;
const LOWER_MASK: u32 = 0x7fff_ffff;

/// The 32-bit Mersenne Twister, seeded as ATen's `mt19937_engine` (low 32 bits of the seed).
#[derive(Clone)]
struct Mt19937 {
    state: [u32; N],
    next: usize,
    left: usize,
}

impl Mt19937 {
    fn new(seed: u64) -> Self {
        let mut state = [0u32; N];
        state[0] = (seed & 0xffff_ffff) as u32;
        for j in 1..N {
            let prev = state[j - 1];
            state[j] = 1_812_433_253u32
                .wrapping_mul(prev ^ (prev >> 30))
                .wrapping_add(j as u32);
        }
        Self {
            state,
            next: 0,
            left: 1,
        }
    }

    fn twist(u: u32, v: u32) -> u32 {
        let mixed = (u & UPPER_MASK) | (v & LOWER_MASK);
        (mixed >> 1) ^ if v & 1 == 1 { MATRIX_A } else { 0 }
    }

    fn next_state(&mut self) {
        let s = &mut self.state;
        for j in 0..N - M {
            s[j] = s[j + M] ^ Self::twist(s[j], s[j + 1]);
        }
        for j in N - M..N - 1 {
            s[j] = s[j + M - N] ^ Self::twist(s[j], s[j + 1]);
        }
        s[N - 1] = s[M - 1] ^ Self::twist(s[N - 1], s[0]);
        self.left = N;
        self.next = 0;
    }

    fn next_u32(&mut self) -> u32 {
        self.left -= 1;
        if self.left == 0 {
            self.next_state();
        }
        let mut y = self.state[self.next];
        self.next += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^= y >> 18;
        y
    }
}

/// A `torch.Generator()` on CPU: consecutive `randn_vec` calls continue the stream exactly like
/// consecutive `torch.randn(..., generator=g)` calls, so several tensors can be drawn from one
/// generator as diffusers does.
#[derive(Clone)]
pub struct TorchGenerator {
    engine: Mt19937,
    /// The sine half of the last scalar Box-Muller pair (`next_double_normal_sample`).
    cached_normal: Option<f64>,
}

impl TorchGenerator {
    /// `torch.Generator().manual_seed(seed)`.
    pub fn manual_seed(seed: u64) -> Self {
        Self {
            engine: Mt19937::new(seed),
            cached_normal: None,
        }
    }

    /// Reseeds in place, dropping the cached normal sample as torch does.
    pub fn set_seed(&mut self, seed: u64) {
        *self = Self::manual_seed(seed);
    }

    /// Uniform in [0, 1) with 24 random bits (`uniform_real_distribution<float>`).
    fn uniform_f32(&mut self) -> f32 {
        (self.engine.next_u32() & 0x00ff_ffff) as f32 * (1.0 / 16_777_216.0)
    }

    /// Uniform in [0, 1) with 53 random bits (`uniform_real_distribution<double>`).
    fn uniform_f64(&mut self) -> f64 {
        let hi = self.engine.next_u32() as u64;
        let lo = self.engine.next_u32() as u64;
        (((hi << 32) | lo) & ((1u64 << 53) - 1)) as f64 * (1.0 / 9_007_199_254_740_992.0)
    }

    /// One standard normal from `normal_distribution<double>`, using and refilling the cache.
    fn normal_f64(&mut self) -> f64 {
        if let Some(v) = self.cached_normal.take() {
            return v;
        }
        let u1 = self.uniform_f64();
        let u2 = self.uniform_f64();
        let r = (-2.0 * (-u2).ln_1p()).sqrt();
        let theta = 2.0 * std::f64::consts::PI * u1;
        self.cached_normal = Some(r * theta.sin());
        r * theta.cos()
    }

    /// `n` standard normals in torch's order (the flattened tensor of `torch.randn`).
    pub fn randn_vec(&mut self, n: usize) -> Vec<f32> {
        if n < 16 {
            return (0..n).map(|_| self.normal_f64() as f32).collect();
        }
        let mut data: Vec<f32> = (0..n).map(|_| self.uniform_f32()).collect();
        for block in data.chunks_exact_mut(16) {
            box_muller_16(block);
        }
        if !n.is_multiple_of(16) {
            let tail = &mut data[n - 16..];
            for v in tail.iter_mut() {
                *v = self.uniform_f32();
            }
            box_muller_16(tail);
        }
        data
    }

    /// `torch.randn(shape, generator=self)` as f32, built on CPU and moved to `device` so every
    /// device gets the same values.
    pub fn randn(&mut self, shape: &[usize], device: &Device) -> Result<Tensor> {
        let n = shape.iter().product();
        Tensor::from_vec(self.randn_vec(n), shape, &Device::Cpu)?.to_device(device)
    }
}

/// `torch.randn(shape, generator=torch.Generator().manual_seed(seed))` as an f32 tensor.
pub fn randn(seed: u64, shape: &[usize], device: &Device) -> Result<Tensor> {
    TorchGenerator::manual_seed(seed).randn(shape, device)
}

/// ATen's `NormalFill16` (AVX2 specialisation): uniforms in place -> normals in place.
fn box_muller_16(data: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has FMA.
        return unsafe { box_muller_16_fma(data) };
    }
    box_muller_16_portable(data)
}

/// The same code compiled with hardware FMA: `mul_add` is exact either way, but without the
/// target feature it is a call to a software `fmaf` that made seeded random weights (e.g.
/// `semi bench`'s SD-size models) take a minute to build.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "fma")]
unsafe fn box_muller_16_fma(data: &mut [f32]) {
    box_muller_16_portable(data)
}

#[inline(always)]
fn box_muller_16_portable(data: &mut [f32]) {
    let two_pi = (2.0f64 * std::f64::consts::PI) as f32;
    for j in 0..8 {
        let u1 = 1.0f32 - data[j];
        let u2 = data[j + 8];
        let radius = (-2.0f32 * cephes::log(u1)).sqrt();
        let (sin, cos) = cephes::sincos(two_pi * u2);
        // `_mm256_fmadd_ps(n, std, mean)` with std = 1, mean = 0 is exact.
        data[j] = radius * cos;
        data[j + 8] = radius * sin;
    }
}

/// Single-lane versions of `avx_mathfun.h`'s `log256_ps` and `sincos256_ps`, with the FMA
/// contractions GCC applies to them (`a * b + c` computed with one rounding).
// The constants are written exactly as in the C source and rounded to f32 the same way.
#[allow(clippy::excessive_precision, clippy::approx_constant)]
mod cephes {
    const SQRTHF: f32 = 0.707_106_781_186_547_524_f64 as f32;
    const LOG_P: [f32; 9] = [
        7.037_683_629_2E-2,
        -1.151_461_031_0E-1,
        1.167_699_874_0E-1,
        -1.242_014_084_6E-1,
        1.424_932_278_7E-1,
        -1.666_805_766_5E-1,
        2.000_071_476_5E-1,
        -2.499_999_399_3E-1,
        3.333_333_117_4E-1,
    ];
    const LOG_Q1: f32 = -2.121_944_40e-4;
    const LOG_Q2: f32 = 0.693_359_375;
    const MINUS_DP1: f32 = -0.785_156_25;
    const MINUS_DP2: f32 = -2.418_756_484_985_351_562_5e-4;
    const MINUS_DP3: f32 = -3.774_894_977_445_941_08e-8_f64 as f32;
    const SINCOF: [f32; 3] = [-1.951_529_589_1E-4, 8.332_160_873_6E-3, -1.666_665_461_1E-1];
    const COSCOF: [f32; 3] = [
        2.443_315_711_809_948E-5_f64 as f32,
        -1.388_731_625_493_765E-3_f64 as f32,
        4.166_664_568_298_827E-2_f64 as f32,
    ];
    const FOPI: f32 = 1.273_239_544_735_16_f64 as f32;

    /// Natural log for x in (0, 1] (the only inputs Box-Muller gives it).
    #[inline(always)]
    pub fn log(x: f32) -> f32 {
        let x = x.max(f32::from_bits(0x0080_0000));
        let bits = x.to_bits();
        let exponent = ((bits >> 23) as i32) - 0x7f;
        let mut x = f32::from_bits((bits & !0x7f80_0000) | 0.5f32.to_bits());
        let mut e = exponent as f32 + 1.0;
        let below = x < SQRTHF;
        let tmp = if below { x } else { 0.0 };
        x -= 1.0;
        if below {
            e -= 1.0;
        }
        x += tmp;
        let z = x * x;
        let mut y = LOG_P[0];
        for &p in &LOG_P[1..] {
            y = y.mul_add(x, p);
        }
        y *= x;
        // GCC fuses `y * z + e * q1` on the `y * z` side.
        y = y.mul_add(z, e * LOG_Q1);
        y = (-z).mul_add(0.5, y);
        let x = x + y;
        e.mul_add(LOG_Q2, x)
    }

    /// (sin, cos) for a non-negative argument below 8192.
    #[inline(always)]
    pub fn sincos(x: f32) -> (f32, f32) {
        let sign_sin = x.to_bits() & 0x8000_0000;
        let x = x.abs();
        let y = x * FOPI;
        let mut quadrant = (y as i32).wrapping_add(1) & !1;
        let y = quadrant as f32;
        let swap_sign_sin = ((quadrant & 4) as u32) << 29;
        let use_sin_poly = quadrant & 2 == 0;
        let x = y.mul_add(MINUS_DP1, x);
        let x = y.mul_add(MINUS_DP2, x);
        let x = y.mul_add(MINUS_DP3, x);
        quadrant -= 2;
        let sign_cos = ((!quadrant & 4) as u32) << 29;
        let sign_sin = sign_sin ^ swap_sign_sin;

        let z = x * x;
        let mut c = COSCOF[0];
        c = c.mul_add(z, COSCOF[1]);
        c = c.mul_add(z, COSCOF[2]);
        c *= z;
        // `c * z - z * 0.5`, fused on the `c * z` side.
        c = c.mul_add(z, -(z * 0.5));
        c += 1.0;

        let mut s = SINCOF[0];
        s = s.mul_add(z, SINCOF[1]);
        s = s.mul_add(z, SINCOF[2]);
        s *= z;
        s = s.mul_add(x, x);

        // The masked selection of the C code: each result is `selected + 0.0` (finite inputs,
        // so the unselected lane is exactly +0), which also turns -0 into +0.
        let (sin, cos) = if use_sin_poly {
            (0.0 + s, c + 0.0)
        } else {
            (c + 0.0, 0.0 + s)
        };
        (
            f32::from_bits(sin.to_bits() ^ sign_sin),
            f32::from_bits(cos.to_bits() ^ sign_cos),
        )
    }
}
