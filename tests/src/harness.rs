//! Runs cases on backends through the `Backend` trait only, judges them by
//! normalised MSE (integer outputs by equality), prints one line per result and the coverage matrix, and
//! checks that bad inputs are errors, never panics.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use ferrum_engine::backend::specs;
use ferrum_engine::ops::{Op, OpKind, TensorSpec};
use ferrum_engine::{Backend, BackendExt, CpuBackend, DType, Tensor};

use crate::cases::{Case, HostTensor, op_dtypes};
use crate::oracle;

/// Every backend this build knows, present or with the reason it is not.
/// A new backend is one more line here.
pub fn available_backends() -> Vec<(String, Result<Arc<dyn Backend>, String>)> {
    vec![
        ("cpu-ref".into(), Ok(Arc::new(CpuBackend::new()) as Arc<dyn Backend>)),
        ("cpu".into(), ferrum_backend_cpu::open(None).map_err(|e| e.to_string())),
        ("wgpu".into(), ferrum_backend_wgpu::open()),
        ("cuda".into(), ferrum_backend_cuda::open()),
    ]
}

/// The largest normalised MSE that passes.
pub fn tolerance(backend: &str, dtype: DType) -> f64 {
    if backend == REFERENCE {
        // cpu vs the f64 oracle on identical (already rounded) inputs: only
        // f32 rounding and summation over up to ~4k terms, ~1e-14..1e-12.
        // Any indexing or formula slip gives ~1e-2 or more.
        return 1e-10;
    }
    match dtype {
        // f32 on a GPU vs cpu: other summation order, fused multiply-add and
        // faster exp/tanh/sin; ggml's test-backend-ops uses 1e-7 by default.
        DType::F32 | DType::U32 => 1e-7,
        // a cache of fp8 holds values the test rounded already: what remains
        // is f32 arithmetic, as for f32
        DType::F8E4M3 => 1e-7,
        // f16 weights: a tensor-core matmul may round x to f16 too (unit
        // roundoff 2^-11, nmse ~u^2/3 = 8e-8 per rounding); allow ~10.
        DType::F16 => 1e-6,
        // bf16 weights: a bf16 matmul rounds x to bf16 too (unit roundoff
        // 2^-8, nmse ~u^2/3 = 5e-6 per rounding); allow ~10 roundings.
        DType::BF16 => 5e-5,
        // the fast CPU backend rounds activations to i8 per 32 for integer
        // dot products (as llama.cpp): a step of max|x| / 127, about 2.5 sigma
        // / 127 on Gaussian data, so nmse ~ (0.02)^2 / 12 = 3e-5; allow ~6x
        DType::Quant(_) if backend == "cpu" => 2e-4,
        // a GPU dequantizes the same codes and scales; what differs is the
        // f32 arithmetic after, as for f32 weights (tests/tests/quant_matmul.rs)
        DType::Quant(_) => 1e-7,
    }
}

/// The plain CPU reference backend's name: the oracle of the others.
pub const REFERENCE: &str = "cpu-ref";

/// What a backend's output is compared with: the f64 oracle for the cpu
/// reference itself, the cpu reference for everything else.
pub fn reference_name(backend: &str) -> &'static str {
    if backend == REFERENCE { "oracle" } else { REFERENCE }
}

pub fn nmse(got: &[f32], want: &[f64]) -> f64 {
    let err: f64 = got.iter().zip(want).map(|(&a, b)| (a as f64 - b).powi(2)).sum();
    let norm: f64 = want.iter().map(|b| b * b).sum();
    // an all-zero reference is judged by absolute squared error
    if norm == 0.0 { err } else { err / norm }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    Ok { nmse: f64 },
    Fail { nmse: Option<f64>, why: String },
    Unsupported,
}

#[derive(Clone, Debug)]
pub struct Outcome {
    pub case: String,
    pub kind: OpKind,
    pub dtype: DType,
    pub backend: String,
    pub verdict: Verdict,
}

impl Outcome {
    pub fn passed(&self) -> bool {
        matches!(self.verdict, Verdict::Ok { .. })
    }

    pub fn failed(&self) -> bool {
        matches!(self.verdict, Verdict::Fail { .. })
    }

    /// `rms_norm(dtype=f32, rows=5, cols=4099, eps=1e-6) cpu: OK nmse=2.1e-15`
    pub fn line(&self) -> String {
        let verdict = match &self.verdict {
            Verdict::Ok { nmse } => format!("OK nmse={nmse:.1e}"),
            Verdict::Fail { nmse: Some(n), why } => format!("FAIL nmse={n:.1e} ({why})"),
            Verdict::Fail { nmse: None, why } => format!("FAIL ({why})"),
            Verdict::Unsupported => "UNSUPPORTED".into(),
        };
        format!("{} {}: {verdict}", self.case, self.backend)
    }
}

/// Judge `got` against `want`. NaN or length mismatch fails outright.
pub fn judge(got: &[f32], want: &[f64], tol: f64, reference: &str) -> Verdict {
    if got.len() != want.len() {
        return Verdict::Fail { nmse: None, why: format!("{} values, {reference} has {}", got.len(), want.len()) };
    }
    let n = nmse(got, want);
    // written so that NaN fails
    if n <= tol {
        Verdict::Ok { nmse: n }
    } else {
        Verdict::Fail { nmse: Some(n), why: format!("tol {tol:.0e} vs {reference}") }
    }
}

/// Upload the inputs in their dtypes, set up the output (the initial cache
/// for kv_store), execute, read back as f32. A panic is reported as an error.
pub fn run_case(backend: &dyn Backend, case: &Case) -> Result<Vec<f32>, String> {
    catch_unwind(AssertUnwindSafe(|| run_case_inner(backend, case))).unwrap_or_else(|_| Err("panicked".into()))
}

fn run_case_inner(backend: &dyn Backend, case: &Case) -> Result<Vec<f32>, String> {
    let inputs = upload_all(backend, &case.inputs)?;
    let refs: Vec<&Tensor> = inputs.iter().collect();
    let spec = case.op.output_spec(&specs(&refs)).map_err(|e| e.to_string())?;
    let out = match &case.init_out {
        Some(init) => backend.upload(&init.shape, init.dtype, &init.bytes()),
        None => backend.alloc(&spec.shape, spec.dtype),
    }
    .map_err(|e| e.to_string())?;
    backend.execute(&case.op, &refs, &out).map_err(|e| e.to_string())?;
    backend.sync().map_err(|e| e.to_string())?;
    match spec.dtype {
        // indices (argmax, index_topk), exact in f32 below 2^24; u32::MAX (no index) reads as -1
        DType::U32 => Ok(backend
            .read_u32(&out)
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|v| if v == u32::MAX { -1.0 } else { v as f32 })
            .collect()),
        _ => backend.read_f32(&out).map_err(|e| e.to_string()),
    }
}

/// Whether the case's output is integers (argmax's indices), which must match
/// exactly: an index off by one is a wrong token, however small its nmse.
pub fn exact_output(case: &Case) -> bool {
    let inputs: Vec<TensorSpec> = case.inputs.iter().map(|t| TensorSpec::new(&t.shape, t.dtype)).collect();
    case.op.output_spec(&inputs).is_ok_and(|spec| spec.dtype == DType::U32)
}

/// Judge integer outputs: every element equal, or a failure naming the first
/// that differs.
pub fn judge_exact(got: &[f32], want: &[f64], reference: &str) -> Verdict {
    if got.len() != want.len() {
        return Verdict::Fail { nmse: None, why: format!("{} values, {reference} has {}", got.len(), want.len()) };
    }
    let wrong: Vec<usize> = (0..got.len()).filter(|&i| got[i] as f64 != want[i]).collect();
    match wrong.first() {
        None => Verdict::Ok { nmse: 0.0 },
        Some(&i) => Verdict::Fail {
            nmse: Some(nmse(got, want)),
            why: format!(
                "{} of {} differ from {reference}, first [{i}]: {} vs {}",
                wrong.len(),
                got.len(),
                got[i],
                want[i]
            ),
        },
    }
}

fn upload_all(backend: &dyn Backend, tensors: &[HostTensor]) -> Result<Vec<Tensor>, String> {
    let up = |t: &HostTensor| match t.quantized() {
        Some(m) => backend.upload_quantized(m),
        None => backend.upload(&t.shape, t.dtype, &t.bytes()),
    };
    tensors.iter().map(|t| up(t).map_err(|e| e.to_string())).collect()
}

/// The expected output for `backend`: see [`reference_name`].
pub fn expected(case: &Case, backend: &str) -> Result<Vec<f64>, String> {
    if backend == REFERENCE {
        let eval = || oracle::eval(&case.op, &case.inputs, case.init_out.as_ref());
        catch_unwind(AssertUnwindSafe(eval)).unwrap_or_else(|_| Err("oracle panicked".into()))
    } else {
        let got = run_case(&CpuBackend::new(), case).map_err(|e| format!("cpu reference: {e}"))?;
        Ok(got.into_iter().map(f64::from).collect())
    }
}

pub fn check(backend: &dyn Backend, case: &Case) -> Outcome {
    let name = backend.name().to_string();
    let verdict = if !backend.supports(case.kind(), case.dtype) {
        Verdict::Unsupported
    } else {
        match (run_case(backend, case), expected(case, &name)) {
            (Err(e), _) => Verdict::Fail { nmse: None, why: e },
            (_, Err(e)) => Verdict::Fail { nmse: None, why: format!("no reference: {e}") },
            (Ok(got), Ok(want)) if exact_output(case) => judge_exact(&got, &want, reference_name(&name)),
            (Ok(got), Ok(want)) => judge(&got, &want, tolerance(&name, case.dtype), reference_name(&name)),
        }
    };
    Outcome { case: case.describe(), kind: case.kind(), dtype: case.dtype, backend: name, verdict }
}

/// One row of the coverage matrix: an op and a dtype it takes.
pub struct MatrixRow {
    pub kind: OpKind,
    pub dtype: DType,
    /// "OK", "FAIL", "-" (unsupported) or "no cases", one per backend column
    pub cells: Vec<&'static str>,
}

/// Rows: every `OpKind::ALL` x the dtypes it takes; columns: `backends`.
pub fn coverage(backends: &[Arc<dyn Backend>], outcomes: &[Outcome]) -> Vec<MatrixRow> {
    let mut rows = Vec::new();
    for kind in OpKind::ALL {
        for dtype in op_dtypes(kind) {
            let cells = backends
                .iter()
                .map(|b| {
                    let mine: Vec<_> = outcomes
                        .iter()
                        .filter(|o| o.backend == b.name() && o.kind == kind && o.dtype == dtype)
                        .collect();
                    if !b.supports(kind, dtype) {
                        "-"
                    } else if mine.is_empty() {
                        "no cases"
                    } else if mine.iter().all(|o| o.passed()) {
                        "OK"
                    } else {
                        "FAIL"
                    }
                })
                .collect();
            rows.push(MatrixRow { kind, dtype, cells });
        }
    }
    rows
}

pub fn print_matrix(backends: &[Arc<dyn Backend>], rows: &[MatrixRow], absent: &[(String, String)]) {
    let mut header = format!("{:<18}", "op");
    for b in backends {
        header += &format!(" {:>9}", b.name());
    }
    println!("{header}");
    for r in rows {
        let mut line = format!("{:<18}", format!("{} {}", r.kind.name(), r.dtype));
        for c in &r.cells {
            line += &format!(" {c:>9}");
        }
        println!("{line}");
    }
    for (name, why) in absent {
        println!("{name}: absent ({why})");
    }
}

/// An op run that must be rejected with `Err`.
pub struct BadInput {
    pub what: String,
    pub op: Op,
    pub inputs: Vec<HostTensor>,
    pub out: BadOut,
}

pub enum BadOut {
    /// A fresh tensor of this shape and dtype.
    Fresh(Vec<usize>, DType),
    /// Input i itself (aliasing must be refused).
    Input(usize),
}

/// Executes `bad`; `Ok(())` when the backend returned `Err` without panicking.
pub fn check_bad_input(backend: &dyn Backend, bad: &BadInput) -> Result<(), String> {
    let run = || -> ferrum_engine::Result<()> {
        let inputs: Vec<Tensor> =
            bad.inputs.iter().map(|t| backend.upload(&t.shape, t.dtype, &t.bytes())).collect::<Result<_, _>>()?;
        let refs: Vec<&Tensor> = inputs.iter().collect();
        let out = match &bad.out {
            BadOut::Fresh(shape, dtype) => backend.alloc(shape, *dtype)?,
            BadOut::Input(i) => inputs[*i].clone(),
        };
        backend.execute(&bad.op, &refs, &out)?;
        backend.sync()
    };
    match catch_unwind(AssertUnwindSafe(run)) {
        Ok(Err(_)) => Ok(()),
        Ok(Ok(())) => Err(format!("{}: accepted", bad.what)),
        Err(_) => Err(format!("{}: panicked", bad.what)),
    }
}

/// `Backend::upload` with a byte count that does not fit the shape.
pub fn check_bad_upload(backend: &dyn Backend) -> Result<(), String> {
    match catch_unwind(AssertUnwindSafe(|| backend.upload(&[2, 3], DType::F32, &[0u8; 20]))) {
        Ok(Err(_)) => Ok(()),
        Ok(Ok(_)) => Err("upload of 20 bytes as [2, 3] f32: accepted".into()),
        Err(_) => Err("upload of 20 bytes as [2, 3] f32: panicked".into()),
    }
}
