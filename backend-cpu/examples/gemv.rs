//! Times one matmul shape on the fast CPU backend: `cargo run --release -p
//! ferrum-backend-cpu --example gemv -- q4_1 1 576 1536 [threads]`. Prints
//! microseconds per call and the weight bytes read per second.

use ferrum_backend_cpu::{FastCpuBackend, Isa};
use ferrum_conformance::cases::{Rng, quant_weight};
use ferrum_engine::backend::BackendExt;
use ferrum_engine::ops::{Matmul, Op};
use ferrum_engine::quant::QuantFormat;
use ferrum_engine::{Backend, DType};

fn main() {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, d: &str| a.get(i).cloned().unwrap_or_else(|| d.to_string());
    let format = arg(0, "q4_1");
    let [m, k, n, threads] = [1, 2, 3, 4].map(|i| arg(i, ["", "1", "576", "1536", "2"][i]).parse::<usize>().unwrap());
    let b = FastCpuBackend::new(threads, Isa::from_env().unwrap()).unwrap();
    let mut rng = Rng::new(1);
    let (w, bytes) = if format == "f32" || format == "f16" {
        let dt = if format == "f32" { DType::F32 } else { DType::F16 };
        let v = rng.vec(n * k, 1.0);
        let t = match dt {
            DType::F32 => b.upload_f32(&[n, k], &v).unwrap(),
            _ => {
                let h: Vec<half::f16> = v.iter().map(|&x| half::f16::from_f32(x)).collect();
                b.upload(&[n, k], dt, bytemuck::cast_slice(&h)).unwrap()
            }
        };
        (t, n * k * dt.size_bytes())
    } else {
        let q = quant_weight(&mut rng, format.parse::<QuantFormat>().unwrap(), n, k);
        let bytes = q.storage_bytes();
        (b.upload_quantized(&q).unwrap(), bytes)
    };
    let x = b.upload_f32(&[m, k], &rng.vec(m * k, 1.0)).unwrap();
    let out = b.alloc(&[m, n], DType::F32).unwrap();
    let op = Op::Matmul(Matmul);
    let iters = (200_000_000 / (m * n * k)).clamp(10, 20000);
    for _ in 0..iters / 10 + 1 {
        b.execute(&op, &[&x, &w], &out).unwrap();
    }
    let t = std::time::Instant::now();
    for _ in 0..iters {
        b.execute(&op, &[&x, &w], &out).unwrap();
    }
    let us = t.elapsed().as_secs_f64() * 1e6 / iters as f64;
    println!(
        "{format} m={m} k={k} n={n} threads={threads} {:?}: {us:.1} us/call, {:.1} GB/s of weights, {:.1} GMAC/s",
        b.isa(),
        bytes as f64 / us / 1e3,
        (m * n * k) as f64 / us / 1e3
    );
}
