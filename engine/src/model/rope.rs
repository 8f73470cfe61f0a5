//! Rotary frequencies from the config: every rope scaling variant becomes an
//! `inv_freq` vector (and an attention scale) that the `rope` op consumes.

use crate::backend::{Backend, BackendExt};
use crate::config::{RopeConfig, RopeScaling};
use crate::error::Result;
use crate::tensor::Tensor;

/// The frequencies of one rope variant, on the backend.
pub struct RopeTable {
    /// (rotary_dim / 2,) rotary frequencies
    pub inv_freq: Tensor,
    pub attention_scale: f32,
}

impl RopeTable {
    pub fn new(backend: &dyn Backend, rope: &RopeConfig, head_dim: usize) -> Result<Self> {
        let (freqs, attention_scale) = inv_freq(rope, head_dim);
        Ok(RopeTable { inv_freq: backend.upload_f32(&[freqs.len()], &freqs)?, attention_scale })
    }
}

/// Frequencies of the rotary pairs, `rotary_dim / 2` of them, and the factor
/// cos/sin are multiplied by.
pub fn inv_freq(rope: &RopeConfig, head_dim: usize) -> (Vec<f32>, f32) {
    let dim = rotary_dim(rope, head_dim);
    // base frequencies: theta^(-2i/dim)
    let base: Vec<f64> = (0..dim / 2).map(|i| rope.theta.powf(-((2 * i) as f64) / dim as f64)).collect();
    let freqs = match &rope.scaling {
        RopeScaling::None => base,
        RopeScaling::Linear { factor } => base.iter().map(|f| f / factor).collect(),
        RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_max_position_embeddings } => {
            // Long wavelengths are interpolated by `factor`, short ones kept,
            // and the band between blended linearly in 1/wavelength.
            let low_freq_wavelen = original_max_position_embeddings / low_freq_factor;
            let high_freq_wavelen = original_max_position_embeddings / high_freq_factor;
            base.iter()
                .map(|&f| {
                    let wavelen = 2.0 * std::f64::consts::PI / f;
                    if wavelen < high_freq_wavelen {
                        f
                    } else if wavelen > low_freq_wavelen {
                        f / factor
                    } else {
                        let smooth = (original_max_position_embeddings / wavelen - low_freq_factor)
                            / (high_freq_factor - low_freq_factor);
                        (1.0 - smooth) * f / factor + smooth * f
                    }
                })
                .collect()
        }
        RopeScaling::Yarn {
            factor,
            original_max_position_embeddings,
            beta_fast,
            beta_slow,
            truncate,
            attention_factor,
        } => {
            let yarn = yarn(
                &base,
                dim,
                rope.theta,
                [*factor, *original_max_position_embeddings, *beta_fast, *beta_slow],
                *truncate,
            );
            return (yarn.into_iter().map(|f| f as f32).collect(), *attention_factor as f32);
        }
    };
    (freqs.into_iter().map(|f| f as f32).collect(), 1.0)
}

/// YaRN's blend of extrapolated (`base`) and interpolated (`base / factor`)
/// frequencies: pair i keeps `base` below the ramp's start and takes
/// `base / factor` past its end, the ramp running over the pairs whose
/// rotation count over the original context falls from `beta_fast` to `beta_slow`.
fn yarn(
    base: &[f64],
    dim: usize,
    theta: f64,
    [factor, original, beta_fast, beta_slow]: [f64; 4],
    truncate: bool,
) -> Vec<f64> {
    // the dimension at which a pair rotates `rotations` times over `original` positions
    let dim_of =
        |rotations: f64| dim as f64 * (original / (rotations * 2.0 * std::f64::consts::PI)).ln() / (2.0 * theta.ln());
    let (mut low, mut high) = (dim_of(beta_fast), dim_of(beta_slow));
    if truncate {
        (low, high) = (low.floor(), high.ceil());
    }
    let (low, mut high) = (low.max(0.0), high.min(dim as f64 - 1.0));
    if low == high {
        high += 0.001;
    }
    base.iter()
        .enumerate()
        .map(|(i, &f)| {
            let ramp = ((i as f64 - low) / (high - low)).clamp(0.0, 1.0);
            let keep = 1.0 - ramp; // the share of the extrapolated frequency
            f / factor * (1.0 - keep) + f * keep
        })
        .collect()
}

pub fn rotary_dim(rope: &RopeConfig, head_dim: usize) -> usize {
    let dim = (head_dim as f64 * rope.partial_rotary_factor) as usize;
    dim - dim % 2
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(scaling: RopeScaling) -> RopeConfig {
        RopeConfig { theta: 500_000.0, scaling, partial_rotary_factor: 1.0 }
    }

    #[test]
    fn default_frequencies_fall_geometrically() {
        let (f, scale) = inv_freq(&cfg(RopeScaling::None), 8);
        assert_eq!(scale, 1.0);
        assert_eq!(f.len(), 4);
        assert_eq!(f[0], 1.0);
        let ratio = 500_000f64.powf(-0.25) as f32;
        assert!((f[1] - ratio).abs() < 1e-7);
    }

    /// transformers' `_compute_yarn_parameters` for gpt-oss's rope
    /// (theta 150000, factor 32, original 4096, beta 32/1, truncate false),
    /// head_dim 64: values printed by transformers 5.23.
    #[test]
    fn yarn_matches_transformers() {
        let scaling = RopeScaling::Yarn {
            factor: 32.0,
            original_max_position_embeddings: 4096.0,
            beta_fast: 32.0,
            beta_slow: 1.0,
            truncate: false,
            attention_factor: 0.1 * 32f64.ln() + 1.0,
        };
        let (f, scale) = inv_freq(&RopeConfig { theta: 150_000.0, scaling, partial_rotary_factor: 1.0 }, 64);
        assert!((scale - 1.346_573_6).abs() < 1e-6, "{scale}");
        let want =
            [(0, 1.0), (5, 0.155_322_983_860_969_54), (10, 0.019_334_999_844_431_877), (31, 3.023_511_396_804_679e-7)];
        for (i, w) in want {
            assert!((f[i] as f64 - w).abs() <= w * 1e-6, "pair {i}: {} vs {w}", f[i]);
        }
    }

    #[test]
    fn llama3_keeps_high_and_divides_low_frequencies() {
        let scaling = RopeScaling::Llama3 {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 8192.0,
        };
        let (base, _) = inv_freq(&cfg(RopeScaling::None), 128);
        let (scaled, _) = inv_freq(&cfg(scaling), 128);
        assert_eq!(scaled[0], base[0], "wavelength 2pi < 8192/4: kept");
        let last = base.len() - 1;
        assert!((scaled[last] - base[last] / 8.0).abs() <= base[last] * 1e-6, "longest wavelength: divided by 8");
        assert!(scaled.iter().zip(&base).all(|(s, b)| s <= b && *s >= b / 8.0 - 1e-12));
    }
}
