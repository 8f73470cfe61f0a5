//! matmul: a linear layer. The weight is stored [out_features, in_features]
//! as in PyTorch's `nn.Linear`, so this computes `x · wᵀ (+ b)`.
//!
//! `out[m, n] = sum_k x[m, k] * w[n, k] (+ b[n])`, accumulated in f32.

use super::{Contract, TensorSpec, WeightRows, dot, expect_dtype, expect_rank};
use crate::dtype::DType;
use crate::error::{Error, Result};

/// Inputs: x [m, k] f32, w [n, k] (f32|f16|bf16|quantized), optional bias [n] f32.
/// Output: [m, n] f32.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Matmul;

impl Matmul {
    /// What every backend honours: its weight (table) may be any float or quantized dtype.
    pub const CONTRACT: Contract = Contract::weight(1);

    const NAME: &'static str = "matmul";

    pub fn output_spec(&self, inputs: &[TensorSpec]) -> Result<TensorSpec> {
        if !(2..=3).contains(&inputs.len()) {
            return Err(Error::op(Self::NAME, format!("expects 2 or 3 inputs, got {}", inputs.len())));
        }
        let (x, w) = (&inputs[0], &inputs[1]);
        expect_rank(Self::NAME, "x", x, 2)?;
        expect_rank(Self::NAME, "w", w, 2)?;
        expect_dtype(Self::NAME, "x", x, &[DType::F32])?;
        if !(w.dtype.is_float() || w.dtype.is_quantized()) {
            return Err(Error::op(
                Self::NAME,
                format!("w has dtype {}, expected a float or quantized weight", w.dtype),
            ));
        }
        if x.shape[1] != w.shape[1] {
            return Err(Error::op(Self::NAME, format!("x {:?} and w {:?} disagree on k", x.shape, w.shape)));
        }
        if let Some(b) = inputs.get(2) {
            expect_dtype(Self::NAME, "bias", b, &[DType::F32])?;
            if b.shape != [w.shape[0]] {
                return Err(Error::op(Self::NAME, format!("bias {:?} for n = {}", b.shape, w.shape[0])));
            }
        }
        Ok(TensorSpec::new(&[x.shape[0], w.shape[0]], DType::F32))
    }

    /// x (m, k), w (n, k), bias (n,) -> out (m, n)
    ///
    /// Large products split the output columns over the machine's threads;
    /// each output is the same f32 dot product either way.
    pub fn reference(
        &self,
        x: &[f32],
        w: WeightRows,
        bias: Option<&[f32]>,
        [m, k, n]: [usize; 3],
        out: &mut [f32],
    ) -> Result<()> {
        let threads = std::thread::available_parallelism().map_or(1, |t| t.get());
        // one row is bound by memory bandwidth, not worth a thread spawn per call
        if threads == 1 || m < 4 || m * n * k < (1 << 22) || n < 2 * threads {
            return columns(x, w, bias, [m, k], 0..n, n, out);
        }
        let per = n.div_ceil(threads);
        let parts: Vec<Vec<f32>> = std::thread::scope(|s| -> Result<Vec<Vec<f32>>> {
            let handles: Vec<_> = (0..n)
                .step_by(per)
                .map(|start| {
                    let cols = start..(start + per).min(n);
                    s.spawn(move || {
                        let mut part = vec![0.0f32; m * cols.len()]; // (m, cols)
                        let width = cols.len();
                        columns(x, w, bias, [m, k], cols, width, &mut part)?;
                        Ok(part)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().expect("matmul worker panicked")).collect()
        })?;
        for (p, part) in parts.iter().enumerate() {
            let start = p * per;
            let width = part.len() / m.max(1);
            for i in 0..m {
                out[i * n + start..i * n + start + width].copy_from_slice(&part[i * width..(i + 1) * width]);
            }
        }
        Ok(())
    }
}

/// Output columns `cols` of x (m, k) · w (n, k)ᵀ into out (m, width), where
/// column j lands at `j - cols.start`.
fn columns(
    x: &[f32],
    w: WeightRows,
    bias: Option<&[f32]>,
    [m, k]: [usize; 2],
    cols: std::ops::Range<usize>,
    width: usize,
    out: &mut [f32],
) -> Result<()> {
    let mut scratch = Vec::new(); // (k,) a weight row widened to f32 when stored narrower
    for j in cols.clone() {
        let w_row = w.row(j, k, &mut scratch)?; // (k,)
        let b = bias.map_or(0.0, |b| b[j]);
        for i in 0..m {
            let x_row = &x[i * k..(i + 1) * k];
            out[i * width + (j - cols.start)] = dot(x_row, w_row) + b;
        }
    }
    Ok(())
}
