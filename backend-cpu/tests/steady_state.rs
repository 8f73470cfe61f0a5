//! A replayed decode step allocates nothing: a counting global allocator
//! watches replays of a recorded step (embedding lookup from Q8_0, norms,
//! Q4_1 and Q8_0 matmuls, rope, KV store, paged attention, GLU, residual add,
//! argmax) after the first replay has grown the scratch buffers. Counted on
//! the replaying thread (the test harness's own threads allocate when they
//! like); the pool's workers run the same kernel code on their own scratch.

use std::alloc::{GlobalAlloc, Layout, System};

use ferrum_backend_cpu::{FastCpuBackend, Isa};
use ferrum_conformance::cases::{Rng, random_blocks};
use ferrum_engine::backend::{Backend, BackendExt};
use ferrum_engine::ops::{
    Activation, Add, Argmax, Attention, GatherRows, Glu, KvStore, Matmul, MoeCombine, MoeMatmul, MoeRoute, Op, RmsNorm,
    Rope, RopeStyle, RouterScoring,
};
use ferrum_engine::quant::QuantizedMatrix;
use ferrum_engine::quant::ggml::GgmlType;
use ferrum_engine::{DType, Tensor};

struct Counting;

thread_local! {
    // const-initialised and without a destructor: reading it never allocates
    static ALLOCS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

fn allocations() -> usize {
    ALLOCS.with(|a| a.get())
}

// SAFETY: forwards to the system allocator, counting calls
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.with(|a| a.set(a.get() + 1));
        // SAFETY: the caller's contract
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: the caller's contract
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        ALLOCS.with(|a| a.set(a.get() + 1));
        // SAFETY: the caller's contract
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static A: Counting = Counting;

#[test]
fn replaying_a_decode_step_allocates_nothing() {
    for isa in Isa::ALL.into_iter().filter(|i| i.available()) {
        for threads in [1, 2] {
            let b = FastCpuBackend::new(threads, isa).unwrap();
            let allocs = replay_allocations(&b);
            assert_eq!(allocs, 0, "{isa:?} with {threads} threads: {allocs} allocations in 20 replays");
        }
    }
}

fn replay_allocations(b: &FastCpuBackend) -> usize {
    let (vocab, hidden, inter, heads, kv_heads, d, bs, slots) = (512, 128, 256, 4, 2, 32, 4, 64);
    let mut rng = Rng::new(3);
    let weight = |rng: &mut Rng, ty, rows, cols| {
        b.upload_quantized(&QuantizedMatrix::Ggml(random_blocks(rng, ty, rows, cols))).unwrap()
    };
    let embed = weight(&mut rng, GgmlType::Q8_0, vocab, hidden);
    let wq = weight(&mut rng, GgmlType::Q4_1, heads * d, hidden);
    let wk = weight(&mut rng, GgmlType::Q4_1, kv_heads * d, hidden);
    let gate = weight(&mut rng, GgmlType::Q4_1, inter, hidden);
    let down = weight(&mut rng, GgmlType::Q4_0, hidden, inter);
    let router = b.upload_f32(&[4, hidden], &rng.vec(4 * hidden, 1.0)).unwrap();
    let expert_up = weight(&mut rng, GgmlType::Q4_0, 4 * inter / 4, hidden);
    let expert_down = weight(&mut rng, GgmlType::Q5_1, 4 * hidden, inter / 4);
    let norm = b.upload_f32(&[hidden], &rng.vec(hidden, 1.0)).unwrap();
    let freqs = b.upload_f32(&[d / 2], &(0..d / 2).map(|i| 1.0 / (i as f32 + 1.0)).collect::<Vec<_>>()).unwrap();
    let cache = b.upload_f32(&[slots, kv_heads, d], &rng.vec(slots * kv_heads * d, 1.0)).unwrap();
    // one sequence at position 9 (blocks 3, 1, 0 of the cache)
    let ids = b.upload_u32(&[1], &[7]).unwrap();
    let pos = b.upload_u32(&[1], &[9]).unwrap();
    let slot = b.upload_u32(&[1], &[4 * bs as u32 + 1]).unwrap();
    let tables = b.upload_u32(&[1, 4], &[3, 1, 4, 0]).unwrap();
    let seq = b.upload_u32(&[1], &[0]).unwrap();

    assert!(b.begin_recording().unwrap());
    let step = || -> ferrum_engine::Result<Tensor> {
        let x = b.run(&Op::GatherRows(GatherRows), &[&embed, &ids])?;
        let h = b.run(&Op::RmsNorm(RmsNorm { eps: 1e-5, unit_offset: false }), &[&x, &norm])?;
        let q = b.run(&Op::Matmul(Matmul), &[&h, &wq])?.reshape(&[1, heads, d])?;
        let k = b.run(&Op::Matmul(Matmul), &[&h, &wk])?.reshape(&[1, kv_heads, d])?;
        let rope = Op::Rope(Rope { style: RopeStyle::Neox, attention_scale: 1.0 });
        let q = b.run(&rope, &[&q, &pos, &freqs])?;
        let k = b.run(&rope, &[&k, &pos, &freqs])?;
        b.execute(&Op::KvStore(KvStore { num_slots: slots, dtype: DType::F32 }), &[&k, &slot], &cache)?;
        let att = Attention { block_size: bs, scale: 0.2, softcap: None, window: None };
        let o = b.run(&Op::Attention(att), &[&q, &cache, &cache, &tables, &seq, &pos])?.reshape(&[1, heads * d])?;
        let g = b.run(&Op::Matmul(Matmul), &[&o, &gate])?;
        let u = b.run(&Op::Glu(Glu { activation: Activation::Silu }), &[&g, &g])?;
        let y = b.run(&Op::Matmul(Matmul), &[&u, &down])?;
        // a mixture of experts: 4 of inter / 4 rows each, top 2
        let route = b.run(
            &Op::MoeRoute(MoeRoute {
                top_k: 2,
                scoring: RouterScoring::Softmax,
                renormalize: true,
                groups: None,
                scale: 1.0,
            }),
            &[&b.run(&Op::Matmul(Matmul), &[&y, &router])?],
        )?;
        let experts = Op::MoeMatmul(MoeMatmul::new(4));
        let e = b.run(&experts, &[&y, &expert_up, &route])?;
        let e = b.run(&experts, &[&e, &expert_down, &route])?;
        let y = b.run(&Op::MoeCombine(MoeCombine), &[&e, &route])?;
        let r = b.run(&Op::Add(Add), &[&y, &h])?;
        let logits = b.run(&Op::Matmul(Matmul), &[&r, &embed])?;
        b.run(&Op::Argmax(Argmax), &[&logits])
    };
    let out = step();
    let rec = b.end_recording().unwrap();
    let out = out.unwrap();
    assert_eq!(out.dtype(), DType::U32);
    rec.replay().unwrap(); // grows the scratch once
    let first = b.read_u32(&out).unwrap();
    let before = allocations();
    for _ in 0..20 {
        rec.replay().unwrap();
    }
    let allocs = allocations() - before;
    assert_eq!(b.read_u32(&out).unwrap(), first, "replays agree");
    allocs
}
