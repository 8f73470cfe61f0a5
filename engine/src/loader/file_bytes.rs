//! The bytes of a checkpoint file: memory-mapped from disk, or already in
//! memory (a file read some other way, or bytes made by a test or a
//! fuzzer). The safetensors and GGUF readers parse either through the same
//! code.

use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use memmap2::Mmap;

use crate::bytes::SharedBytes;
use crate::error::{Error, Result};

/// Read-only file bytes, cheap to share.
#[derive(Clone)]
pub(crate) enum FileBytes {
    Mapped(Arc<Mmap>),
    Owned(Arc<Vec<u8>>),
}

impl FileBytes {
    /// Maps `path` read-only.
    pub(crate) fn map(path: &Path) -> Result<Self> {
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: the mapping is read-only; like every mmap-based loader we
        // assume the file is not truncated by another process while we run.
        let mmap = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        Ok(FileBytes::Mapped(Arc::new(mmap)))
    }

    pub(crate) fn as_slice(&self) -> &[u8] {
        match self {
            FileBytes::Mapped(m) => m,
            FileBytes::Owned(v) => v,
        }
    }

    /// `range` shared with the backing storage (no copy); `None` when out of bounds.
    pub(crate) fn shared(&self, range: Range<usize>) -> Option<SharedBytes> {
        match self {
            FileBytes::Mapped(m) => SharedBytes::slice_of(m.clone(), range),
            FileBytes::Owned(v) => SharedBytes::slice_of(v.clone(), range),
        }
    }

    /// Drops this process's pages of `range` when the bytes are a mapping
    /// (see [`release_range`]); owned bytes stay.
    pub(crate) fn release(&self, range: Range<usize>) {
        if let FileBytes::Mapped(m) = self {
            release_range(m, range);
        }
    }
}

/// `madvise(MADV_DONTNEED)` over the whole pages inside `range` of a
/// read-only file mapping: the pages leave the process's resident set and
/// come back from the file on the next access. Only a hint; failures are
/// ignored.
fn release_range(mmap: &Mmap, range: Range<usize>) {
    #[cfg(unix)]
    {
        const PAGE: usize = 4096;
        let base = mmap.as_ptr() as usize;
        let (start, end) = ((base + range.start).next_multiple_of(PAGE), (base + range.end) / PAGE * PAGE);
        if start < end {
            // SAFETY: the mapping is private and read-only, nothing writes
            // it, so dropped pages read back the same bytes from the file.
            let _ =
                unsafe { mmap.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start - base, end - start) };
        }
    }
    #[cfg(not(unix))]
    let _ = (mmap, range);
}
