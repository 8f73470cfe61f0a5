//! The memory a model needs, estimated from its files before anything is
//! loaded (what `ferrum info` prints), and the memory this process can still
//! get: a model that cannot fit is refused before loading, not killed
//! halfway.

use anyhow::{Result, bail};
use ferrum_engine::source::{ModelSource, SourceFormat};

/// Bytes the weights take once loaded: as stored, except GGUF types the
/// backends do not keep packed, which become f32.
pub fn weights_as_loaded(source: &ModelSource) -> usize {
    let as_stored = |dtype: &str| {
        source.format != SourceFormat::Gguf
            || ["F32", "F16", "BF16", "MXFP4"].contains(&dtype)
            || ferrum_engine::quant::ggml::PACKED_TYPES.iter().any(|t| t.name() == dtype)
    };
    let stored = source.weights.stored();
    stored.iter().map(|t| if as_stored(t.dtype) { t.bytes } else { t.elements.saturating_mul(4) }).sum()
}

/// Host memory this process can still allocate: the smaller of the
/// kernel's `MemAvailable` and what the address-space limit (`ulimit -v`)
/// leaves. `None` where neither can be read.
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

/// Refuses `needed` bytes (`what` says of what) when fewer are available.
pub fn check_fits(needed: usize, what: &str, available: Option<u64>) -> Result<()> {
    let Some(available) = available else { return Ok(()) };
    if needed as u64 > available {
        bail!("the model needs {} ({what}), {} available", gib(needed as u64), gib(available));
    }
    Ok(())
}

pub fn gib(bytes: u64) -> String {
    format!("{:.2} GiB", bytes as f64 / (1u64 << 30) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_model_that_does_not_fit_is_refused_with_both_numbers() {
        assert!(check_fits(1 << 30, "weights", Some(2 << 30)).is_ok());
        assert!(check_fits(1 << 30, "weights", None).is_ok());
        let err = check_fits(3 << 30, "weights 2.00 GiB + KV cache 1.00 GiB", Some(1 << 30)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the model needs 3.00 GiB (weights 2.00 GiB + KV cache 1.00 GiB), 1.00 GiB available"
        );
        assert!(host_available().is_some_and(|b| b > 0), "this machine's /proc says how much is free");
    }
}
