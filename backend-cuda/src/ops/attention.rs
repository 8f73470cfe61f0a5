//! attention: host checks of the paged KV indices (as the reference makes),
//! then one block per (token, query head) of kernels/cu/attention.cu.

use ferrum_engine::ops::Attention;
use ferrum_engine::{Error, Result, Tensor};

use super::{AttentionParams, Launcher, u32_of};
use crate::buffer::cuda_buffer;

/// `MAX_D` in attention.cu.
const MAX_HEAD_DIM: usize = 256;
/// `ATTN_WARPS` in attention.cu.
const ATTN_WARPS: u32 = 4;

pub(super) fn run(l: &Launcher, p: &Attention, inputs: &[&Tensor], ptrs: &[u64], out: u64) -> Result<()> {
    let [q, k_cache, _v, tables, token_seq, positions] = inputs else {
        return Err(Error::op("attention", "expects 6 inputs (sinks are not ported to cuda yet)"));
    };
    let (tokens, heads, head_dim) = (q.shape()[0], q.shape()[1], q.shape()[2]);
    let (num_slots, kv_heads) = (k_cache.shape()[0], k_cache.shape()[1]);
    if head_dim > MAX_HEAD_DIM {
        return Err(Error::op("attention", format!("head_dim {head_dim} > {MAX_HEAD_DIM} is not supported on cuda")));
    }
    let max_blocks = tables.shape()[1];
    let host = |t: &Tensor| cuda_buffer(t)?.host_u32(l.stream);
    p.check_pages(&host(tables)?, max_blocks, num_slots, &host(token_seq)?, &host(positions)?)?;
    let params = AttentionParams {
        tokens: u32_of(tokens, "tokens")?,
        heads: u32_of(heads, "heads")?,
        kv_heads: u32_of(kv_heads, "kv_heads")?,
        head_dim: u32_of(head_dim, "head_dim")?,
        block_size: u32_of(p.block_size, "block_size")?,
        max_blocks: u32_of(max_blocks, "max_blocks")?,
        window: u32_of(p.window.unwrap_or(0), "window")?,
        num_slots: u32_of(num_slots, "num_slots")?,
        scale: p.scale,
        softcap: p.softcap.unwrap_or(0.0),
    };
    let blocks = u32_of(tokens * heads, "tokens * heads")?;
    let args = [ptrs[0], ptrs[1], ptrs[2], ptrs[3], ptrs[4], ptrs[5], out];
    l.launch("attention", (blocks, 1, 1), 32 * ATTN_WARPS, &params, &args)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attn(window: Option<usize>) -> Attention {
        Attention { block_size: 4, scale: 1.0, softcap: None, window }
    }

    #[test]
    fn page_checks_catch_what_the_reference_catches() {
        // 2 sequences x 2 blocks, 4 blocks of 4 slots
        let tables = [0, 1, 2, 3];
        assert!(attn(None).check_pages(&tables, 2, 16, &[0, 1], &[7, 3]).is_ok());
        assert!(attn(None).check_pages(&tables, 2, 16, &[2], &[0]).is_err(), "no sequence 2");
        assert!(attn(None).check_pages(&tables, 2, 16, &[0], &[8]).is_err(), "past the table");
        assert!(attn(None).check_pages(&[0, 9, 2, 3], 2, 16, &[0], &[5]).is_err(), "block 9 of 4");
        // a window that no longer sees block 9 does not touch it
        assert!(attn(Some(2)).check_pages(&[9, 1, 2, 3], 2, 16, &[0], &[5]).is_ok());
    }
}
