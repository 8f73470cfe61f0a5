//! The requests a benchmark sends: synthetic (input/output lengths, fixed or
//! ranges, random token ids from a seed) or replayed from a JSONL dataset.

use std::path::Path;

use anyhow::{Context, Result, bail};
use ferrum_engine::sampler::Rng;

#[derive(Clone, Debug)]
pub struct Workload {
    pub prompt: Vec<u32>,
    pub max_tokens: usize,
}

/// "128" or "64:256" (inclusive range).
#[derive(Clone, Copy, Debug)]
pub struct LenRange(pub usize, pub usize);

pub fn parse_range(s: &str) -> Result<LenRange, String> {
    let parse = |t: &str| t.trim().parse::<usize>().map_err(|e| format!("{t:?}: {e}"));
    let (lo, hi) = match s.split_once(':') {
        Some((a, b)) => (parse(a)?, parse(b)?),
        None => (parse(s)?, parse(s)?),
    };
    if lo == 0 || lo > hi {
        return Err(format!("a length range needs 1 <= low <= high, got {s:?}"));
    }
    Ok(LenRange(lo, hi))
}

impl LenRange {
    fn draw(self, rng: &mut Rng) -> usize {
        self.0 + (rng.next_u64() % (self.1 - self.0 + 1) as u64) as usize
    }
}

/// Random prompts of token ids in [low_id, high_id).
pub fn synthetic(n: usize, input: LenRange, output: LenRange, ids: (u32, u32), seed: u64) -> Vec<Workload> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|_| {
            let len = input.draw(&mut rng);
            let prompt = (0..len).map(|_| ids.0 + (rng.next_u64() % (ids.1 - ids.0) as u64) as u32).collect();
            Workload { prompt, max_tokens: output.draw(&mut rng) }
        })
        .collect()
}

/// JSONL, one request a line: `{"prompt_ids": [..]}` or `{"prompt": "text"}`
/// (text needs `tokenize`), with optional `"max_tokens"` (else `default_max`).
pub fn dataset(
    path: &Path,
    default_max: usize,
    tokenize: Option<&dyn Fn(&str) -> Result<Vec<u32>>>,
) -> Result<Vec<Workload>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let v: serde_json::Value =
            serde_json::from_str(line).with_context(|| format!("{}:{}: not JSON", path.display(), i + 1))?;
        let prompt = if let Some(ids) = v.get("prompt_ids").and_then(|p| p.as_array()) {
            ids.iter()
                .map(|x| x.as_u64().map(|x| x as u32).context("prompt_ids must be integers"))
                .collect::<Result<_>>()?
        } else if let Some(p) = v.get("prompt").and_then(|p| p.as_str()) {
            match tokenize {
                Some(t) => t(p)?,
                None => bail!("{}:{}: text prompts need a tokenizer (use prompt_ids)", path.display(), i + 1),
            }
        } else {
            bail!("{}:{}: needs \"prompt\" or \"prompt_ids\"", path.display(), i + 1);
        };
        let max_tokens = v.get("max_tokens").and_then(|m| m.as_u64()).map_or(default_max, |m| m as usize);
        out.push(Workload { prompt, max_tokens });
    }
    if out.is_empty() {
        bail!("{} holds no requests", path.display());
    }
    Ok(out)
}
