//! The paged KV cache: a pool of fixed-size blocks per layer, handed out to
//! sequences through block tables (vLLM's PagedAttention layout). A sequence
//! of n tokens owns ceil(n / block_size) blocks, in any order.

use std::sync::Arc;

use crate::backend::Backend;
use crate::config::ModelConfig;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// The device tensors: for each layer, keys and values of every slot,
/// [num_blocks * block_size, kv_heads, head_dim] in the config's
/// `kv_cache_dtype`. With MLA, `v[l]` is `k[l]` (the latent and rotary key,
/// [slots, 1, kv_lora_rank + rope]); with DeepSeek-V3.2's indexer,
/// `index_k[l]` holds its keys, [slots, 1, index_head_dim], in the same slots.
pub struct KvCache {
    pub block_size: usize,
    pub num_blocks: usize,
    pub dtype: DType,
    pub k: Vec<Tensor>,
    pub v: Vec<Tensor>,
    /// Empty without an indexer.
    pub index_k: Vec<Tensor>,
}

impl KvCache {
    pub fn new(backend: &dyn Backend, config: &ModelConfig, num_blocks: usize, block_size: usize) -> Result<Self> {
        if block_size == 0 || num_blocks == 0 {
            return Err(Error::KvCache("block size and block count must be positive".into()));
        }
        let shape = [num_blocks * block_size, config.num_kv_heads, config.head_dim];
        let dtype = config.kv_cache_dtype;
        if !dtype.is_cache() {
            return Err(Error::KvCache(format!("a cache cannot hold {dtype}")));
        }
        let layer = || backend.alloc(&shape, dtype);
        let k: Vec<Tensor> = (0..config.num_layers).map(|_| layer()).collect::<Result<_>>()?;
        // MLA reads its values out of the cached latent: one tensor, two names
        let v = if config.mla.is_some() {
            k.clone()
        } else {
            (0..config.num_layers).map(|_| layer()).collect::<Result<_>>()?
        };
        let index_k = match config.mla.as_ref().and_then(|m| m.indexer.as_ref()) {
            Some(i) => (0..config.num_layers)
                .map(|_| backend.alloc(&[num_blocks * block_size, 1, i.head_dim], dtype))
                .collect::<Result<_>>()?,
            None => Vec::new(),
        };
        Ok(KvCache { block_size, num_blocks, dtype, k, v, index_k })
    }

    pub fn num_slots(&self) -> usize {
        self.num_blocks * self.block_size
    }

    /// Bytes one block takes across all layers (k and v, and the indexer's
    /// keys, in the cache dtype).
    pub fn bytes_per_block(config: &ModelConfig, block_size: usize) -> usize {
        config.kv_bytes_per_token() * block_size
    }
}

/// Hands out block ids. Blocks go back to the pool when a sequence ends.
#[derive(Debug)]
pub struct BlockPool {
    free: Vec<u32>,
    total: usize,
}

impl BlockPool {
    pub fn new(num_blocks: usize) -> Self {
        // pop() hands out low ids first
        BlockPool { free: (0..num_blocks as u32).rev().collect(), total: num_blocks }
    }

    pub fn free_count(&self) -> usize {
        self.free.len()
    }

    pub fn total(&self) -> usize {
        self.total
    }

    fn take(&mut self) -> Option<u32> {
        self.free.pop()
    }

    fn give_back(&mut self, block: u32) {
        debug_assert!(!self.free.contains(&block), "block {block} freed twice");
        self.free.push(block);
    }
}

/// The blocks one sequence owns; its block table.
#[derive(Debug, Default)]
pub struct BlockTable {
    blocks: Vec<u32>,
}

impl BlockTable {
    pub fn blocks(&self) -> &[u32] {
        &self.blocks
    }

    /// Grow until `tokens` positions fit. On failure nothing is taken.
    pub fn reserve(&mut self, pool: &mut BlockPool, tokens: usize, block_size: usize) -> Result<()> {
        let needed = tokens.div_ceil(block_size).saturating_sub(self.blocks.len());
        if needed > pool.free_count() {
            return Err(Error::KvCache(format!(
                "{tokens} tokens need {needed} more blocks of {block_size}; {} of {} are free",
                pool.free_count(),
                pool.total()
            )));
        }
        for _ in 0..needed {
            self.blocks.push(pool.take().expect("counted above"));
        }
        Ok(())
    }

    pub fn release(&mut self, pool: &mut BlockPool) {
        for b in self.blocks.drain(..) {
            pool.give_back(b);
        }
    }
}

/// A cache plus the pool that hands out its blocks: what one generation loop owns.
pub struct PagedKv {
    pub cache: KvCache,
    pub pool: BlockPool,
}

impl PagedKv {
    pub fn new(backend: &Arc<dyn Backend>, config: &ModelConfig, num_blocks: usize, block_size: usize) -> Result<Self> {
        Ok(PagedKv {
            cache: KvCache::new(backend.as_ref(), config, num_blocks, block_size)?,
            pool: BlockPool::new(num_blocks),
        })
    }

    /// A cache with room for `tokens` positions of one sequence.
    pub fn for_tokens(
        backend: &Arc<dyn Backend>,
        config: &ModelConfig,
        tokens: usize,
        block_size: usize,
    ) -> Result<Self> {
        Self::new(backend, config, tokens.div_ceil(block_size).max(1), block_size)
    }
}
