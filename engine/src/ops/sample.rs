//! sample: one token per row drawn from softmax(x / temperature), on the
//! device, so that one u32 per sequence comes back instead of a row of
//! logits (temperature sampling without top-k/top-p/min-p: what an
//! OpenAI-style request asks by default). The randomness comes from the host,
//! one uniform per row from the sequence's seeded generator, so a seed gives
//! the same tokens on every backend.
//!
//! Per row, with `t` its temperature (> 0) and `u` its uniform in [0, 1):
//!
//! ```text
//! z_c = x_c / t                       (NaN: weight 0, never drawn)
//! m   = max_c z_c                     (over the non-NaN values)
//! w_c = exp(z_c - m)
//! out = min { c : w_0 + ... + w_c > u * (w_0 + ... + w_{cols-1}) }
//! ```
//!
//! i.e. inverse-CDF sampling in column order. A temperature that is not a
//! finite positive number means greedy (`argmax_row`); `u` is clamped into
//! [0, 1]. When rounding leaves no such c
//! (u * sum at the very top), the last column with w_c > 0 is taken; a row
//! with no finite maximum (all NaN, or +inf present, or all -inf) gives
//! `argmax_row` of it, so +inf behaves as certainty and nothing is NaN.
//! The sums are f32: a GPU summing in another order may pick the neighbouring
//! column when `u * sum` falls within rounding of a step of the CDF, as two
//! runs of any sampler with different summation orders would.

use super::{Contract, TensorSpec, argmax_row, expect_dtype, expect_inputs, expect_rank};
use crate::dtype::DType;
use crate::error::{Error, Result};

/// Inputs: x [rows, cols] f32 (cols >= 1), temperature [rows] f32 (> 0),
/// uniform [rows] f32 (in [0, 1)). Output: [rows] u32.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Sample;

impl Sample {
    /// What every backend honours: f32 activations.
    pub const CONTRACT: Contract = Contract::F32;

    const NAME: &'static str = "sample";

    pub fn output_spec(&self, inputs: &[TensorSpec]) -> Result<TensorSpec> {
        expect_inputs(Self::NAME, inputs, 3)?;
        let (x, t, u) = (&inputs[0], &inputs[1], &inputs[2]);
        expect_rank(Self::NAME, "x", x, 2)?;
        expect_rank(Self::NAME, "temperature", t, 1)?;
        expect_rank(Self::NAME, "uniform", u, 1)?;
        for (name, s) in [("x", x), ("temperature", t), ("uniform", u)] {
            expect_dtype(Self::NAME, name, s, &[DType::F32])?;
        }
        if x.shape[1] == 0 {
            return Err(Error::op(Self::NAME, format!("a row of 0 columns has no token (x is {:?})", x.shape)));
        }
        if t.shape[0] != x.shape[0] || u.shape[0] != x.shape[0] {
            return Err(Error::op(
                Self::NAME,
                format!("x is {:?} but temperature is {:?} and uniform {:?}", x.shape, t.shape, u.shape),
            ));
        }
        Ok(TensorSpec::new(&[x.shape[0]], DType::U32))
    }

    /// x (rows, cols), temperature (rows,), uniform (rows,) -> out (rows,)
    pub fn reference(&self, x: &[f32], cols: usize, temperature: &[f32], uniform: &[f32], out: &mut [u32]) {
        for (r, (xr, o)) in x.chunks_exact(cols).zip(out.iter_mut()).enumerate() {
            *o = sample_row(xr, temperature[r], uniform[r]);
        }
    }
}

/// One row of the op (see the module doc).
pub fn sample_row(x: &[f32], temperature: f32, uniform: f32) -> u32 {
    if !(temperature > 0.0 && temperature.is_finite()) {
        return argmax_row(x);
    }
    let uniform = uniform.clamp(0.0, 1.0); // NaN stays NaN: then no c is found, the last is taken
    let m = x.iter().map(|&v| v / temperature).filter(|z| !z.is_nan()).fold(f32::NEG_INFINITY, f32::max);
    if !m.is_finite() {
        return argmax_row(x);
    }
    let weight = |v: f32| {
        let z = v / temperature;
        if z.is_nan() { 0.0 } else { (z - m).exp() }
    };
    let total: f32 = x.iter().map(|&v| weight(v)).sum();
    let target = uniform * total;
    let mut cum = 0.0f32;
    let mut last = 0;
    for (c, &v) in x.iter().enumerate() {
        let w = weight(v);
        if w > 0.0 {
            last = c;
        }
        cum += w;
        if cum > target {
            return c as u32;
        }
    }
    last as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_by_the_cdf_in_column_order() {
        // weights exp(0), exp(ln 3) = 1, 3: CDF 0.25, 1.0
        let x = [0.0, 3f32.ln()];
        assert_eq!(sample_row(&x, 1.0, 0.0), 0);
        assert_eq!(sample_row(&x, 1.0, 0.24), 0);
        assert_eq!(sample_row(&x, 1.0, 0.26), 1);
        assert_eq!(sample_row(&x, 1.0, 0.999), 1);
        // a low temperature sharpens: weights 1, 3^10
        assert_eq!(sample_row(&x, 0.1, 0.01), 1);
    }

    #[test]
    fn nan_is_never_drawn_and_infinities_are_certain() {
        let nan = f32::NAN;
        for u in [0.0, 0.3, 0.7, 0.9999] {
            let got = sample_row(&[nan, 1.0, nan, 1.0], 1.0, u);
            assert!(got == 1 || got == 3, "{got}");
        }
        assert_eq!(sample_row(&[0.0, f32::INFINITY, 5.0], 1.0, 0.0), 1);
        assert_eq!(sample_row(&[f32::NEG_INFINITY; 3], 1.0, 0.5), 0);
        assert_eq!(sample_row(&[nan, nan], 1.0, 0.5), 0);
        assert_eq!(sample_row(&[f32::NEG_INFINITY, 2.0], 1.0, 0.9), 1, "weight 0 is never drawn");
    }

    #[test]
    fn the_frequencies_follow_the_softmax() {
        let x = [0.5f32, -1.0, 2.0, 0.0];
        let t = 0.8;
        let w: Vec<f64> = x.iter().map(|&v| ((v / t) as f64).exp()).collect();
        let total: f64 = w.iter().sum();
        let n = 20000;
        let mut counts = [0usize; 4];
        for i in 0..n {
            counts[sample_row(&x, t, (i as f32 + 0.5) / n as f32) as usize] += 1;
        }
        for c in 0..4 {
            let want = w[c] / total;
            let got = counts[c] as f64 / n as f64;
            assert!((got - want).abs() < 1e-3, "column {c}: {got} vs {want}");
        }
    }

    #[test]
    fn shape_rule_and_bad_values() {
        let s = |shape: &[usize], r: usize| {
            Sample.output_spec(&[
                TensorSpec::new(shape, DType::F32),
                TensorSpec::new(&[r], DType::F32),
                TensorSpec::new(&[r], DType::F32),
            ])
        };
        assert_eq!(s(&[3, 7], 3).unwrap(), TensorSpec::new(&[3], DType::U32));
        assert!(s(&[3, 7], 2).is_err());
        assert!(s(&[3, 0], 3).is_err());
        let mut out = [9; 3];
        Sample.reference(&[1.0, 2.0, 2.0, 1.0, 0.0, 0.0], 2, &[0.0, f32::NAN, 1.0], &[0.5, 0.5, 2.0], &mut out);
        assert_eq!(out, [1, 0, 1], "temperature 0 or NaN: argmax; uniform past 1: the last column");
    }
}
