//! Times the CPU kernels one SD-1.5 layer shape at a time (best of several runs, f32), to find
//! which layer type is behind PyTorch: `tools/bench_kernels_torch.py` prints the same lines for
//! PyTorch (2 threads).
//!
//! ```sh
//! cargo run --release -p semi-diffusion --example kernels
//! python3 tools/bench_kernels_torch.py
//! ```
use candle_core::{Device, Module, Tensor};
use semi_diffusion::cpu;
use std::time::Instant;

fn time(
    name: &str,
    flop: f64,
    mut f: impl FnMut() -> candle_core::Result<Tensor>,
) -> candle_core::Result<()> {
    f()?;
    let mut best = f64::MAX;
    let reps = ((3e10 / flop.max(1e8)) as usize).clamp(3, 50);
    for _ in 0..reps {
        let t = Instant::now();
        f()?;
        best = best.min(t.elapsed().as_secs_f64());
    }
    println!(
        "{name:40} {:8.2} ms {:6.0} GFLOP/s",
        best * 1e3,
        flop / best / 1e9
    );
    Ok(())
}

fn main() -> candle_core::Result<()> {
    let d = Device::Cpu;
    for &(c, s) in &[
        (320usize, 64usize),
        (640, 32),
        (1280, 16),
        (1280, 8),
        (128, 256),
        (256, 128),
        (512, 64),
    ] {
        let x = Tensor::randn(0f32, 1., (1, c, s, s), &d)?;
        let w = Tensor::randn(0f32, 0.05, (c, c, 3, 3), &d)?;
        let b = Tensor::randn(0f32, 1., c, &d)?;
        let taps = cpu::conv::taps_from_oihw(&w)?;
        let flop = 2.0 * (c * c * 9 * s * s) as f64;
        time(&format!("conv3x3 {c}x{s}x{s}"), flop, || {
            cpu::conv::conv3x3(&x, &taps, Some(&b))
        })?;
        let g = Tensor::ones(c, candle_core::DType::F32, &d)?;
        time(
            &format!("groupnorm+silu {c}x{s}x{s}"),
            (c * s * s) as f64,
            || cpu::group_norm::group_norm(&x, 32, &g, &b, 1e-5, true),
        )?;
    }
    for &(n, c, heads, nk) in &[
        (4096usize, 320usize, 8usize, 4096usize),
        (1024, 640, 8, 1024),
        (256, 1280, 8, 256),
        (4096, 320, 8, 77),
        (4096, 512, 1, 4096),
    ] {
        let q = Tensor::randn(0f32, 1., (1, n, c), &d)?;
        let k = Tensor::randn(0f32, 1., (1, nk, c), &d)?;
        let v = Tensor::randn(0f32, 1., (1, nk, c), &d)?;
        let flop = 4.0 * (n * nk * c) as f64;
        let scale = 1.0 / ((c / heads) as f32).sqrt();
        time(&format!("attention {n}x{nk} c{c} h{heads}"), flop, || {
            cpu::attention::attend(&q, &k, &v, heads, scale)
        })?;
    }
    for &(n, i, o) in &[
        (4096usize, 320usize, 320usize),
        (4096, 320, 2560),
        (4096, 1280, 320),
        (1024, 640, 640),
        (1024, 640, 5120),
        (77, 768, 320),
        (77, 768, 3072),
    ] {
        let x = Tensor::randn(0f32, 1., (1, n, i), &d)?;
        let w = Tensor::randn(0f32, 0.05, (o, i), &d)?;
        let b = Tensor::randn(0f32, 1., o, &d)?;
        let lin = candle_nn::Linear::new(w.clone(), Some(b.clone()));
        time(
            &format!("candle linear {n}x{i}->{o}"),
            2.0 * (n * i * o) as f64,
            || lin.forward(&x),
        )?;
        time(
            &format!("linear {n}x{i}->{o}"),
            2.0 * (n * i * o) as f64,
            || cpu::linear::linear(&x, &w, Some(&b)),
        )?;
        if o % 2 == 0 && o >= 2560 {
            let y = lin.forward(&x)?;
            time(&format!("geglu {n}x{o}"), (n * o) as f64, || {
                cpu::elementwise::geglu(&y)
            })?;
        }
    }
    Ok(())
}
