//! KV blocks for many sequences, with prefix caching: a block whose tokens
//! are all known is registered under a hash of (its parent's hash, its
//! tokens); a later prompt that starts with the same whole blocks reuses
//! them instead of recomputing. Freed blocks keep their hash until they are
//! handed out again (least recently freed first), as in vLLM.

use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};

pub type BlockId = u32;

/// Hash of a full block given its parent's hash: the identity of a prefix.
pub fn block_hash(parent: u64, tokens: &[u32]) -> u64 {
    // SipHash with fixed keys: stable within a process, which is all we need
    #[allow(deprecated)]
    let mut h = std::hash::SipHasher::new();
    parent.hash(&mut h);
    tokens.hash(&mut h);
    h.finish()
}

#[derive(Debug)]
pub struct BlockManager {
    pub block_size: usize,
    ref_counts: Vec<u32>,
    /// blocks with no owner, least recently freed first
    free: VecDeque<BlockId>,
    hash_of: Vec<Option<u64>>,
    by_hash: HashMap<u64, BlockId>,
    pub prefix_hit_blocks: u64,
    pub prefix_query_blocks: u64,
}

impl BlockManager {
    pub fn new(num_blocks: usize, block_size: usize) -> Self {
        BlockManager {
            block_size,
            ref_counts: vec![0; num_blocks],
            free: (0..num_blocks as BlockId).collect(),
            hash_of: vec![None; num_blocks],
            by_hash: HashMap::new(),
            prefix_hit_blocks: 0,
            prefix_query_blocks: 0,
        }
    }

    pub fn total(&self) -> usize {
        self.ref_counts.len()
    }

    pub fn free_count(&self) -> usize {
        self.free.len()
    }

    pub fn used_count(&self) -> usize {
        self.total() - self.free_count()
    }

    /// Whole leading blocks of `tokens` already cached, as (blocks, hashes).
    /// The last token is never covered: its logits must be computed.
    pub fn cached_prefix(&mut self, tokens: &[u32]) -> (Vec<BlockId>, Vec<u64>) {
        let full = tokens.len().saturating_sub(1) / self.block_size;
        let (mut blocks, mut hashes) = (Vec::new(), Vec::new());
        let mut parent = 0u64;
        for b in 0..full {
            self.prefix_query_blocks += 1;
            let h = block_hash(parent, &tokens[b * self.block_size..(b + 1) * self.block_size]);
            let Some(&block) = self.by_hash.get(&h) else { break };
            self.prefix_hit_blocks += 1;
            blocks.push(block);
            hashes.push(h);
            parent = h;
        }
        (blocks, hashes)
    }

    /// Takes ownership of cached blocks found by `cached_prefix`.
    pub fn share(&mut self, blocks: &[BlockId]) {
        for &b in blocks {
            if self.ref_counts[b as usize] == 0 {
                self.free.retain(|&f| f != b);
            }
            self.ref_counts[b as usize] += 1;
        }
    }

    /// A fresh block, evicting the least recently freed cached one.
    pub fn allocate(&mut self) -> Option<BlockId> {
        let b = self.free.pop_front()?;
        if let Some(h) = self.hash_of[b as usize].take() {
            self.by_hash.remove(&h);
        }
        self.ref_counts[b as usize] = 1;
        Some(b)
    }

    /// Records that `block` now holds the whole block with this hash.
    pub fn register(&mut self, block: BlockId, hash: u64) {
        if self.by_hash.contains_key(&hash) || self.hash_of[block as usize].is_some() {
            return; // an identical block is cached already, or this one is
        }
        self.hash_of[block as usize] = Some(hash);
        self.by_hash.insert(hash, block);
    }

    pub fn release(&mut self, blocks: &[BlockId]) {
        for &b in blocks {
            let rc = &mut self.ref_counts[b as usize];
            debug_assert!(*rc > 0, "block {b} released twice");
            *rc = rc.saturating_sub(1);
            if *rc == 0 {
                self.free.push_back(b);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shared_prefix_reuses_whole_blocks_only() {
        let mut m = BlockManager::new(8, 4);
        let prompt: Vec<u32> = (0..10).collect();
        assert_eq!(m.cached_prefix(&prompt).0, Vec::<BlockId>::new());
        let blocks: Vec<_> = (0..3).map(|_| m.allocate().unwrap()).collect();
        m.register(blocks[0], block_hash(0, &prompt[..4]));
        m.register(blocks[1], block_hash(block_hash(0, &prompt[..4]), &prompt[4..8]));
        m.release(&blocks);
        assert_eq!(m.free_count(), 8);
        // same first 8 tokens, different tail: two blocks reused
        let other: Vec<u32> = (0..8).chain([99, 98, 97]).collect();
        let (hit, _) = m.cached_prefix(&other);
        assert_eq!(hit, &blocks[..2]);
        m.share(&hit);
        assert_eq!(m.used_count(), 2);
        // an 8-token prompt reuses only one: its last token must be computed
        assert_eq!(m.cached_prefix(&other[..8]).0.len(), 1);
    }

    #[test]
    fn allocation_evicts_the_oldest_free_cached_block() {
        let mut m = BlockManager::new(2, 2);
        let a = m.allocate().unwrap();
        m.register(a, 7);
        m.release(&[a]);
        let b = m.allocate().unwrap();
        assert_ne!(a, b, "the never-used block goes first");
        let c = m.allocate().unwrap();
        assert_eq!(c, a);
        assert!(m.cached_prefix(&[1, 2, 3]).0.is_empty(), "its hash is gone");
        assert!(m.allocate().is_none());
    }
}
