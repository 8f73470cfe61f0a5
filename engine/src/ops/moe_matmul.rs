//! moe_matmul: the expert-indexed matmul of a mixture-of-experts block.
//! Every expert's weight [n, k] is stacked into one matrix w [experts * n, k]
//! (any weight dtype a matmul takes, kept as stored); each (token, choice)
//! row is multiplied by its chosen expert's rows.
//!
//! `out[t * K + j, :] = x[r, :] · w[e * n .. (e + 1) * n, :]ᵀ (· s[e]) (+ b[e * n ..])`
//! with `e = route[t, K + j]` (see `moe_route`), `K` the route's top-k, and
//! `r = t` when x has one row per token (the gate and up projections) or
//! `r = t * K + j` when it has one per choice (the down projection).
//!
//! The optional per-expert scale `s` is the tensor scale of experts stored
//! each with their own (ModelOpt NVFP4's `weight_scale_2`): the stack then
//! holds every expert at tensor scale 1, and since the product is linear in
//! the weight, scaling its result is the same product.
//!
//! Backends group the rows by expert so each expert's weights are read once
//! per step; the reference goes row by row.

use super::{Contract, TensorSpec, WeightRows, dot, expect_dtype, expect_rank};
use crate::dtype::DType;
use crate::error::{Error, Result};

/// Inputs: x [T or T*K, k] f32, w [experts * n, k] (f32|f16|bf16|quantized),
/// route [T, 2K] f32, optional bias [experts * n] f32, and when `scaled` a
/// last input, the per-expert scale [experts] f32. Output: [T*K, n] f32.
#[derive(Clone, Debug, PartialEq)]
pub struct MoeMatmul {
    pub experts: usize,
    pub scaled: bool,
}

/// The sizes of one expert-indexed product.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MoeDims {
    pub tokens: usize,
    pub top_k: usize,
    /// x has one row per (token, choice), not per token
    pub per_choice: bool,
    pub k: usize,
    pub n: usize,
}

impl MoeMatmul {
    /// What every backend honours: its weight may be any float or quantized dtype.
    pub const CONTRACT: Contract = Contract::weight(1);

    const NAME: &'static str = "moe_matmul";

    /// Over experts with no scale of their own.
    pub fn new(experts: usize) -> Self {
        MoeMatmul { experts, scaled: false }
    }

    /// The optional inputs after x, w and route: (bias, scale).
    pub fn optional<'a, T>(&self, inputs: &'a [T]) -> (Option<&'a T>, Option<&'a T>) {
        let (bias, scale) = self.optional_at(inputs.len());
        (bias.map(|i| &inputs[i]), scale.map(|i| &inputs[i]))
    }

    /// Where the bias and the scale are among `count` inputs.
    pub fn optional_at(&self, count: usize) -> (Option<usize>, Option<usize>) {
        match (self.scaled, count) {
            (true, 4) => (None, Some(3)),
            (true, 5) => (Some(3), Some(4)),
            (_, 4..) => (Some(3), None),
            _ => (None, None),
        }
    }

    pub fn output_spec(&self, inputs: &[TensorSpec]) -> Result<TensorSpec> {
        let d = self.dims(inputs)?;
        Ok(TensorSpec::new(&[d.tokens * d.top_k, d.n], DType::F32))
    }

    /// The product's sizes, from validated inputs.
    pub fn dims(&self, inputs: &[TensorSpec]) -> Result<MoeDims> {
        let most = 4 + self.scaled as usize;
        if !(3 + self.scaled as usize..=most).contains(&inputs.len()) {
            let want = if self.scaled { "4 or 5 (the last the scale)" } else { "3 or 4" };
            return Err(Error::op(Self::NAME, format!("expects {want} inputs, got {}", inputs.len())));
        }
        let (x, w, route) = (&inputs[0], &inputs[1], &inputs[2]);
        expect_rank(Self::NAME, "x", x, 2)?;
        expect_dtype(Self::NAME, "x", x, &[DType::F32])?;
        expect_rank(Self::NAME, "w", w, 2)?;
        if !(w.dtype.is_float() || w.dtype.is_quantized()) {
            return Err(Error::op(
                Self::NAME,
                format!("w has dtype {}, expected a float or quantized weight", w.dtype),
            ));
        }
        expect_rank(Self::NAME, "route", route, 2)?;
        expect_dtype(Self::NAME, "route", route, &[DType::F32])?;
        if self.experts == 0 || !w.shape[0].is_multiple_of(self.experts) {
            return Err(Error::op(Self::NAME, format!("w {:?} does not stack {} experts", w.shape, self.experts)));
        }
        if route.shape[1] == 0 || !route.shape[1].is_multiple_of(2) {
            return Err(Error::op(Self::NAME, format!("route {:?} is not [T, 2K]", route.shape)));
        }
        let (tokens, top_k) = (route.shape[0], route.shape[1] / 2);
        let per_choice = match x.shape[0] {
            r if r == tokens => false,
            r if r == tokens * top_k => true,
            r => return Err(Error::op(Self::NAME, format!("x has {r} rows for {tokens} tokens of {top_k} choices"))),
        };
        if x.shape[1] != w.shape[1] {
            return Err(Error::op(Self::NAME, format!("x {:?} and w {:?} disagree on k", x.shape, w.shape)));
        }
        let (bias, scale) = self.optional(inputs);
        if let Some(b) = bias {
            expect_dtype(Self::NAME, "bias", b, &[DType::F32])?;
            if b.shape != [w.shape[0]] {
                return Err(Error::op(Self::NAME, format!("bias {:?} for w {:?}", b.shape, w.shape)));
            }
        }
        if let Some(s) = scale {
            expect_dtype(Self::NAME, "scale", s, &[DType::F32])?;
            if s.shape != [self.experts] {
                return Err(Error::op(Self::NAME, format!("scale {:?} for {} experts", s.shape, self.experts)));
            }
        }
        Ok(MoeDims { tokens, top_k, per_choice, k: x.shape[1], n: w.shape[0] / self.experts })
    }

    /// [`MoeMatmul::dims`] from the shapes of inputs already validated
    /// (what backends call: it allocates nothing).
    pub fn dims_of(&self, x: &[usize], w: &[usize], route: &[usize]) -> MoeDims {
        let (tokens, top_k) = (route[0], route[1] / 2);
        MoeDims { tokens, top_k, per_choice: x[0] != tokens, k: x[1], n: w[0] / self.experts }
    }

    /// The index check the CPU backends make: every id names an expert
    /// (`moe_route` only writes such ids; a route from elsewhere may not).
    /// On the GPU backends the route is device data written by a kernel, so
    /// they cannot check it on the host: an id that names no expert reads
    /// no weights there (wgpu clamps it into range, CUDA writes zeros).
    pub fn check_route(&self, route: &[f32], top_k: usize) -> Result<()> {
        for ids in route.chunks_exact(2 * top_k).map(|r| &r[top_k..]) {
            if let Some(id) = ids.iter().find(|&&id| !(id >= 0.0 && (id as usize) < self.experts && id.fract() == 0.0))
            {
                return Err(Error::op(Self::NAME, format!("expert id {id} is not one of {} experts", self.experts)));
            }
        }
        Ok(())
    }

    /// x (T or T*K, k), w (E*n, k), route (T, 2K), bias (E*n,), scale (E,) -> out (T*K, n)
    #[allow(clippy::too_many_arguments)]
    pub fn reference(
        &self,
        x: &[f32],
        w: WeightRows,
        route: &[f32],
        bias: Option<&[f32]>,
        scale: Option<&[f32]>,
        d: MoeDims,
        out: &mut [f32],
    ) -> Result<()> {
        self.check_route(route, d.top_k)?;
        let (k, n, kk) = (d.k, d.n, d.top_k);
        let mut scratch = Vec::new(); // (k,) a weight row widened to f32 when stored narrower
        for t in 0..d.tokens {
            for j in 0..kk {
                let e = route[t * 2 * kk + kk + j] as usize;
                let r = if d.per_choice { t * kk + j } else { t };
                let x_row = &x[r * k..(r + 1) * k];
                let o = &mut out[(t * kk + j) * n..(t * kk + j + 1) * n];
                for (c, o) in o.iter_mut().enumerate() {
                    let row = e * n + c;
                    let y = dot(x_row, w.row(row, k, &mut scratch)?);
                    *o = scale.map_or(y, |s| y * s[e]) + bias.map_or(0.0, |b| b[row]);
                }
            }
        }
        Ok(())
    }
}
