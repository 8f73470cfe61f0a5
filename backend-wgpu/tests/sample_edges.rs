//! sample on the values where the answer does not depend on the order of
//! summation, so the device must match `sample_row` exactly: uniforms at or
//! past the ends of [0, 1] and NaN, temperatures that mean greedy, and rows
//! of NaN, infinities and overflowing x / t. (The conformance cases cover
//! the draws inside the CDF, placed mid-step.)

mod common;

use ferrum_backend_wgpu::Options;
use ferrum_engine::BackendExt;
use ferrum_engine::ops::{Op, Sample, sample_row};

/// Row pattern `p` of `cols` columns.
fn pattern(p: usize, cols: usize, seed: usize) -> Vec<f32> {
    let smooth = |c: usize| 8.0 * ((c * 7 + seed * 13) as f32 * 0.37).sin();
    (0..cols)
        .map(|c| match p {
            0 => smooth(c),
            // NaN every third column, -inf last
            1 if c + 1 == cols => f32::NEG_INFINITY,
            1 if c % 3 == 1 => f32::NAN,
            1 => smooth(c),
            2 => f32::NAN,
            // +inf: certain, whatever the temperature
            3 if c == cols / 2 => f32::INFINITY,
            3 => smooth(c),
            4 => f32::NEG_INFINITY,
            // weight 0 up to the middle: u = 0 draws the first column after it
            5 if c < cols / 2 => f32::NEG_INFINITY,
            5 => smooth(c),
            // x / t overflows for small t; at t = 1 all but the max underflow
            6 if c == cols / 3 => 2e30,
            6 => 1e30,
            _ => unreachable!("7 patterns"),
        })
        .collect()
}

#[test]
fn edges_match_the_reference_exactly() {
    let Some(b) = common::backend(Options::default()) else { return };
    let temperatures = [1.0, 0.25, 0.0, -0.0, -1.0, f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 1e-30];
    let uniforms = [0.0, -0.0, -0.5, f32::NEG_INFINITY, 1.0, 1.5, f32::INFINITY, f32::NAN];
    let mut failures = Vec::new();
    for cols in [1, 5, 256, 300, 1000] {
        let (mut x, mut t, mut u) = (Vec::new(), Vec::new(), Vec::new());
        for p in 0..7 {
            for &tv in &temperatures {
                for &uv in &uniforms {
                    x.extend(pattern(p, cols, t.len()));
                    t.push(tv);
                    u.push(uv);
                }
            }
        }
        let rows = t.len();
        let inputs = [
            b.upload_f32(&[rows, cols], &x).unwrap(),
            b.upload_f32(&[rows], &t).unwrap(),
            b.upload_f32(&[rows], &u).unwrap(),
        ];
        let got = b.read_u32(&b.run(&Op::Sample(Sample), &inputs.each_ref()).unwrap()).unwrap();
        for r in 0..rows {
            let want = sample_row(&x[r * cols..(r + 1) * cols], t[r], u[r]);
            if got[r] != want {
                let p = r / (temperatures.len() * uniforms.len());
                failures.push(format!("cols {cols}, pattern {p}, t {}, u {}: {} vs {want}", t[r], u[r], got[r]));
            }
        }
    }
    assert!(failures.is_empty(), "{} rows differ: {failures:#?}", failures.len());
}
