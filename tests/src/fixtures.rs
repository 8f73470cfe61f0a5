//! The transformers fixtures in `tests/fixtures/`: tiny random models made by
//! `tools/fixtures/make_fixtures.py`, with transformers' float32 logits and
//! greedy ids saved beside them.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use ferrum_engine::loader::{SafetensorsFile, StDtype};

pub const FIXTURES: [&str; 20] = [
    "llama",
    "llama3-tied",
    "mistral",
    "qwen2",
    "qwen3",
    "llama-notok",
    "gemma",
    "gemma2",
    "gemma3",
    "mixtral",
    "qwen3-moe",
    "qwen3-moe-norm",
    "gpt-oss",
    "gpt-oss-mxfp4",
    "deepseek-v3",
    "deepseek-v3-plain-q",
    "deepseek-v3-fp8",
    "deepseek-v3-nvfp4",
    "qwen3-moe-nvfp4-ct",
    "deepseek-v32",
];

pub fn fixture_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(name)
}

/// What transformers computed for a fixture.
pub struct Reference {
    /// (T,) the prompt
    pub input_ids: Vec<u32>,
    /// (T, vocab) logits of a float32 forward pass over the prompt
    pub logits: Vec<f32>,
    /// (N,) greedy continuation
    pub greedy_ids: Vec<u32>,
}

impl Reference {
    pub fn load(dir: &Path) -> Result<Self> {
        let file = SafetensorsFile::open(&dir.join("reference.safetensors"))?;
        let get = |name: &str| file.tensors.get(name).with_context(|| format!("reference has no {name}"));
        let ids = |name: &str| -> Result<Vec<u32>> {
            let e = get(name)?;
            if e.dtype != StDtype::I64 {
                bail!("{name} is {:?}, expected I64", e.dtype);
            }
            let v: Vec<i64> = bytemuck_i64(file.bytes(e));
            Ok(v.into_iter().map(|x| x as u32).collect())
        };
        let logits = get("logits")?;
        if logits.dtype != StDtype::F32 {
            bail!("logits are {:?}, expected F32", logits.dtype);
        }
        let logits = file.bytes(logits).chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
        Ok(Reference { input_ids: ids("input_ids")?, logits, greedy_ids: ids("greedy_ids")? })
    }
}

fn bytemuck_i64(bytes: &[u8]) -> Vec<i64> {
    bytes.chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap())).collect()
}

/// Each position's max |got - want| over its `vocab` logits, / std(want).
pub fn position_errs_over_std(got: &[f32], want: &[f32], vocab: usize) -> Vec<f64> {
    let n = want.len() as f64;
    let mean = want.iter().map(|&v| v as f64).sum::<f64>() / n;
    let std = (want.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n).sqrt();
    let rows = got.chunks(vocab.max(1)).zip(want.chunks(vocab.max(1)));
    rows.map(|(g, w)| g.iter().zip(w).map(|(&a, &b)| (a as f64 - b as f64).abs()).fold(0.0, f64::max) / std).collect()
}

/// max |got - want| / std(want): the error measure the issues set limits on.
pub fn max_err_over_std(got: &[f32], want: &[f32]) -> f64 {
    assert_eq!(got.len(), want.len(), "length mismatch");
    let n = want.len() as f64;
    let mean = want.iter().map(|&v| v as f64).sum::<f64>() / n;
    let var = want.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
    let max_err = got.iter().zip(want).map(|(&a, &b)| (a as f64 - b as f64).abs()).fold(0.0, f64::max);
    max_err / var.sqrt()
}
