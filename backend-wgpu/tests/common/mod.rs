//! Opening a private backend for a test: absent wgpu skips the test, unless
//! FERRUM_REQUIRE_BACKENDS names wgpu, which makes it a failure.

use ferrum_backend_wgpu::{Options, WgpuBackend};

pub fn backend(options: Options) -> Option<WgpuBackend> {
    match WgpuBackend::open_with(options) {
        Ok(b) => Some(b),
        Err(why) => {
            let required = std::env::var("FERRUM_REQUIRE_BACKENDS").unwrap_or_default();
            assert!(!required.split(',').any(|n| n.trim() == "wgpu"), "wgpu is required but absent: {why}");
            println!("skipped: wgpu absent ({why})");
            None
        }
    }
}
