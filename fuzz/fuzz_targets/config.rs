//! A `config.json` from a stranger, for every architecture: parsed into a
//! model config, then the sizes `ferrum info` and the memory check derive
//! from it (parameters, KV bytes per token). Absurd sizes must be an `Err`
//! or a number, never an overflow or a panic.
#![no_main]

use std::path::Path;

use ferrum_engine::ModelConfig;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(config) = ModelConfig::from_json_str(text, Path::new("config.json")) else { return };
    let _ = config.parameter_counts();
    let _ = config.kv_floats_per_token();
    let _ = config.mha_kv_floats_per_token();
    let _ = config.rotary_head_dim();
});
