//! moe_route: each token's experts and their weights, from its router
//! logits (the gate of a mixture-of-experts block).
//!
//! Per token: `s = softmax(logits)` or `sigmoid(logits)`; the experts are
//! chosen by `c = s + bias` (DeepSeek's `e_score_correction_bias`, zero
//! without one): with groups, only the `top_groups` groups whose two best
//! `c` sum highest are eligible; then the `top_k` highest `c`, in
//! descending order, ties to the lower index. Their weights are `s` (never
//! `c`), divided by their sum when `renormalize`, times `scale`.
//!
//! Mixtral: softmax, renormalized. Qwen3-MoE: softmax, renormalized when
//! `norm_topk_prob`. gpt-oss (softmax over the top-k logits): softmax,
//! renormalized, which is the same. DeepSeek-V3: sigmoid, bias, groups,
//! renormalized when `norm_topk_prob`, scale `routed_scaling_factor`.
//!
//! The output row holds the k weights, then the k expert ids as f32 (exact
//! below 2^24), so one tensor carries both to the expert ops.

use super::{Contract, TensorSpec, expect_dtype, expect_rank};
use crate::dtype::DType;
use crate::error::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouterScoring {
    Softmax,
    Sigmoid,
}

/// Group-limited routing (DeepSeek-V3's `n_group`, `topk_group`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExpertGroups {
    pub groups: usize,
    pub top_groups: usize,
}

/// Inputs: logits [T, experts] f32, optional choice bias [experts] f32.
/// Output: [T, 2 * top_k] f32: weights, then expert ids.
#[derive(Clone, Debug, PartialEq)]
pub struct MoeRoute {
    pub top_k: usize,
    pub scoring: RouterScoring,
    pub renormalize: bool,
    pub groups: Option<ExpertGroups>,
    pub scale: f32,
}

impl MoeRoute {
    /// What every backend honours: f32 activations.
    pub const CONTRACT: Contract = Contract::F32;

    const NAME: &'static str = "moe_route";

    pub fn output_spec(&self, inputs: &[TensorSpec]) -> Result<TensorSpec> {
        if !(1..=2).contains(&inputs.len()) {
            return Err(Error::op(Self::NAME, format!("expects 1 or 2 inputs, got {}", inputs.len())));
        }
        let logits = &inputs[0];
        expect_rank(Self::NAME, "logits", logits, 2)?;
        expect_dtype(Self::NAME, "logits", logits, &[DType::F32])?;
        let experts = logits.shape[1];
        if let Some(bias) = inputs.get(1) {
            expect_dtype(Self::NAME, "bias", bias, &[DType::F32])?;
            if bias.shape != [experts] {
                return Err(Error::op(Self::NAME, format!("bias {:?} for {experts} experts", bias.shape)));
            }
        }
        self.check(experts)?;
        Ok(TensorSpec::new(&[logits.shape[0], 2 * self.top_k], DType::F32))
    }

    fn check(&self, experts: usize) -> Result<()> {
        let eligible = match self.groups {
            Some(g) => {
                if g.groups == 0
                    || g.groups > MAX_GROUPS
                    || !experts.is_multiple_of(g.groups)
                    || g.top_groups == 0
                    || g.top_groups > g.groups
                {
                    return Err(Error::op(Self::NAME, format!("{experts} experts in groups {g:?}")));
                }
                if experts / g.groups < 2 {
                    return Err(Error::op(Self::NAME, "a group's score needs 2 experts per group"));
                }
                experts / g.groups * g.top_groups
            }
            None => experts,
        };
        if self.top_k == 0 || self.top_k > eligible || experts >= 1 << 24 {
            return Err(Error::op(Self::NAME, format!("top {} of {eligible} eligible experts", self.top_k)));
        }
        Ok(())
    }

    /// logits (T, E), bias (E,) -> out (T, 2k)
    pub fn reference(&self, logits: &[f32], bias: Option<&[f32]>, experts: usize, out: &mut [f32]) {
        self.reference_in(logits, bias, experts, &mut Vec::new(), out)
    }

    /// [`MoeRoute::reference`] with its (2E,) scratch kept by the caller, so
    /// repeated calls allocate nothing.
    pub fn reference_in(
        &self,
        logits: &[f32],
        bias: Option<&[f32]>,
        experts: usize,
        scratch: &mut Vec<f32>,
        out: &mut [f32],
    ) {
        let k = self.top_k;
        scratch.resize(2 * experts, 0.0);
        let (choice, scores) = scratch.split_at_mut(experts); // (E,) each
        for (row, o) in logits.chunks_exact(experts).zip(out.chunks_exact_mut(2 * k)) {
            self.scores(row, scores);
            for (e, c) in choice.iter_mut().enumerate() {
                *c = scores[e] + bias.map_or(0.0, |b| b[e]);
            }
            if let Some(g) = self.groups {
                mask_groups(choice, g);
            }
            let (weights, ids) = o.split_at_mut(k);
            for j in 0..k {
                // the best remaining choice, lowest index on ties
                let mut best = 0;
                for e in 1..experts {
                    if choice[e] > choice[best] {
                        best = e;
                    }
                }
                weights[j] = scores[best];
                ids[j] = best as f32;
                choice[best] = f32::NEG_INFINITY;
            }
            let sum: f32 = weights.iter().sum();
            for w in weights.iter_mut() {
                if self.renormalize {
                    *w /= sum;
                }
                *w *= self.scale;
            }
        }
    }

    fn scores(&self, logits: &[f32], out: &mut [f32]) {
        match self.scoring {
            RouterScoring::Softmax => {
                let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let mut sum = 0.0;
                for (o, &l) in out.iter_mut().zip(logits) {
                    *o = (l - max).exp();
                    sum += *o;
                }
                for o in out.iter_mut() {
                    *o /= sum;
                }
            }
            RouterScoring::Sigmoid => {
                for (o, &l) in out.iter_mut().zip(logits) {
                    *o = 1.0 / (1.0 + (-l).exp());
                }
            }
        }
    }
}

/// The most expert groups a router may have.
pub const MAX_GROUPS: usize = 64;

fn top2_sum(c: &[f32]) -> f32 {
    let (mut a, mut b) = (f32::NEG_INFINITY, f32::NEG_INFINITY);
    for &v in c {
        if v > a {
            (a, b) = (v, a);
        } else if v > b {
            b = v;
        }
    }
    a + b
}

/// Sets every expert outside the `top_groups` best groups to -inf; a group
/// scores the sum of its two best choices, ties to the lower group.
fn mask_groups(choice: &mut [f32], g: ExpertGroups) {
    let per = choice.len() / g.groups;
    // at most MAX_GROUPS (DeepSeek-V3 has 8), so nothing is allocated
    let mut group_score = [f32::NEG_INFINITY; MAX_GROUPS];
    for (score, c) in group_score.iter_mut().zip(choice.chunks_exact(per)) {
        *score = top2_sum(c);
    }
    let mut keep = [false; MAX_GROUPS];
    for _ in 0..g.top_groups {
        let mut best = 0;
        for i in 1..g.groups {
            if group_score[i] > group_score[best] {
                best = i;
            }
        }
        keep[best] = true;
        group_score[best] = f32::NEG_INFINITY;
    }
    for (i, c) in choice.chunks_exact_mut(per).enumerate() {
        if !keep[i] {
            c.fill(f32::NEG_INFINITY);
        }
    }
}
