//! Choosing the next token from logits: penalties, then temperature, top-k,
//! top-p and min-p, then a seeded draw (or argmax when temperature is 0).
//! The order is transformers' and vLLM's. Plain greedy requests
//! ([`SamplingParams::is_plain_greedy`]) may skip the logits altogether: the
//! device's `argmax` op picks by the same rule as [`argmax`] here, and
//! [`Sampler::record`] keeps the sampler's state.

use std::collections::HashMap;

use crate::ops::sample_row;

#[derive(Clone, Debug, PartialEq)]
pub struct SamplingParams {
    /// 0 means greedy.
    pub temperature: f32,
    /// 0 means off.
    pub top_k: usize,
    /// 1 means off.
    pub top_p: f32,
    /// 0 means off.
    pub min_p: f32,
    /// Divides positive (multiplies negative) logits of every token seen in
    /// the prompt or output; 1 means off (transformers' semantics).
    pub repetition_penalty: f32,
    /// Subtracted once from tokens already generated (OpenAI's semantics).
    pub presence_penalty: f32,
    /// Subtracted per occurrence in the generated tokens.
    pub frequency_penalty: f32,
    /// Added to these tokens' logits before anything else (OpenAI's
    /// `logit_bias`; -100 bans a token, 100 all but forces it).
    pub logit_bias: Vec<(u32, f32)>,
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            repetition_penalty: 1.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            logit_bias: Vec::new(),
            seed: 0,
        }
    }
}

impl SamplingParams {
    pub fn validate(&self) -> Result<(), String> {
        let bad = |what: &str| Err(what.to_string());
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return bad("temperature must be >= 0");
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad("top_p must be in (0, 1]");
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return bad("min_p must be in [0, 1]");
        }
        if !(self.repetition_penalty > 0.0 && self.repetition_penalty.is_finite()) {
            return bad("repetition_penalty must be > 0");
        }
        if !self.presence_penalty.is_finite() || !self.frequency_penalty.is_finite() {
            return bad("penalties must be finite");
        }
        if self.logit_bias.iter().any(|(_, b)| !(-100.0..=100.0).contains(b)) {
            return bad("logit_bias values must be in [-100, 100]");
        }
        Ok(())
    }

    /// Whether the token is simply the argmax of the logits: temperature 0
    /// (top-k, top-p and min-p then change nothing) and no repetition,
    /// presence or frequency penalty. Such a token can be picked on the
    /// device (`Model::forward_greedy`) with the same result as [`Sampler::sample`].
    pub fn is_plain_greedy(&self) -> bool {
        self.temperature == 0.0 && self.has_no_penalty()
    }

    /// Whether the token can be picked on the device with the result of
    /// [`Sampler::sample`]: plain greedy, or plain temperature sampling (no
    /// top-k, top-p, min-p or penalty), which both are draws of the `sample`
    /// op (`Sampler::device_pick` gives its inputs).
    pub fn is_device_pickable(&self) -> bool {
        self.is_plain_greedy() || (self.has_no_penalty() && !self.truncates())
    }

    /// Whether top-k, top-p or min-p may drop tokens.
    fn truncates(&self) -> bool {
        self.top_k != 0 || self.top_p < 1.0 || self.min_p > 0.0
    }

    fn has_no_penalty(&self) -> bool {
        // the same comparisons `apply_penalties` makes to skip each step
        self.repetition_penalty == 1.0
            && self.presence_penalty == 0.0
            && self.frequency_penalty == 0.0
            && self.logit_bias.is_empty()
    }
}

/// The `sample` op's inputs for one row: temperature 0 is the argmax.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DevicePick {
    pub temperature: f32,
    pub uniform: f32,
}

impl DevicePick {
    pub const GREEDY: DevicePick = DevicePick { temperature: 0.0, uniform: 0.0 };
}

/// A small, fast, reproducible generator (SplitMix64): same seed, same draws,
/// on every platform and every version of Ferrum.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

pub struct Sampler {
    pub params: SamplingParams,
    rng: Rng,
    /// every token of the prompt and output, for the repetition penalty
    seen: HashMap<u32, ()>,
    /// occurrences in the output, for presence and frequency penalties
    generated: HashMap<u32, u32>,
}

impl Sampler {
    pub fn new(params: SamplingParams, prompt: &[u32]) -> Self {
        let rng = Rng::new(params.seed);
        Sampler { params, rng, seen: prompt.iter().map(|&t| (t, ())).collect(), generated: HashMap::new() }
    }

    /// Picks the next token and records it as generated.
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        let mut logits = logits.to_vec();
        self.apply_penalties(&mut logits);
        let token = if self.params.temperature == 0.0 {
            argmax(&logits)
        } else if !self.params.truncates() {
            // the `sample` op's draw, so the device picks the same token
            sample_row(&logits, self.params.temperature, self.next_uniform())
        } else {
            self.draw(&logits)
        };
        self.record(token)
    }

    /// [`Sampler::sample`] among the tokens `mask` allows only.
    pub fn sample_within(&mut self, logits: &[f32], mask: &crate::constraint::TokenMask) -> u32 {
        let mut logits = logits.to_vec();
        mask.apply(&mut logits);
        self.sample(&logits)
    }

    /// This step's inputs of the `sample` op, for a request that
    /// `is_device_pickable`: the uniform is drawn as `sample` would draw it.
    /// The token the device picks is then given to [`Sampler::record`].
    pub fn device_pick(&mut self) -> DevicePick {
        if self.params.temperature == 0.0 {
            return DevicePick::GREEDY;
        }
        DevicePick { temperature: self.params.temperature, uniform: self.next_uniform() }
    }

    /// Uniform in [0, 1) as f32 (an f64 draw rounded down, never to 1.0).
    fn next_uniform(&mut self) -> f32 {
        let u = self.rng.next_f64() as f32;
        if u < 1.0 { u } else { 1.0 - f32::EPSILON / 2.0 }
    }

    /// Records a token picked elsewhere (on the device, from
    /// [`Sampler::device_pick`]) as `sample` records its own, and returns it.
    pub fn record(&mut self, token: u32) -> u32 {
        self.seen.insert(token, ());
        *self.generated.entry(token).or_insert(0) += 1;
        token
    }

    fn apply_penalties(&self, logits: &mut [f32]) {
        let p = &self.params;
        for &(t, bias) in &p.logit_bias {
            if let Some(l) = logits.get_mut(t as usize) {
                *l += bias;
            }
        }
        if p.repetition_penalty != 1.0 {
            for &t in self.seen.keys() {
                if let Some(l) = logits.get_mut(t as usize) {
                    *l = if *l < 0.0 { *l * p.repetition_penalty } else { *l / p.repetition_penalty };
                }
            }
        }
        if p.presence_penalty != 0.0 || p.frequency_penalty != 0.0 {
            for (&t, &count) in &self.generated {
                if let Some(l) = logits.get_mut(t as usize) {
                    *l -= p.presence_penalty + p.frequency_penalty * count as f32;
                }
            }
        }
    }

    /// Verifies one speculated token against the target's logits at its
    /// position, keeping the target's distribution exactly (speculative
    /// sampling with a draft that proposes `draft` for certain): greedy
    /// accepts it when it is the argmax; sampling accepts it with the
    /// probability the target gives it, and otherwise draws from the target
    /// with `draft` taken out. Returns whether it was accepted and the token
    /// that follows (`draft` itself when accepted), recorded as generated.
    pub fn verify(&mut self, logits: &[f32], draft: u32) -> (bool, u32) {
        let mut logits = logits.to_vec();
        self.apply_penalties(&mut logits);
        if self.params.temperature == 0.0 {
            let token = argmax(&logits);
            return (token == draft, self.record(token));
        }
        let dist = self.distribution(&logits);
        let p_draft = dist.iter().find(|c| c.0 == draft).map_or(0.0, |c| c.1);
        if (self.rng.next_f64() as f32) < p_draft {
            return (true, self.record(draft));
        }
        // the residual max(p - q, 0) with q the point mass on the draft
        let rest: Vec<(u32, f32)> = dist.into_iter().filter(|c| c.0 != draft).collect();
        let total: f32 = rest.iter().map(|c| c.1).sum();
        let token = if total > 0.0 { self.pick(&rest, total) } else { draft };
        (false, self.record(token))
    }

    /// The candidates sampling may choose and their probabilities (summing
    /// to 1), most likely first: temperature, top-k, top-p, min-p.
    fn distribution(&self, logits: &[f32]) -> Vec<(u32, f32)> {
        let p = &self.params;
        // candidates sorted by logit, highest first
        let mut cand: Vec<(u32, f32)> =
            logits.iter().enumerate().map(|(i, &l)| (i as u32, l / p.temperature)).collect();
        cand.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        if p.top_k > 0 {
            cand.truncate(p.top_k);
        }
        let probs = softmax(&cand.iter().map(|c| c.1).collect::<Vec<_>>());
        // top-p: the shortest head whose mass reaches top_p
        let mut keep = probs.len();
        if p.top_p < 1.0 {
            let mut mass = 0.0;
            for (i, &pr) in probs.iter().enumerate() {
                mass += pr;
                if mass >= p.top_p {
                    keep = i + 1;
                    break;
                }
            }
        }
        // min-p: drop tokens less likely than min_p times the best
        if p.min_p > 0.0 {
            let floor = p.min_p * probs[0];
            keep = keep.min(probs.iter().take_while(|&&pr| pr >= floor).count().max(1));
        }
        let total: f32 = probs[..keep].iter().sum();
        cand.iter().zip(&probs).take(keep).map(|(c, &pr)| (c.0, pr / total)).collect()
    }

    fn draw(&mut self, logits: &[f32]) -> u32 {
        let dist = self.distribution(logits);
        self.pick(&dist, 1.0)
    }

    /// One of `cand` drawn with its weight (the weights sum to `total`).
    fn pick(&mut self, cand: &[(u32, f32)], total: f32) -> u32 {
        let mut r = self.rng.next_f64() as f32 * total;
        for &(token, pr) in cand {
            r -= pr;
            if r < 0.0 {
                return token;
            }
        }
        cand[cand.len() - 1].0
    }
}

/// The lowest index of the largest value, NaN never chosen: the `argmax`
/// op's rule (`engine/src/ops/argmax.rs`), so host and device greedy agree.
pub fn argmax(x: &[f32]) -> u32 {
    crate::ops::argmax_row(x)
}

pub fn softmax(x: &[f32]) -> Vec<f32> {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = x.iter().map(|v| (v - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(f: impl FnOnce(&mut SamplingParams)) -> SamplingParams {
        let mut p = SamplingParams { temperature: 1.0, seed: 7, ..Default::default() };
        f(&mut p);
        p
    }

    #[test]
    fn greedy_takes_the_argmax() {
        let mut s = Sampler::new(SamplingParams::default(), &[]);
        assert_eq!(s.sample(&[0.1, 3.0, -1.0, 2.9]), 1);
    }

    #[test]
    fn greedy_ties_go_low_and_nan_never_wins() {
        let mut s = Sampler::new(SamplingParams::default(), &[]);
        assert_eq!(s.sample(&[1.0, 3.0, 3.0]), 1);
        // a NaN in column 0 once made every such row give 0
        assert_eq!(s.sample(&[f32::NAN, 1.0, 3.0]), 2);
        assert_eq!(s.sample(&[f32::NAN, f32::NAN]), 0);
    }

    #[test]
    fn plain_greedy_is_temperature_zero_without_penalties() {
        let greedy = SamplingParams::default();
        assert!(greedy.is_plain_greedy());
        // ignored at temperature 0
        assert!(SamplingParams { top_k: 5, top_p: 0.5, min_p: 0.1, seed: 3, ..greedy.clone() }.is_plain_greedy());
        assert!(SamplingParams { presence_penalty: -0.0, ..greedy.clone() }.is_plain_greedy());
        for p in [
            SamplingParams { temperature: 0.7, ..greedy.clone() },
            SamplingParams { repetition_penalty: 1.1, ..greedy.clone() },
            SamplingParams { presence_penalty: 0.5, ..greedy.clone() },
            SamplingParams { frequency_penalty: -0.5, ..greedy.clone() },
        ] {
            assert!(!p.is_plain_greedy(), "{p:?}");
        }
    }

    /// A plain greedy sampler's `sample` is the argmax, and `record` leaves
    /// it in the state `sample` would have.
    #[test]
    fn recorded_tokens_count_like_sampled_ones() {
        let params = SamplingParams { frequency_penalty: 0.6, ..Default::default() };
        let (mut a, mut b) = (Sampler::new(params.clone(), &[]), Sampler::new(params, &[]));
        assert_eq!(a.sample(&[1.0, 0.0]), 0);
        b.record(0);
        assert_eq!(a.sample(&[1.0, 0.0]), b.sample(&[1.0, 0.0]));
    }

    /// A plain temperature request draws the same tokens whether the host
    /// samples or the device does (`device_pick` + the `sample` op's rule).
    #[test]
    fn device_picks_draw_what_the_host_draws() {
        let p = params(|p| p.temperature = 0.8);
        assert!(p.is_device_pickable() && !p.is_plain_greedy());
        let (mut host, mut device) = (Sampler::new(p.clone(), &[]), Sampler::new(p, &[]));
        let mut rng = Rng::new(11);
        let mut drawn = std::collections::HashSet::new();
        for _ in 0..200 {
            let logits: Vec<f32> = (0..50).map(|_| (rng.next_f64() * 6.0 - 3.0) as f32).collect();
            let pick = device.device_pick();
            let on_device = device.record(sample_row(&logits, pick.temperature, pick.uniform));
            assert_eq!(host.sample(&logits), on_device);
            drawn.insert(on_device);
        }
        assert!(drawn.len() > 10, "a real draw, not an argmax: {} distinct tokens", drawn.len());
        for trunc in [params(|p| p.top_k = 5), params(|p| p.top_p = 0.9), params(|p| p.min_p = 0.1)] {
            assert!(!trunc.is_device_pickable());
        }
        assert!(!params(|p| p.repetition_penalty = 1.1).is_device_pickable());
        assert_eq!(Sampler::new(params(|p| p.temperature = 0.0), &[]).device_pick(), DevicePick::GREEDY);
    }

    #[test]
    fn top_k_one_is_greedy() {
        let mut s = Sampler::new(params(|p| p.top_k = 1), &[]);
        for _ in 0..20 {
            assert_eq!(s.sample(&[0.0, 0.5, 0.4]), 1);
        }
    }

    #[test]
    fn top_p_drops_the_tail() {
        // probs ~ [0.665, 0.245, 0.09]: top_p 0.8 keeps the first two
        let mut s = Sampler::new(params(|p| p.top_p = 0.8), &[]);
        for _ in 0..200 {
            assert_ne!(s.sample(&[2.0, 1.0, 0.0]), 2);
        }
    }

    #[test]
    fn min_p_drops_unlikely_tokens() {
        let mut s = Sampler::new(params(|p| p.min_p = 0.5), &[]);
        for _ in 0..200 {
            assert_eq!(s.sample(&[5.0, 0.0, 0.0]), 0);
        }
    }

    #[test]
    fn same_seed_same_tokens_and_draws_follow_probabilities() {
        let logits = [1.0f32, 0.0, 0.5];
        let run = |seed| {
            let mut s = Sampler::new(params(|p| p.seed = seed), &[]);
            (0..2000).map(|_| s.sample(&logits)).collect::<Vec<_>>()
        };
        assert_eq!(run(3), run(3));
        assert_ne!(run(3), run(4));
        let draws = run(5);
        let probs = softmax(&logits);
        for t in 0..3 {
            let freq = draws.iter().filter(|&&d| d == t as u32).count() as f32 / 2000.0;
            assert!((freq - probs[t]).abs() < 0.04, "token {t}: {freq} vs {}", probs[t]);
        }
    }

    #[test]
    fn repetition_penalty_follows_transformers() {
        // token 0 seen: 2.0 / 2 = 1.0 < 1.5, so greedy moves to token 1
        let mut s = Sampler::new(SamplingParams { repetition_penalty: 2.0, ..Default::default() }, &[0]);
        assert_eq!(s.sample(&[2.0, 1.5]), 1);
        // negative logits are multiplied: -1 * 2 = -2 < -1.5
        let mut s = Sampler::new(SamplingParams { repetition_penalty: 2.0, ..Default::default() }, &[0]);
        assert_eq!(s.sample(&[-1.0, -1.5]), 1);
    }

    #[test]
    fn presence_and_frequency_penalties_count_generated_tokens() {
        let mut s = Sampler::new(SamplingParams { frequency_penalty: 0.6, ..Default::default() }, &[]);
        let logits = [1.0, 0.0];
        let picks: Vec<u32> = (0..3).map(|_| s.sample(&logits)).collect();
        // 1.0, then 1.0 - 0.6 = 0.4 > 0, then 1.0 - 1.2 < 0
        assert_eq!(picks, [0, 0, 1]);
    }

    #[test]
    fn logit_bias_bans_and_forces_tokens() {
        let logits = [0.1, 3.0, -1.0, 2.9];
        let biased = |bias: Vec<(u32, f32)>| SamplingParams { logit_bias: bias, ..Default::default() };
        assert_eq!(Sampler::new(biased(vec![(1, -100.0)]), &[]).sample(&logits), 3);
        assert_eq!(Sampler::new(biased(vec![(2, 100.0)]), &[]).sample(&logits), 2);
        // out of the vocabulary: nothing happens
        assert_eq!(Sampler::new(biased(vec![(99, 100.0)]), &[]).sample(&logits), 1);
        assert!(!biased(vec![(2, 1.0)]).is_device_pickable());
        assert!(biased(vec![(2, 101.0)]).validate().is_err());
    }
}
