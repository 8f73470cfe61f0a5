//! Op conformance: every case on every present backend (the cpu reference
//! against the f64 oracle, others against the cpu), required backends
//! present, full coverage of the op table, bad inputs rejected, and proof
//! that the check can fail.

use std::sync::Arc;

use ferrum_conformance::cases::{self, Case, HostTensor, Rng, all_cases, op_dtypes};
use ferrum_conformance::harness::{
    BadInput, BadOut, REFERENCE, Verdict, available_backends, check, check_bad_input, check_bad_upload, coverage,
    expected, judge, judge_exact, run_case, tolerance,
};
use ferrum_conformance::oracle;
use ferrum_engine::ops::{
    Activation, Add, Argmax, Attention, GatherRows, Glu, KvStore, Matmul, Op, OpKind, RmsNorm, Rope, RopeStyle, Scale,
    Softcap,
};
use ferrum_engine::{Backend, CpuBackend, DType};

fn present() -> Vec<Arc<dyn Backend>> {
    available_backends().into_iter().filter_map(|(_, b)| b.ok()).collect()
}

#[test]
fn every_case_passes_on_every_present_backend() {
    let cases = all_cases();
    let mut failures = Vec::new();
    for b in present() {
        for case in &cases {
            let o = check(b.as_ref(), case);
            println!("{}", o.line());
            if o.failed() {
                failures.push(o.line());
            }
        }
    }
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn required_backends_are_present() {
    let required = std::env::var("FERRUM_REQUIRE_BACKENDS").unwrap_or_else(|_| "cpu-ref,cpu".into());
    let known = available_backends();
    for name in required.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        match known.iter().find(|(n, _)| n == name) {
            Some((_, Ok(_))) => {}
            Some((_, Err(why))) => panic!("required backend {name} is absent: {why}"),
            None => panic!("required backend {name} is not one this build knows"),
        }
    }
}

#[test]
fn matrix_covers_every_op_kind() {
    let cpu: Arc<dyn Backend> = Arc::new(CpuBackend::new());
    let outcomes: Vec<_> = all_cases().iter().map(|c| check(cpu.as_ref(), c)).collect();
    let rows = coverage(std::slice::from_ref(&cpu), &outcomes);
    for kind in OpKind::ALL {
        assert!(!op_dtypes(kind).is_empty(), "{} takes no dtype", kind.name());
        for dtype in op_dtypes(kind) {
            let row = rows.iter().find(|r| r.kind == kind && r.dtype == dtype);
            let cells = row.map(|r| r.cells.clone()).unwrap_or_default();
            // the reference backend supports everything and has cases for it
            assert_eq!(cells, ["OK"], "{} {dtype}", kind.name());
        }
    }
}

#[test]
fn bad_inputs_are_errors_not_panics() {
    for b in present() {
        let mut problems: Vec<String> =
            bad_inputs().iter().filter_map(|bad| check_bad_input(b.as_ref(), bad).err()).collect();
        problems.extend(check_bad_upload(b.as_ref()).err());
        assert!(problems.is_empty(), "{}: {problems:#?}", b.name());
    }
}

/// Wrong shapes, wrong dtypes and out-of-range ids, slots, sequences and
/// positions, for every op. Each must be an `Err` on every backend.
fn bad_inputs() -> Vec<BadInput> {
    let f = |shape: &[usize]| HostTensor::f32(shape, vec![0.5; shape.iter().product()]);
    let u = |data: &[u32]| HostTensor::u32(&[data.len()], data.to_vec());
    let out = |shape: &[usize]| BadOut::Fresh(shape.to_vec(), DType::F32);
    let mut list = Vec::new();
    let mut bad = |what: &str, op: &Op, inputs, out| {
        let what = format!("{} {what}", op.kind().name());
        list.push(BadInput { what, op: op.clone(), inputs, out });
    };
    let gather = Op::GatherRows(GatherRows);
    bad("id == rows", &gather, vec![f(&[4, 3]), u(&[1, 4])], out(&[2, 3]));
    bad("ids of dtype f32", &gather, vec![f(&[4, 3]), f(&[2])], out(&[2, 3]));
    bad("table of rank 1", &gather, vec![f(&[12]), u(&[0])], out(&[1, 3]));
    bad("one input", &gather, vec![f(&[4, 3])], out(&[1, 3]));
    let norm = Op::RmsNorm(RmsNorm { eps: 1e-6, unit_offset: false });
    bad("w too short", &norm, vec![f(&[2, 5]), f(&[4])], out(&[2, 5]));
    bad("x of rank 3", &norm, vec![f(&[2, 1, 5]), f(&[5])], out(&[2, 1, 5]));
    bad("output of wrong shape", &norm, vec![f(&[2, 5]), f(&[5])], out(&[5, 2]));
    let mm = Op::Matmul(Matmul);
    bad("k mismatch", &mm, vec![f(&[2, 5]), f(&[3, 4])], out(&[2, 3]));
    bad("bias of wrong length", &mm, vec![f(&[2, 4]), f(&[3, 4]), f(&[4])], out(&[2, 3]));
    bad("four inputs", &mm, vec![f(&[2, 4]), f(&[3, 4]), f(&[3]), f(&[3])], out(&[2, 3]));
    bad("output aliases x", &mm, vec![f(&[3, 3]), f(&[3, 3])], BadOut::Input(0));
    let rope = Op::Rope(Rope { style: RopeStyle::Neox, attention_scale: 1.0 });
    bad("positions count", &rope, vec![f(&[3, 2, 8]), u(&[0, 1]), f(&[4])], out(&[3, 2, 8]));
    bad("inv_freq past head_dim", &rope, vec![f(&[1, 2, 8]), u(&[0]), f(&[5])], out(&[1, 2, 8]));
    bad("x of rank 2", &rope, vec![f(&[1, 8]), u(&[0]), f(&[4])], out(&[1, 8]));
    let store = Op::KvStore(KvStore { num_slots: 6, dtype: DType::F32 });
    bad("slot == num_slots", &store, vec![f(&[2, 1, 4]), u(&[0, 6])], out(&[6, 1, 4]));
    bad("slot written twice", &store, vec![f(&[2, 1, 4]), u(&[3, 3])], out(&[6, 1, 4]));
    bad("slots count", &store, vec![f(&[2, 1, 4]), u(&[0])], out(&[6, 1, 4]));
    bad("cache of wrong shape", &store, vec![f(&[2, 1, 4]), u(&[0, 1])], out(&[5, 1, 4]));
    bad("src of rank 2", &store, vec![f(&[2, 4]), u(&[0, 1])], out(&[6, 4]));
    // a valid attention call to spoil: 2 tokens of one sequence in 2 blocks of 3 slots
    let att = |block_size| Op::Attention(Attention { block_size, scale: 0.5, softcap: None, window: None });
    let att_in = |table: [u32; 2], seq: [u32; 2], pos: [u32; 2]| {
        let tables = HostTensor::u32(&[1, 2], table.to_vec());
        vec![f(&[2, 2, 4]), f(&[6, 1, 4]), f(&[6, 1, 4]), tables, u(&seq), u(&pos)]
    };
    let ok_in = || att_in([1, 0], [0, 0], [0, 1]);
    let att_out = || out(&[2, 2, 4]);
    bad("block id past the cache", &att(3), att_in([1, 2], [0, 0], [0, 4]), att_out());
    bad("token of a missing sequence", &att(3), att_in([1, 0], [0, 1], [0, 1]), att_out());
    bad("position past the block table", &att(3), att_in([1, 0], [0, 0], [0, 6]), att_out());
    bad("block_size 0", &att(0), ok_in(), att_out());
    let windowed = |window, softcap| Op::Attention(Attention { block_size: 3, scale: 0.5, softcap, window });
    bad("window 0", &windowed(Some(0), None), ok_in(), att_out());
    bad("softcap 0", &windowed(None, Some(0.0)), ok_in(), att_out());
    bad("slots not whole blocks", &att(4), ok_in(), att_out());
    let mut kv_mismatch = ok_in();
    kv_mismatch[2] = f(&[6, 2, 2]);
    bad("k and v caches differ", &att(3), kv_mismatch, att_out());
    let mut gqa = ok_in();
    (gqa[0], gqa[1], gqa[2]) = (f(&[2, 3, 4]), f(&[6, 2, 4]), f(&[6, 2, 4]));
    bad("heads not a multiple of kv heads", &att(3), gqa, out(&[2, 3, 4]));
    let glu = Op::Glu(Glu { activation: Activation::Silu });
    bad("shapes differ", &glu, vec![f(&[5]), f(&[6])], out(&[5]));
    bad("shapes differ", &Op::Add(Add), vec![f(&[2, 3]), f(&[3, 2])], out(&[2, 3]));
    bad("u32 input", &Op::Add(Add), vec![f(&[3]), u(&[1, 2, 3])], out(&[3]));
    bad("output aliases b", &Op::Add(Add), vec![f(&[3]), f(&[3])], BadOut::Input(1));
    let scale = Op::Scale(Scale { factor: 2.0 });
    bad("two inputs", &scale, vec![f(&[3]), f(&[3])], out(&[3]));
    bad("output of wrong shape", &scale, vec![f(&[3])], out(&[4]));
    bad("cap 0", &Op::Softcap(Softcap { cap: 0.0 }), vec![f(&[3])], out(&[3]));
    bad("u32 input", &Op::Softcap(Softcap { cap: 1.0 }), vec![u(&[1, 2])], out(&[2]));
    let ids = |n: usize| BadOut::Fresh(vec![n], DType::U32);
    bad("rows of 0 columns", &Op::Argmax(Argmax), vec![f(&[2, 0])], ids(2));
    bad("x of rank 1", &Op::Argmax(Argmax), vec![f(&[5])], ids(1));
    bad("u32 input", &Op::Argmax(Argmax), vec![HostTensor::u32(&[1, 2], vec![1, 2])], ids(1));
    bad("f32 output", &Op::Argmax(Argmax), vec![f(&[2, 3])], out(&[2]));
    bad("output of wrong length", &Op::Argmax(Argmax), vec![f(&[2, 3])], ids(3));
    list
}

/// Nudge one element of a correct cpu result just past the tolerance: the
/// comparison must say FAIL, so a pass means something.
#[test]
fn the_check_can_fail() {
    let case = all_cases().into_iter().find(|c| c.kind() == OpKind::RmsNorm).unwrap();
    let want = expected(&case, REFERENCE).unwrap();
    let mut got = run_case(&CpuBackend::new(), &case).unwrap();
    let tol = tolerance(REFERENCE, case.dtype);
    assert!(matches!(judge(&got, &want, tol, "oracle"), Verdict::Ok { .. }));
    // one element off by sqrt(2 tol * sum(want^2)) gives nmse = 2 tol
    let norm: f64 = want.iter().map(|v| v * v).sum();
    got[17] += (2.0 * tol * norm).sqrt() as f32;
    assert!(matches!(judge(&got, &want, tol, "oracle"), Verdict::Fail { .. }));
    got[17] = f32::NAN;
    assert!(matches!(judge(&got, &want, tol, "oracle"), Verdict::Fail { .. }));
    assert!(matches!(judge(&got[1..], &want, tol, "oracle"), Verdict::Fail { .. }));
}

/// Indices are judged by equality: an id off by one fails though its nmse
/// is far below any float tolerance.
#[test]
fn an_index_off_by_one_fails() {
    let case = all_cases().into_iter().find(|c| c.kind() == OpKind::Argmax && c.inputs[0].shape[1] == 50257).unwrap();
    let want = expected(&case, REFERENCE).unwrap();
    let mut got = run_case(&CpuBackend::new(), &case).unwrap();
    assert!(matches!(judge_exact(&got, &want, "oracle"), Verdict::Ok { .. }));
    assert!(matches!(check(&CpuBackend::new(), &case).verdict, Verdict::Ok { .. }));
    let i = got.iter().position(|&v| v > 1000.0).unwrap();
    got[i] += 1.0;
    assert!(matches!(judge(&got, &want, 1e-7, "oracle"), Verdict::Ok { .. }), "nmse alone would pass it");
    assert!(matches!(judge_exact(&got, &want, "oracle"), Verdict::Fail { .. }));
}

/// The argmax cases hold what their patterns promise (ties, infinities,
/// NaN, signed zeros), so passing them tests the rule.
#[test]
fn argmax_rows_hold_their_patterns() {
    use ferrum_conformance::cases::ArgmaxRow;
    let cols = 1031;
    let case = cases::argmax(&mut Rng::new(5), ArgmaxRow::ALL.len(), cols);
    let ids = oracle::eval(&case.op, &case.inputs, None).unwrap();
    let (early, mid) = (cols / 3, cols / 2);
    for (pattern, &id) in ArgmaxRow::ALL.iter().zip(&ids) {
        let want = match pattern {
            ArgmaxRow::Tie => early,
            ArgmaxRow::PosInf | ArgmaxRow::SignedZeros => mid,
            ArgmaxRow::AllNegInf | ArgmaxRow::AllNan | ArgmaxRow::Constant => 0,
            ArgmaxRow::Nan => {
                assert!(!(id as usize).is_multiple_of(7), "a NaN won");
                continue;
            }
            ArgmaxRow::NegInfHalf => {
                assert!(!(id as usize).is_multiple_of(2), "-inf won");
                continue;
            }
            ArgmaxRow::Random | ArgmaxRow::Negative => continue,
        };
        assert_eq!(id as usize, want, "{pattern:?}");
    }
}

#[test]
fn describe_is_self_describing() {
    let case = all_cases().into_iter().find(|c| c.kind() == OpKind::RmsNorm).unwrap();
    assert_eq!(case.describe(), "rms_norm(dtype=f32, rows=5, cols=4099, eps=1e-6)");
    let o = check(&CpuBackend::new(), &case);
    assert!(o.line().starts_with("rms_norm(dtype=f32, rows=5, cols=4099, eps=1e-6) cpu-ref: OK nmse="), "{}", o.line());
}

fn eval(op: Op, inputs: Vec<HostTensor>) -> Vec<f64> {
    oracle::eval(&op, &inputs, None).unwrap()
}

fn close(got: &[f64], want: &[f64]) {
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(want) {
        assert!((g - w).abs() < 1e-6, "{got:?} vs {want:?}");
    }
}

/// The oracle on examples small enough to work by hand.
#[test]
fn oracle_agrees_with_hand_computed_values() {
    let f = HostTensor::f32;
    let u = |v: &[u32]| HostTensor::u32(&[v.len()], v.to_vec());
    close(&eval(Op::Add(Add), vec![f(&[2], vec![1.0, 2.0]), f(&[2], vec![0.5, -2.0])]), &[1.5, 0.0]);
    close(&[oracle::glu(Activation::Silu, 0.0, 1.0), oracle::glu(Activation::GeluTanh, 0.0, 1.0)], &[0.0, 0.0]);
    close(&[oracle::glu(Activation::Silu, 2.0, 1.0)], &[2.0 / (1.0 + (-2.0f64).exp())]);
    // gpt-oss's SwiGLU: gate 9 clamps to 7, up -9 to -7: 7 * sigmoid(1.702 * 7) * (-7 + 1)
    let clamped = Activation::SwigluClamped { alpha: 1.702, limit: 7.0 };
    close(&[oracle::glu(clamped, 9.0, -9.0)], &[7.0 / (1.0 + (-1.702f64 * 7.0).exp()) * -6.0]);
    // (1, 0) at angle pi/2 becomes (0, 1); the third element passes through
    let rope = Op::Rope(Rope { style: RopeStyle::Interleaved, attention_scale: 2.0 });
    let half_pi = std::f32::consts::FRAC_PI_2;
    let r = eval(rope, vec![f(&[1, 1, 3], vec![1.0, 0.0, 7.0]), u(&[1]), f(&[1], vec![half_pi])]);
    close(&r, &[0.0, 2.0, 7.0]);
    // one sequence of 2 positions in block 1 of 2 blocks of 2 slots; q sees
    // both keys with scores 0 and ln 3, so weights 1/4 and 3/4
    let att = Op::Attention(Attention { block_size: 2, scale: 1.0, softcap: None, window: None });
    let ln3 = 3f32.ln();
    let k = f(&[4, 1, 1], vec![9.0, 9.0, 0.0, ln3]);
    let v = f(&[4, 1, 1], vec![9.0, 9.0, 4.0, 8.0]);
    let tables = HostTensor::u32(&[1, 1], vec![1]);
    let out = eval(att.clone(), vec![f(&[1, 1, 1], vec![1.0]), k.clone(), v.clone(), tables.clone(), u(&[0]), u(&[1])]);
    close(&out, &[4.0 * 0.25 + 8.0 * 0.75]);
    // argmax: ties to the lowest index, NaN below -inf, -0 == +0
    let nan = f32::NAN;
    let x = f(&[4, 3], vec![1.0, 2.0, 2.0, nan, f32::NEG_INFINITY, nan, -0.0, 0.0, -1.0, nan, nan, nan]);
    close(&eval(Op::Argmax(Argmax), vec![x]), &[1.0, 1.0, 0.0, 0.0]);
    // a window of 1 leaves only the token's own position
    let win = Op::Attention(Attention { block_size: 2, scale: 1.0, softcap: None, window: Some(1) });
    close(&eval(win, vec![f(&[1, 1, 1], vec![1.0]), k, v, tables, u(&[0]), u(&[1])]), &[8.0]);
}

/// Every case's kv_store leaves the slots it does not name unchanged.
#[test]
fn kv_store_keeps_untouched_slots() {
    let case: Case = all_cases().into_iter().find(|c| c.kind() == OpKind::KvStore).unwrap();
    let got = run_case(&CpuBackend::new(), &case).unwrap();
    let init = case.init_out.as_ref().unwrap().f64s();
    let row = case.inputs[0].shape[1] * case.inputs[0].shape[2];
    let written = case.inputs[1].u32s();
    let slots = init.len() / row;
    assert!(slots > written.len(), "case leaves no slot untouched");
    for s in (0..slots).filter(|s| !written.contains(&(*s as u32))) {
        let same = (0..row).all(|i| got[s * row + i] as f64 == init[s * row + i]);
        assert!(same, "slot {s} changed");
    }
    assert_eq!(case.dtype, DType::F32);
}

/// Zero-sized dims are legal shapes: the reference must neither panic nor
/// compute something else (rms_norm with cols=0 once panicked; matmul with
/// k=0 once dropped the bias).
#[test]
fn zero_sized_dims_are_handled() {
    let mut rng = Rng::new(7);
    let cases = [
        cases::rms_norm(&mut rng, 3, 0, 1e-6, false),
        cases::matmul(&mut rng, DType::F32, 2, 0, 3, true),
        cases::add(&mut rng, &[0]),
    ];
    let failures: Vec<_> =
        cases.iter().map(|c| check(&CpuBackend::new(), c)).filter(|o| o.failed()).map(|o| o.line()).collect();
    assert!(failures.is_empty(), "{failures:#?}");
}

/// A position near u32::MAX must be an `Err` ("past the block table"), not
/// an allocation of p + 1 slots that aborts the process.
#[test]
fn attention_huge_position_is_an_error() {
    let f = |shape: &[usize]| HostTensor::f32(shape, vec![0.5; shape.iter().product()]);
    let u = |v: u32| HostTensor::u32(&[1], vec![v]);
    let bad = BadInput {
        what: "attention position u32::MAX".into(),
        op: Op::Attention(Attention { block_size: 2, scale: 1.0, softcap: None, window: None }),
        inputs: vec![f(&[1, 1, 2]), f(&[4, 1, 2]), f(&[4, 1, 2]), HostTensor::u32(&[1, 1], vec![0]), u(0), u(u32::MAX)],
        out: BadOut::Fresh(vec![1, 1, 2], DType::F32),
    };
    for b in present() {
        check_bad_input(b.as_ref(), &bad).unwrap();
    }
}
