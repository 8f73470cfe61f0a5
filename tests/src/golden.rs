//! llama.cpp's tokenizer golden pairs in `shared/tokenizer-golden/`: for each
//! family, 46 tricky inputs and the ids Hugging Face gave them.

use std::path::PathBuf;

pub const SEPARATOR: &str = "\n__ggml_vocab_test__\n";
/// Every family's `.inp` holds the same 46 inputs.
pub const INPUTS_PER_FAMILY: usize = 46;

pub fn golden_dir() -> PathBuf {
    let shared = match std::env::var_os("FERRUM_SHARED_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared"),
    };
    shared.join("tokenizer-golden")
}

/// The inputs of `NAME.inp` and the ids of `NAME.out`, pair by pair.
pub fn load_golden(family: &str) -> Vec<(String, Vec<u32>)> {
    let dir = golden_dir();
    let read = |ext: &str| {
        let path = dir.join(format!("{family}.{ext}"));
        std::fs::read_to_string(&path).unwrap_or_else(|e| {
            let hint = "set FERRUM_SHARED_DIR to the folder holding tokenizer-golden/";
            panic!("{}: {e} ({hint})", path.display())
        })
    };
    // llama.cpp writes each input followed by the separator, so the file ends
    // with one; inputs may themselves start or end with spaces and newlines.
    let inp = read("inp");
    let inp = inp.strip_suffix(SEPARATOR).unwrap_or_else(|| panic!("{family}.inp does not end with {SEPARATOR:?}"));
    let inputs: Vec<&str> = inp.split(SEPARATOR).collect();
    // One line per input, ` id id id`, empty for the empty input.
    let out = read("out");
    let out = out.strip_suffix('\n').unwrap_or_else(|| panic!("{family}.out does not end with a newline"));
    let lines: Vec<&str> = out.split('\n').collect();
    assert_eq!(inputs.len(), INPUTS_PER_FAMILY, "{family}.inp: inputs");
    assert_eq!(lines.len(), inputs.len(), "{family}: .out lines vs .inp inputs");
    inputs
        .into_iter()
        .zip(lines)
        .map(|(text, line)| {
            let ids = line
                .split_whitespace()
                .map(|t| t.parse().unwrap_or_else(|e| panic!("{family}.out: {t:?}: {e}")))
                .collect();
            (text.to_string(), ids)
        })
        .collect()
}
