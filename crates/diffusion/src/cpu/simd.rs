//! Element-wise loops written so LLVM vectorises them, compiled twice: for AVX2+FMA (picked at
//! run time when the CPU has it) and for the baseline target.

/// `exp(x)` to about 2 ulp (Cephes `expf`: range reduction by ln 2, degree-6 polynomial),
/// branch-free so it vectorises. Flushes to 0 below -87.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const ROUND: f32 = 12_582_912.0; // 1.5 * 2^23: adding it rounds to an integer
    let xc = x.clamp(-87.0, 88.0);
    let t = xc * std::f32::consts::LOG2_E + ROUND;
    let n = t - ROUND;
    let r = xc - n * 0.693_359_4 - n * -2.121_944_4e-4;
    let mut p = 1.987_569_1e-4_f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 0.166_666_65;
    p = p * r + 0.5;
    let y = p * r * r + r + 1.0;
    let pow2 = f32::from_bits(((t.to_bits() as i32 - 0x4B40_0000 + 127) << 23) as u32);
    if x < -87.0 {
        0.0
    } else {
        y * pow2
    }
}

/// `erf(x)` to 6e-7 absolute error (Abramowitz & Stegun 7.1.26: 1.5e-7, plus f32 cancellation
/// near 0), branch-free. Meant for GELU, where it is added to 1.
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let mut p = 1.061_405_4_f32;
    p = p * t - 1.453_152_1;
    p = p * t + 1.421_413_8;
    p = p * t - 0.284_496_74;
    p = p * t + 0.254_829_6;
    let y = 1.0 - p * t * exp(-a * a);
    if x < 0.0 {
        -y
    } else {
        y
    }
}

const LANES: usize = 16;

#[inline(always)]
fn max_impl(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let chunks = x.chunks_exact(LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for i in 0..LANES {
            acc[i] = if c[i] > acc[i] { c[i] } else { acc[i] };
        }
    }
    let mut m = rest.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    for a in acc {
        m = m.max(a);
    }
    m
}

#[inline(always)]
fn exp_shift_sum_impl(x: &mut [f32], shift: f32) -> f32 {
    let mut acc = [0f32; LANES];
    let mut chunks = x.chunks_exact_mut(LANES);
    for c in &mut chunks {
        for i in 0..LANES {
            let e = exp(c[i] - shift);
            c[i] = e;
            acc[i] += e;
        }
    }
    let mut s = 0f32;
    for v in chunks.into_remainder() {
        *v = exp(*v - shift);
        s += *v;
    }
    s + acc.iter().sum::<f32>()
}

#[inline(always)]
fn sum_impl(x: &[f32], center: f32) -> (f64, f64) {
    let mut s1 = [0f32; LANES];
    let mut s2 = [0f32; LANES];
    let chunks = x.chunks_exact(LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for i in 0..LANES {
            let d = c[i] - center;
            s1[i] += d;
            s2[i] += d * d;
        }
    }
    let (mut a, mut b) = (0f64, 0f64);
    for &v in rest {
        let d = (v - center) as f64;
        a += d;
        b += d * d;
    }
    for i in 0..LANES {
        a += s1[i] as f64;
        b += s2[i] as f64;
    }
    (a, b)
}

#[inline(always)]
fn affine_impl(src: &[f32], dst: &mut [f32], scale: f32, shift: f32, silu: bool) {
    if silu {
        for (d, &s) in dst.iter_mut().zip(src) {
            let y = s * scale + shift;
            *d = y / (1.0 + exp(-y));
        }
    } else {
        for (d, &s) in dst.iter_mut().zip(src) {
            *d = s * scale + shift;
        }
    }
}

#[inline(always)]
fn silu_impl(x: &mut [f32]) {
    for v in x {
        let y = *v;
        *v = y / (1.0 + exp(-y));
    }
}

#[inline(always)]
fn scale_impl(x: &mut [f32], s: f32) {
    for v in x {
        *v *= s;
    }
}

#[inline(always)]
fn add_two_impl(dst: &mut [f32], src: &[f32], a: f32, b: f32) {
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = (s + a) + b;
    }
}

#[inline(always)]
fn add_two_then_impl(dst: &mut [f32], src: &[f32], a: f32, b: f32, r: &[f32]) {
    for ((d, &s), &r) in dst.iter_mut().zip(src).zip(r) {
        *d = ((s + a) + b) + r;
    }
}

#[inline(always)]
fn geglu_impl(value: &[f32], gate: &[f32], dst: &mut [f32]) {
    for ((d, &v), &g) in dst.iter_mut().zip(value).zip(gate) {
        *d = v * (0.5 * g * (1.0 + erf(g * std::f32::consts::FRAC_1_SQRT_2)));
    }
}

/// Defines `pub fn $name` that runs `$imp` compiled for AVX-512 or AVX2+FMA when the CPU has
/// them (the same code and the same lane-by-lane order, so the results do not depend on the tier).
macro_rules! dispatch {
    ($(#[$m:meta])* $name:ident, $imp:ident, ($($arg:ident: $ty:ty),*) -> $ret:ty) => {
        $(#[$m])*
        #[inline]
        pub fn $name($($arg: $ty),*) -> $ret {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
                unsafe fn avx512($($arg: $ty),*) -> $ret {
                    $imp($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2($($arg: $ty),*) -> $ret {
                    $imp($($arg),*)
                }
                match *TIER {
                    // SAFETY: the CPU supports the features each function was compiled for.
                    Tier::Avx512 => return unsafe { avx512($($arg),*) },
                    Tier::Avx2 => return unsafe { avx2($($arg),*) },
                    Tier::Baseline => {}
                }
            }
            $imp($($arg),*)
        }
    };
}

#[cfg(target_arch = "x86_64")]
enum Tier {
    Avx512,
    Avx2,
    Baseline,
}

#[cfg(target_arch = "x86_64")]
static TIER: std::sync::LazyLock<Tier> = std::sync::LazyLock::new(|| {
    use std::is_x86_feature_detected as has;
    let avx2 = has!("avx2") && has!("fma");
    if avx2 && has!("avx512f") && has!("avx512bw") && has!("avx512vl") {
        Tier::Avx512
    } else if avx2 {
        Tier::Avx2
    } else {
        Tier::Baseline
    }
});

dispatch!(
    /// Largest element (-inf for an empty slice).
    max, max_impl, (x: &[f32]) -> f32
);
dispatch!(
    /// `x = exp(x - shift)` in place; returns the sum of the new values.
    exp_shift_sum, exp_shift_sum_impl, (x: &mut [f32], shift: f32) -> f32
);
dispatch!(
    /// Sums of `x - center` and `(x - center)^2`, accumulated in f64 across lanes.
    centered_sums, sum_impl, (x: &[f32], center: f32) -> (f64, f64)
);
dispatch!(
    /// `dst = src * scale + shift`, then SiLU when `silu`.
    affine, affine_impl, (src: &[f32], dst: &mut [f32], scale: f32, shift: f32, silu: bool) -> ()
);
dispatch!(
    /// `x = silu(x)` in place (the values `affine(x, .., 1, 0, true)` gives).
    silu, silu_impl, (x: &mut [f32]) -> ()
);
dispatch!(
    /// `x *= s`.
    scale, scale_impl, (x: &mut [f32], s: f32) -> ()
);
dispatch!(
    /// `dst = (src + a) + b`.
    add_two, add_two_impl, (dst: &mut [f32], src: &[f32], a: f32, b: f32) -> ()
);
dispatch!(
    /// `dst = ((src + a) + b) + r`.
    add_two_then, add_two_then_impl, (dst: &mut [f32], src: &[f32], a: f32, b: f32, r: &[f32]) -> ()
);

dispatch!(
    /// `dst = value * gelu(gate)` with the exact (erf) GELU.
    geglu, geglu_impl, (value: &[f32], gate: &[f32], dst: &mut [f32]) -> ()
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_matches_std_to_a_few_ulp() {
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let want = (x as f64).exp();
            let got = exp(x) as f64;
            worst = worst.max(((got - want) / want).abs());
            x += 0.0137;
        }
        assert!(worst < 3e-7, "worst relative error {worst}");
        assert_eq!(exp(-100.0), 0.0);
        assert_eq!(exp(0.0), 1.0);
    }

    #[test]
    fn erf_is_within_6e7_of_a_series() {
        // erf by its Maclaurin series (f64, converges fast for |x| <= 3).
        let series = |x: f64| {
            let (mut term, mut sum) = (x, x);
            for n in 1..200 {
                term *= -x * x / n as f64;
                sum += term / (2 * n + 1) as f64;
            }
            sum * 2.0 / std::f64::consts::PI.sqrt()
        };
        let mut x = -3.0f32;
        while x <= 3.0 {
            let err = (erf(x) as f64 - series(x as f64)).abs();
            assert!(err < 6e-7, "erf({x}): {err:e}");
            x += 0.01;
        }
        assert_eq!(erf(10.0), 1.0);
        assert_eq!(erf(-10.0), -1.0);
    }

    #[test]
    fn reductions_match_scalar_loops() {
        let x: Vec<f32> = (0..1000)
            .map(|i| ((i * 37) % 101) as f32 * 0.1 - 5.0)
            .collect();
        assert_eq!(max(&x), x.iter().cloned().fold(f32::MIN, f32::max));
        let mut y = x.clone();
        let s = exp_shift_sum(&mut y, 1.0);
        let want: f64 = x.iter().map(|&v| ((v - 1.0) as f64).exp()).sum();
        assert!((s as f64 - want).abs() / want < 1e-5);
        let (a, b) = centered_sums(&x, 0.5);
        let wa: f64 = x.iter().map(|&v| (v - 0.5) as f64).sum();
        let wb: f64 = x.iter().map(|&v| ((v - 0.5) as f64).powi(2)).sum();
        assert!((a - wa).abs() < 1e-3 && (b - wb).abs() / wb < 1e-6);
        let mut d = vec![0f32; x.len()];
        affine(&x, &mut d, 2.0, 1.0, true);
        for (o, &v) in d.iter().zip(&x) {
            let y = (v * 2.0 + 1.0) as f64;
            assert!((*o as f64 - y / (1.0 + (-y).exp())).abs() < 1e-5);
        }
    }
}
