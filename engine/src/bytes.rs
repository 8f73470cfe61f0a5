//! Bytes shared without copying: a range of a memory-mapped file (a GGUF
//! tensor's blocks) or of an owned buffer. Cloning shares; the backing
//! storage lives as long as any clone.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

/// Read-only bytes, shared.
#[derive(Clone)]
pub struct SharedBytes {
    owner: Arc<dyn AsRef<[u8]> + Send + Sync>,
    range: Range<usize>,
}

impl SharedBytes {
    /// `range` of `owner`'s bytes; `None` if it is out of bounds.
    pub fn slice_of(owner: Arc<dyn AsRef<[u8]> + Send + Sync>, range: Range<usize>) -> Option<Self> {
        (range.start <= range.end && range.end <= (*owner).as_ref().len()).then_some(SharedBytes { owner, range })
    }

    pub fn as_slice(&self) -> &[u8] {
        &(*self.owner).as_ref()[self.range.clone()]
    }

    pub fn len(&self) -> usize {
        self.range.len()
    }

    pub fn is_empty(&self) -> bool {
        self.range.is_empty()
    }
}

impl From<Vec<u8>> for SharedBytes {
    fn from(v: Vec<u8>) -> Self {
        let range = 0..v.len();
        SharedBytes { owner: Arc::new(v), range }
    }
}

impl std::ops::Deref for SharedBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl PartialEq for SharedBytes {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl fmt::Debug for SharedBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SharedBytes({} bytes)", self.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slice_is_bounded_and_shares_its_owner() {
        let owner: Arc<dyn AsRef<[u8]> + Send + Sync> = Arc::new(vec![1u8, 2, 3, 4, 5]);
        let s = SharedBytes::slice_of(owner.clone(), 1..4).unwrap();
        assert_eq!(&*s, &[2, 3, 4]);
        assert_eq!(s.clone(), SharedBytes::from(vec![2, 3, 4]));
        assert!(SharedBytes::slice_of(owner.clone(), 3..6).is_none());
        #[allow(clippy::reversed_empty_ranges)]
        let reversed = 4..3;
        assert!(SharedBytes::slice_of(owner, reversed).is_none());
    }
}
