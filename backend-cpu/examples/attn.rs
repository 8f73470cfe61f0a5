//! Times one decode attention call: `cargo run --release -p ferrum-backend-cpu --example attn -- CTX [threads]`.

use ferrum_backend_cpu::{FastCpuBackend, Isa};
use ferrum_engine::DType;
use ferrum_engine::backend::{Backend, BackendExt};
use ferrum_engine::ops::{Attention, Op};

fn main() {
    let a: Vec<usize> = std::env::args().skip(1).map(|s| s.parse().unwrap()).collect();
    let (ctx, threads) = (a.first().copied().unwrap_or(128), a.get(1).copied().unwrap_or(1));
    let (heads, kvh, d, bs, slots) = (9, 3, 64, 16, 4096);
    let b = FastCpuBackend::new(threads, Isa::from_env().unwrap()).unwrap();
    let q = b.upload_f32(&[1, heads, d], &vec![0.1; heads * d]).unwrap();
    let k = b
        .upload_f32(&[slots, kvh, d], &(0..slots * kvh * d).map(|i| (i % 7) as f32 * 0.01).collect::<Vec<_>>())
        .unwrap();
    let mb = 256;
    let table: Vec<u32> = (0..mb as u32).collect();
    let tables = b.upload_u32(&[1, mb], &table).unwrap();
    let seq = b.upload_u32(&[1], &[0]).unwrap();
    let pos = b.upload_u32(&[1], &[ctx as u32 - 1]).unwrap();
    let out = b.alloc(&[1, heads, d], DType::F32).unwrap();
    let op = Op::Attention(Attention { block_size: bs, scale: 0.125, softcap: None, window: None });
    for _ in 0..100 {
        b.execute(&op, &[&q, &k, &k, &tables, &seq, &pos], &out).unwrap();
    }
    let n = 2000;
    let t = std::time::Instant::now();
    for _ in 0..n {
        b.execute(&op, &[&q, &k, &k, &tables, &seq, &pos], &out).unwrap();
    }
    println!("attention ctx={ctx} threads={threads}: {:.1} us/call", t.elapsed().as_secs_f64() * 1e6 / n as f64);
}
