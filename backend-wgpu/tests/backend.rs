//! The backend's own promises beyond the op cases: batching (one submit per
//! wait), pipelines compiled once, zeros from recycled buffers, writes that
//! do not overtake recorded work, host-checked indices, the f16 path without
//! SHADER_F16, and errors instead of panics.

mod common;

use std::sync::Arc;

use ferrum_backend_wgpu::{Options, WgpuBackend};
use ferrum_conformance::cases::all_cases;
use ferrum_conformance::harness::check;
use ferrum_engine::ops::{Add, Argmax, GatherRows, KvStore, Op, OpKind, Scale};
use ferrum_engine::{Backend, BackendExt, CpuBackend, DType};

fn default_backend() -> Option<WgpuBackend> {
    common::backend(Options::default())
}

#[test]
fn many_ops_one_submit_one_read_back() {
    let Some(b) = default_backend() else { return };
    let x = b.upload_f32(&[4], &[1.0, 2.0, 3.0, 4.0]).unwrap();
    let mut y = x.clone();
    for _ in 0..10 {
        y = b.run(&Op::Add(Add), &[&y, &x]).unwrap();
    }
    assert_eq!(b.stats().submits, 0, "execute must not submit");
    assert_eq!(b.read_f32(&y).unwrap(), [11.0, 22.0, 33.0, 44.0]);
    let s = b.stats();
    assert_eq!((s.submits, s.readbacks, s.dispatches), (1, 1, 10));
    b.sync().unwrap();
    assert_eq!(b.stats().submits, 1, "nothing pending, nothing to submit");
}

#[test]
fn pipelines_compile_once() {
    let Some(b) = default_backend() else { return };
    let x = b.upload_f32(&[3], &[1.0, 2.0, 3.0]).unwrap();
    b.run(&Op::Scale(Scale { factor: 2.0 }), &[&x]).unwrap();
    let after_first = b.pipeline_count();
    // another factor is a uniform, not a new pipeline
    let y = b.run(&Op::Scale(Scale { factor: 3.0 }), &[&x]).unwrap();
    assert_eq!(b.pipeline_count(), after_first);
    assert_eq!(b.read_f32(&y).unwrap(), [3.0, 6.0, 9.0]);
}

#[test]
fn recycled_buffers_read_as_zeros() {
    let Some(b) = default_backend() else { return };
    let x = b.upload_f32(&[64], &[5.0; 64]).unwrap();
    let y = b.run(&Op::Scale(Scale { factor: 2.0 }), &[&x]).unwrap();
    b.sync().unwrap();
    drop(y); // back to the pool, holding 10.0s
    assert!(b.pooled_bytes() > 0);
    let z = b.alloc(&[64], DType::F32).unwrap(); // the same size class: recycled
    assert_eq!(b.read_f32(&z).unwrap(), [0.0; 64]);
    // as an input, and as kv_store's in-place cache, it is zeros too
    let y = b.run(&Op::Scale(Scale { factor: 2.0 }), &[&x]).unwrap();
    drop(y);
    let zeros = b.alloc(&[64], DType::F32).unwrap();
    let sum = b.run(&Op::Add(Add), &[&x, &zeros]).unwrap();
    assert_eq!(b.read_f32(&sum).unwrap(), [5.0; 64]);
    let y = b.run(&Op::Scale(Scale { factor: 2.0 }), &[&x]).unwrap();
    drop(y);
    let cache = b.alloc(&[16, 1, 4], DType::F32).unwrap();
    let src = b.upload_f32(&[1, 1, 4], &[1.0; 4]).unwrap();
    let slots = b.upload_u32(&[1], &[3]).unwrap();
    b.execute(&Op::KvStore(KvStore { num_slots: 16, dtype: DType::F32 }), &[&src, &slots], &cache).unwrap();
    let got = b.read_f32(&cache).unwrap();
    let want: Vec<f32> = (0..64).map(|i| if (12..16).contains(&i) { 1.0 } else { 0.0 }).collect();
    assert_eq!(got, want);
}

#[test]
fn a_write_does_not_overtake_recorded_ops() {
    let Some(b) = default_backend() else { return };
    let x = b.upload_f32(&[3], &[1.0, 2.0, 3.0]).unwrap();
    let before = b.run(&Op::Scale(Scale { factor: 2.0 }), &[&x]).unwrap();
    b.write(&x, bytemuck_f32(&[10.0, 20.0, 30.0])).unwrap();
    let after = b.run(&Op::Scale(Scale { factor: 2.0 }), &[&x]).unwrap();
    assert_eq!(b.read_f32(&before).unwrap(), [2.0, 4.0, 6.0]);
    assert_eq!(b.read_f32(&after).unwrap(), [20.0, 40.0, 60.0]);
    assert_eq!(b.stats().submits, 2, "the write itself submits nothing");
}

/// An upload may take a buffer whose last op is still recorded, not run.
#[test]
fn an_upload_into_a_recycled_buffer_waits_its_turn() {
    let Some(b) = default_backend() else { return };
    let x = b.upload_f32(&[3], &[1.0, 2.0, 3.0]).unwrap();
    let y = b.run(&Op::Scale(Scale { factor: 2.0 }), &[&x]).unwrap();
    drop(x); // idle, but y's dispatch has not run yet
    let before = b.pooled_bytes();
    let z = b.upload_f32(&[3], &[7.0, 8.0, 9.0]).unwrap();
    assert!(b.pooled_bytes() < before, "the upload should have taken x's buffer");
    assert_eq!(b.read_f32(&y).unwrap(), [2.0, 4.0, 6.0]);
    assert_eq!(b.read_f32(&z).unwrap(), [7.0, 8.0, 9.0]);
}

#[test]
fn indices_are_checked_against_what_was_written() {
    let Some(b) = default_backend() else { return };
    let table = b.upload_f32(&[2, 2], &[1.0, 2.0, 3.0, 4.0]).unwrap();
    let ids = b.upload_u32(&[1], &[1]).unwrap();
    let row = b.run(&Op::GatherRows(GatherRows), &[&table, &ids]).unwrap();
    assert_eq!(b.read_f32(&row).unwrap(), [3.0, 4.0]);
    b.write(&ids, &7u32.to_le_bytes()).unwrap();
    let err = b.run(&Op::GatherRows(GatherRows), &[&table, &ids]).unwrap_err();
    assert!(err.to_string().contains("index 7 out of range"), "{err}");
}

/// argmax writes u32 ids on the device: the host copy that indices are
/// checked against is read back before another op uses them (it would say
/// zeros otherwise), once.
#[test]
fn ids_an_op_wrote_are_checked_as_the_device_holds_them() {
    let Some(b) = default_backend() else { return };
    let table = b.upload_f32(&[8, 2], &(0..16).map(|v| v as f32).collect::<Vec<_>>()).unwrap();
    let logits = |hot: &[usize]| {
        let mut x = vec![0.0f32; hot.len() * 10];
        for (r, &c) in hot.iter().enumerate() {
            x[r * 10 + c] = 1.0;
        }
        b.upload_f32(&[hot.len(), 10], &x).unwrap()
    };
    let gather = Op::GatherRows(GatherRows);
    // 9 is past the table's 8 rows
    let ids = b.run(&Op::Argmax(Argmax), &[&logits(&[3, 9])]).unwrap();
    assert_eq!(b.stats().submits, 0, "the argmax is only recorded");
    let err = b.run(&gather, &[&table, &ids]).unwrap_err().to_string();
    assert!(err.contains("index 9 out of range"), "{err}");
    assert_eq!(b.read_u32(&ids).unwrap(), [3, 9]);
    // in range: the rows the device picked; one read-back, then the copy is fresh
    let ids = b.run(&Op::Argmax(Argmax), &[&logits(&[7, 2])]).unwrap();
    let readbacks = b.stats().readbacks;
    let rows = b.run(&gather, &[&table, &ids]).unwrap();
    assert_eq!(b.stats().readbacks, readbacks + 1, "the stale ids were read back");
    assert_eq!(b.read_f32(&rows).unwrap(), [14.0, 15.0, 4.0, 5.0]);
    let readbacks = b.stats().readbacks;
    b.run(&gather, &[&table, &ids]).unwrap();
    b.sync().unwrap();
    assert_eq!(b.stats().readbacks, readbacks, "fresh again: no read-back");
}

/// One u32 tensor passed as two inputs (sequence ids and positions, both 0).
#[test]
fn an_input_given_twice_is_fine() {
    use ferrum_engine::ops::Attention;
    let Some(b) = default_backend() else { return };
    let q = b.upload_f32(&[1, 1, 2], &[1.0, 0.0]).unwrap();
    let cache = b.upload_f32(&[2, 1, 2], &[3.0, 4.0, 5.0, 6.0]).unwrap();
    let tables = b.upload_u32(&[1, 1], &[0]).unwrap();
    let zero = b.upload_u32(&[1], &[0]).unwrap();
    let op = Op::Attention(Attention { block_size: 2, scale: 1.0, softcap: None, window: None });
    let out = b.run(&op, &[&q, &cache, &cache, &tables, &zero, &zero]).unwrap();
    assert_eq!(b.read_f32(&out).unwrap(), [3.0, 4.0]);
}

#[test]
fn f16_weights_without_shader_f16() {
    let Some(b) = common::backend(Options { native_f16: false, ..Options::default() }) else { return };
    assert!(b.device_description().contains("unpacked"), "{}", b.device_description());
    let f16_cases: Vec<_> = all_cases().into_iter().filter(|c| c.dtype == DType::F16).collect();
    assert!(f16_cases.iter().any(|c| c.kind() == OpKind::Matmul));
    assert!(f16_cases.iter().any(|c| c.kind() == OpKind::GatherRows));
    for case in &f16_cases {
        let o = check(&b, case);
        println!("{}", o.line());
        assert!(o.passed(), "{}", o.line());
    }
}

#[test]
fn foreign_and_oversized_tensors_are_errors() {
    let Some(b) = default_backend() else { return };
    let cpu = CpuBackend::new();
    let on_cpu = cpu.upload_f32(&[2], &[1.0, 2.0]).unwrap();
    let on_gpu = b.upload_f32(&[2], &[1.0, 2.0]).unwrap();
    assert!(b.read(&on_cpu).is_err());
    assert!(b.run(&Op::Add(Add), &[&on_gpu, &on_cpu]).is_err());
    assert!(b.alloc(&[1 << 40, 1 << 20], DType::F32).is_err(), "past max_buffer_size");
    assert!(b.alloc(&[usize::MAX, 4], DType::F32).is_err(), "overflowing shape");
    assert!(b.upload(&[3], DType::F32, &[0; 8]).is_err());
    // still usable afterwards
    assert_eq!(b.read_f32(&on_gpu).unwrap(), [1.0, 2.0]);
}

#[test]
fn the_shared_backend_is_one_device() {
    let (Ok(a), Ok(b)) = (ferrum_backend_wgpu::shared(), ferrum_backend_wgpu::shared()) else {
        return println!("skipped: wgpu absent");
    };
    assert!(Arc::ptr_eq(&a, &b));
}

fn bytemuck_f32(v: &[f32]) -> &[u8] {
    bytemuck::cast_slice(v)
}

/// The op table's matmuls have m <= 8 (gemv); prefill-sized m takes `tiled`,
/// with edges that are not multiples of its 32 x 32 block.
#[test]
fn tiled_matmul_matches_the_cpu() {
    use ferrum_conformance::cases::{Rng, matmul};
    let Some(b) = default_backend() else { return };
    let mut rng = Rng::new(5);
    for dtype in [DType::F32, DType::F16, DType::BF16] {
        for (m, k, n, bias) in [(9, 64, 33, true), (37, 129, 70, false), (64, 8, 32, true)] {
            let o = check(&b, &matmul(&mut rng, dtype, m, k, n, bias));
            println!("{}", o.line());
            assert!(o.passed(), "{}", o.line());
        }
    }
}

/// moe_matmul's expert ids live on the device, with no host copy to check:
/// one out of range is clamped into the stack, never read past it.
#[test]
fn moe_matmul_clamps_expert_ids() {
    use ferrum_engine::ops::MoeMatmul;
    let Some(b) = default_backend() else { return };
    // expert e is (e + 1) times the identity
    let w: Vec<f32> = (0..3).flat_map(|e| [1.0, 0.0, 0.0, 1.0].map(|v| v * (e + 1) as f32)).collect();
    let w = b.upload_f32(&[6, 2], &w).unwrap();
    let x = b.upload_f32(&[1, 2], &[1.0, 2.0]).unwrap();
    let route = b.upload_f32(&[1, 6], &[1.0, 1.0, 1.0, 99.0, -1.0, 1.0]).unwrap();
    let out = b.run(&Op::MoeMatmul(MoeMatmul::new(3)), &[&x, &w, &route]).unwrap();
    assert_eq!(b.read_f32(&out).unwrap(), [3.0, 6.0, 1.0, 2.0, 2.0, 4.0]);
}

/// The op table's moe_matmuls have at most 26 (token, choice) rows; a
/// prefill's take several chunks of the route (64 rows) and several batches
/// (8 rows) per expert.
#[test]
fn moe_matmul_of_a_prefill_matches_the_cpu() {
    use ferrum_conformance::cases::{GGML_FORMATS, QUANT_FORMATS, Rng, moe_matmul};
    let Some(b) = default_backend() else { return };
    let mut rng = Rng::new(7);
    let quant = [QUANT_FORMATS[0], GGML_FORMATS[0]].map(DType::Quant);
    for dtype in [DType::F32, DType::F16, DType::BF16].into_iter().chain(quant) {
        for ([experts, n, k], [tokens, top_k], per_choice) in
            [([4, 24, 64], [100, 2], false), ([6, 17, 64], [70, 3], true), ([16, 8, 32], [9, 8], false)]
        {
            let o = check(
                &b,
                &moe_matmul(&mut rng, dtype, [experts, n, k], [tokens, top_k], per_choice, [!per_choice, false]),
            );
            println!("{}", o.line());
            assert!(o.passed(), "{}", o.line());
        }
    }
}
