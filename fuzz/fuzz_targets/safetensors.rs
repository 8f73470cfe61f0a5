//! A safetensors file from a stranger: the header (lengths, JSON, dtypes,
//! shapes, offsets), the expert views built over its names, every tensor
//! read back; and the same bytes as a sharded checkpoint's index. Anything
//! but an `Err` for bad input (a panic, an overflow, an allocation past the
//! file's size) is a crash.
#![no_main]

use std::path::Path;

use ferrum_engine::loader::{SafetensorsFile, ShardIndex, WeightStore};
use ferrum_engine::model::weights_widen;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = ShardIndex::parse(text);
    }
    let Ok(file) = SafetensorsFile::from_bytes(Path::new("fuzz.safetensors"), data.to_vec()) else { return };
    let Ok(store) = WeightStore::from_safetensors(vec![file]) else { return };
    let names: Vec<String> = store.names().map(str::to_string).collect();
    for name in &names {
        let _ = store.shape_of(name);
        let _ = store.dtype_of(name);
        if let Ok(tensor) = store.get(name) {
            let _ = weights_widen(name, &tensor);
        }
    }
    let _ = store.stored();
});
