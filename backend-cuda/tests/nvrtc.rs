//! Every kernel compiles with NVRTC for sm_80 (A100) and sm_90 (H100/H200),
//! and defines the entry points the backend loads. Needs libnvrtc only, no
//! driver and no GPU: CI installs the `nvidia-cuda-nvrtc-cu12` wheel and puts
//! it on LD_LIBRARY_PATH. Without libnvrtc the test says it skipped and
//! passes, unless `FERRUM_REQUIRE_NVRTC=1`, which makes that a failure.

use ferrum_backend_cuda::compile::{compile_ptx, nvrtc_present};

#[test]
fn every_kernel_compiles_for_sm80_and_sm90() {
    if !nvrtc_present() {
        let required = std::env::var("FERRUM_REQUIRE_NVRTC").is_ok_and(|v| v == "1");
        assert!(!required, "FERRUM_REQUIRE_NVRTC=1 but libnvrtc is not loadable (LD_LIBRARY_PATH?)");
        eprintln!("skipped: libnvrtc not found, CUDA kernels not compiled (set FERRUM_REQUIRE_NVRTC=1 to fail)");
        return;
    }
    let mut failures = Vec::new();
    let mut compiled = 0;
    for arch in ["sm_80", "sm_90"] {
        for ((stem, src), (_, entries)) in ferrum_kernels::KERNELS.iter().zip(ferrum_kernels::ENTRY_POINTS) {
            match compile_ptx(stem, src, arch) {
                Ok(ptx) => {
                    for e in *entries {
                        if !ptx.contains(&format!(".entry {e}(")) {
                            failures.push(format!("{stem}.cu for {arch}: no entry point {e} in the PTX"));
                        }
                    }
                    assert!(ptx.contains(&format!(".target {arch}")), "{stem}.cu: PTX not for {arch}");
                    compiled += 1;
                }
                Err(log) => failures.push(log),
            }
        }
    }
    assert!(failures.is_empty(), "NVRTC failures:\n{}", failures.join("\n\n"));
    eprintln!("compiled {compiled} kernel files with NVRTC (sm_80, sm_90)");
}

/// A kernel with an error is reported as Err with the log, not a panic, so a
/// broken kernel fails the test above rather than passing silently.
#[test]
fn a_broken_kernel_is_an_error() {
    if !nvrtc_present() {
        eprintln!("skipped: libnvrtc not found");
        return;
    }
    let bad = "#include \"common.cuh\"\nextern \"C\" __global__ void f(float* x) { x[0] = undefined_symbol; }\n";
    let err = compile_ptx("broken", bad, "sm_90").unwrap_err();
    assert!(err.contains("undefined_symbol"), "{err}");
}
