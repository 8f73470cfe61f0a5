//! A GGUF file from a stranger, read the way `ferrum` reads one: header,
//! metadata and tensor infos (every type and its byte-size arithmetic),
//! every tensor dequantized; then the model built from it: config from
//! the metadata, tokenizer rebuilt from the vocabulary, tensors mapped to
//! Hugging Face names, and the weights loaded on the CPU reference. Bad
//! input must be an `Err`; a panic, an overflow or an allocation past what
//! the file can justify is a crash.
#![no_main]

use std::path::Path;
use std::sync::{Arc, OnceLock};

use ferrum_engine::loader::gguf::GgufFile;
use ferrum_engine::source::ModelSource;
use ferrum_engine::{Backend, CpuBackend, Model};
use libfuzzer_sys::fuzz_target;

fn cpu() -> Arc<dyn Backend> {
    static CPU: OnceLock<Arc<dyn Backend>> = OnceLock::new();
    CPU.get_or_init(|| Arc::new(CpuBackend::new())).clone()
}

fuzz_target!(|data: &[u8]| {
    let path = Path::new("fuzz.gguf");
    let Ok(file) = GgufFile::from_bytes(path, data.to_vec()) else { return };
    for (_, value) in file.metadata_entries() {
        if let Some(array) = value.as_array() {
            let _ = array.describe();
        }
    }
    for info in file.tensors() {
        let _ = file.dequantize(info);
    }
    let Ok(source) = ModelSource::from_gguf(path, file) else { return };
    if let Some(tokenizer) = &source.tokenizer {
        if let Ok(ids) = tokenizer.encode("Hello, world! 12345 héllo", true) {
            let _ = tokenizer.decode(&ids, false);
        }
    }
    let _ = source.chat_template();
    let _ = source.config.parameter_counts();
    let _ = Model::from_store(source.config.clone(), &source.weights, cpu());
});
