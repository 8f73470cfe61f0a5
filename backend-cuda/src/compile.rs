//! NVRTC: each kernel file compiled to PTX for one GPU arch, once, and cached
//! on disk by (source hash, arch, NVRTC version) under `$FERRUM_CACHE/cuda/`
//! (else `$XDG_CACHE_HOME/ferrum/cuda/`, else `~/.cache/ferrum/cuda/`). A
//! cached PTX needs no libnvrtc at all: without one, the PTX of any NVRTC
//! version for the same source and arch is taken.
//!
//! The kernels need no CUDA header (see `ferrum_kernels::program`). If
//! `FERRUM_CUDA_INCLUDE` names a directory (the CUDA runtime's `include`, as
//! CI sets from the `nvidia-cuda-runtime-cu12` wheel), it is passed to NVRTC
//! as an include path anyway, for kernels that may want `cuda_fp16.h` later.

use std::path::PathBuf;

use cudarc::nvrtc::{CompileOptions, Ptx};
use sha2::{Digest, Sha256};

/// Whether libnvrtc can be loaded (dlopen only; never panics).
pub fn nvrtc_present() -> bool {
    // SAFETY: only dlopen()s candidate library names.
    unsafe { cudarc::nvrtc::sys::is_culib_present() }
}

/// NVRTC options, besides the arch: IEEE-exact division and square roots and
/// no flush-to-zero, so results track the f32 CPU reference.
fn options(arch: &str) -> CompileOptions {
    let include_paths = std::env::var("FERRUM_CUDA_INCLUDE").ok().filter(|p| !p.is_empty()).into_iter().collect();
    CompileOptions {
        ftz: Some(false),
        prec_div: Some(true),
        prec_sqrt: Some(true),
        fmad: Some(true),
        options: vec![format!("--gpu-architecture={arch}"), "--std=c++17".into()],
        include_paths,
        ..Default::default()
    }
}

/// PTX of one kernel file for `arch` (e.g. "sm_90"), compiled now: no cache.
/// `Err` holds NVRTC's log.
pub fn compile_ptx(stem: &str, source: &str, arch: &str) -> Result<String, String> {
    if !nvrtc_present() {
        return Err(
            "libnvrtc not found (install the CUDA toolkit or the nvidia-cuda-nvrtc-cu12 wheel and put its lib \
                    directory on LD_LIBRARY_PATH)"
                .into(),
        );
    }
    let program = ferrum_kernels::program(source);
    let opts = CompileOptions { name: Some(format!("{stem}.cu")), ..options(arch) };
    // cudarc may panic if a symbol is missing from an old libnvrtc: a belt
    let result = std::panic::catch_unwind(|| cudarc::nvrtc::compile_ptx_with_opts(&program, opts))
        .map_err(|_| format!("{stem}.cu: NVRTC panicked (libnvrtc too old for these bindings?)"))?;
    result.map(|ptx: Ptx| ptx.to_src()).map_err(|e| format!("{stem}.cu for {arch}: {e:?}"))
}

/// Where PTX is cached.
pub fn cache_dir() -> Option<PathBuf> {
    let base = if let Some(d) = std::env::var_os("FERRUM_CACHE") {
        PathBuf::from(d)
    } else if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        PathBuf::from(d).join("ferrum")
    } else {
        PathBuf::from(std::env::var_os("HOME")?).join(".cache").join("ferrum")
    };
    Some(base.join("cuda"))
}

/// "12.9" for the loaded libnvrtc, or None without one.
pub fn nvrtc_version() -> Option<String> {
    if !nvrtc_present() {
        return None;
    }
    // catch_unwind: cudarc panics on a missing symbol
    std::panic::catch_unwind(|| {
        let (mut major, mut minor) = (0, 0);
        // SAFETY: two out-parameters; the library is present (checked above).
        let status = unsafe { cudarc::nvrtc::sys::nvrtcVersion(&mut major, &mut minor) };
        (status == cudarc::nvrtc::sys::nvrtcResult::NVRTC_SUCCESS).then(|| format!("{major}.{minor}"))
    })
    .ok()
    .flatten()
}

/// The cache key's stem: the kernel, the arch and a hash of the program
/// text and options; the NVRTC version follows it in the file name.
fn cache_prefix(stem: &str, source: &str, arch: &str) -> String {
    let mut h = Sha256::new();
    h.update(ferrum_kernels::program(source));
    h.update(arch);
    h.update(format!("{:?}", options(arch).options));
    let hex: String = h.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("{stem}-{arch}-{hex}-nvrtc")
}

fn cache_name(stem: &str, source: &str, arch: &str, nvrtc: &str) -> String {
    format!("{}{nvrtc}.ptx", cache_prefix(stem, source, arch))
}

/// A cached PTX of any NVRTC version for this source and arch.
fn any_cached(dir: &std::path::Path, prefix: &str) -> Option<String> {
    let mut hits: Vec<_> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(prefix) && n.ends_with(".ptx"))
        })
        .collect();
    hits.sort(); // deterministic when several versions compiled it
    hits.last().and_then(|p| std::fs::read_to_string(p).ok())
}

/// PTX of one kernel file for `arch`, from the disk cache or compiled (and
/// then cached; a cache that cannot be written is not an error).
pub fn cached_ptx(stem: &str, source: &str, arch: &str) -> Result<String, String> {
    let Some(version) = nvrtc_version() else {
        // no compiler: a PTX cached by any NVRTC, or compile_ptx's error
        let dir = cache_dir();
        return dir
            .and_then(|d| any_cached(&d, &cache_prefix(stem, source, arch)))
            .map_or_else(|| compile_ptx(stem, source, arch), Ok);
    };
    let path = cache_dir().map(|d| d.join(cache_name(stem, source, arch, &version)));
    if let Some(p) = &path
        && let Ok(ptx) = std::fs::read_to_string(p)
    {
        return Ok(ptx);
    }
    let ptx = compile_ptx(stem, source, arch)?;
    if let Some(p) = &path {
        let _ = p.parent().map(std::fs::create_dir_all);
        // write then rename, so a concurrent reader never sees half a file
        let tmp = p.with_extension(format!("tmp{}", std::process::id()));
        if std::fs::write(&tmp, &ptx).is_ok() {
            let _ = std::fs::rename(&tmp, p);
        }
    }
    Ok(ptx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_names_differ_by_arch_source_and_nvrtc() {
        let a = cache_name("add", "x", "sm_80", "12.9");
        assert_ne!(a, cache_name("add", "x", "sm_90", "12.9"));
        assert_ne!(a, cache_name("add", "y", "sm_80", "12.9"));
        assert_ne!(a, cache_name("add", "x", "sm_80", "13.0"));
        assert!(a.starts_with("add-sm_80-") && a.ends_with("-nvrtc12.9.ptx"), "{a}");
    }

    #[test]
    fn without_nvrtc_any_version_of_the_same_program_is_found() {
        let dir = std::env::temp_dir().join(format!("ferrum-ptx-cache-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(cache_name("add", "x", "sm_90", "12.4")), "old").unwrap();
        std::fs::write(dir.join(cache_name("add", "x", "sm_90", "12.9")), "new").unwrap();
        std::fs::write(dir.join(cache_name("add", "y", "sm_90", "13.0")), "other source").unwrap();
        assert_eq!(any_cached(&dir, &cache_prefix("add", "x", "sm_90")).as_deref(), Some("new"));
        assert_eq!(any_cached(&dir, &cache_prefix("add", "x", "sm_80")), None);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_nvrtc_version_is_known_when_nvrtc_loads() {
        assert_eq!(nvrtc_version().is_some(), nvrtc_present());
        if let Some(v) = nvrtc_version() {
            assert!(v.split('.').all(|p| p.parse::<u32>().is_ok()), "{v}");
            eprintln!("NVRTC {v}");
        }
    }
}
