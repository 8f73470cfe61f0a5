//! The memory a model needs, estimated before anything is loaded, and the
//! memory a backend can still give, so a model that cannot fit is refused
//! with both numbers instead of being killed halfway through loading.
//!
//! - weights: exact, from a dry run of the loader on the backend that will
//!   hold them (`model::plan`): packed formats at their packed size,
//!   `--quant` applied, GGUF types the backend cannot keep packed widened;
//! - KV cache: what the caller will allocate (a full context, or serve's
//!   `--kv-cache-mib`);
//! - activations: the widest per-token buffers of one forward pass over the
//!   most tokens a step runs, plus the logits rows it returns. The real peak
//!   depends on the backend's allocator; this is the order of it.

use std::fmt;

use crate::backend::Backend;
use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::loader::WeightStore;
use crate::model::QuantPolicy;

/// How a model will run, as far as memory goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Workload {
    /// KV-cache bytes the caller will allocate.
    pub kv_cache_bytes: usize,
    /// Most tokens one forward pass runs.
    pub step_tokens: usize,
    /// Most logits rows one forward pass returns.
    pub logit_rows: usize,
}

impl Workload {
    /// One sequence up to the full context, prefilled in one pass, one
    /// logits row a step (`generate`, `chat`).
    pub fn one_sequence(config: &ModelConfig) -> Self {
        let context = config.max_position_embeddings;
        Workload {
            kv_cache_bytes: config.kv_bytes_per_token().saturating_mul(context),
            step_tokens: context,
            logit_rows: 1,
        }
    }
}

/// Bytes a model needs, by what needs them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryNeed {
    pub weights: usize,
    pub kv_cache: usize,
    pub activations: usize,
}

impl MemoryNeed {
    /// What `config`'s weights in `store` need held by `backend` under
    /// `policy` (a dry run of the loader, nothing read), with `work`.
    pub fn of(
        config: &ModelConfig,
        store: &WeightStore,
        policy: &QuantPolicy,
        backend: &dyn Backend,
        work: Workload,
    ) -> Result<Self> {
        let plan = crate::model::plan(config, store, policy, backend)?;
        Ok(MemoryNeed {
            weights: plan.weight_bytes,
            kv_cache: work.kv_cache_bytes,
            activations: activations(config, work.step_tokens, work.logit_rows),
        })
    }

    pub fn total(&self) -> usize {
        self.weights.saturating_add(self.kv_cache).saturating_add(self.activations)
    }

    /// Refused with both numbers when more is needed than `available`
    /// (`None`: the backend cannot say, and nothing is refused).
    pub fn check(&self, available: Option<u64>, device: &str) -> Result<()> {
        match available {
            Some(free) if self.total() as u64 > free => Err(Error::Memory(format!(
                "the model needs {} ({self}), {} available on {device}",
                gib(self.total() as u64),
                gib(free)
            ))),
            _ => Ok(()),
        }
    }
}

impl fmt::Display for MemoryNeed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "weights {} + KV cache {} + activations {}",
            gib(self.weights as u64),
            gib(self.kv_cache as u64),
            gib(self.activations as u64)
        )
    }
}

/// Activation bytes of one forward pass over `tokens` tokens returning
/// `logit_rows` rows of logits, in f32: the residual stream and its normed
/// copy, q, k and v, the attention output, the MLP's gate, up and product
/// (a MoE layer's for each chosen expert), and the logits.
pub fn activations(config: &ModelConfig, tokens: usize, logit_rows: usize) -> usize {
    let (h, d) = (config.hidden_size, config.head_dim);
    let attention = (2 * config.num_heads + 2 * config.num_kv_heads) * d;
    let mlp = match &config.moe {
        Some(m) => 3 * m.route.top_k * m.expert_intermediate + m.experts,
        None => 3 * config.intermediate_size,
    };
    let per_token = 3 * h + attention + mlp.max(3 * config.intermediate_size);
    4 * tokens.saturating_mul(per_token).saturating_add(logit_rows.saturating_mul(config.vocab_size))
}

/// Host memory this process can still allocate: the smaller of the kernel's
/// `MemAvailable` and what the address-space limit (`ulimit -v`) leaves.
/// `None` where neither can be read (not Linux).
pub fn host_available() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok();
    let available = meminfo.as_deref().and_then(|m| kib_field(m, "MemAvailable:"));
    let limit = std::fs::read_to_string("/proc/self/limits").ok().and_then(|l| {
        let line = l.lines().find(|l| l.starts_with("Max address space"))?;
        line.split_whitespace().nth(3)?.parse::<u64>().ok() // bytes, or "unlimited"
    });
    let used = std::fs::read_to_string("/proc/self/status").ok().and_then(|s| kib_field(&s, "VmSize:"));
    let room = limit.map(|l| l.saturating_sub(used.unwrap_or(0)));
    match (available, room) {
        (Some(a), Some(r)) => Some(a.min(r)),
        (a, r) => a.or(r),
    }
}

fn kib_field(text: &str, name: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(name))?;
    Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024)
}

pub fn gib(bytes: u64) -> String {
    format!("{:.2} GiB", bytes as f64 / (1u64 << 30) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_model_that_does_not_fit_is_refused_with_both_numbers() {
        let need = MemoryNeed { weights: 2 << 30, kv_cache: 1 << 30, activations: 0 };
        assert!(need.check(Some(3 << 30), "cpu").is_ok());
        assert!(need.check(None, "cpu").is_ok());
        let err = need.check(Some(1 << 30), "cpu").unwrap_err();
        assert_eq!(
            err.to_string(),
            "not enough memory: the model needs 3.00 GiB (weights 2.00 GiB + KV cache 1.00 GiB + activations 0.00 GiB), \
             1.00 GiB available on cpu"
        );
        assert!(host_available().is_some_and(|b| b > 0), "this machine's /proc says how much is free");
    }
}
