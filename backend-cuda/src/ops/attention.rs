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
        return Err(Error::op("attention", "expects 6 inputs"));
    };
    let (tokens, heads, head_dim) = (q.shape()[0], q.shape()[1], q.shape()[2]);
    let (num_slots, kv_heads) = (k_cache.shape()[0], k_cache.shape()[1]);
    if head_dim > MAX_HEAD_DIM {
        return Err(Error::op("attention", format!("head_dim {head_dim} > {MAX_HEAD_DIM} is not supported on cuda")));
    }
    let max_blocks = tables.shape()[1];
    let host = |t: &Tensor| cuda_buffer(t)?.host_u32();
    check_pages(p, &host(tables)?, max_blocks, num_slots, &host(token_seq)?, &host(positions)?)?;
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

/// The reference's checks, on the host copies: every token's sequence has a
/// block table, and every block its visible positions live in is in the cache.
fn check_pages(
    p: &Attention,
    tables: &[u32],
    max_blocks: usize,
    num_slots: usize,
    seq_host: &[u32],
    pos_host: &[u32],
) -> Result<()> {
    let err = |msg: String| Err(Error::op("attention", msg));
    let seqs = tables.len() / max_blocks.max(1);
    let num_blocks = num_slots / p.block_size;
    for (t, (&s, &pos)) in seq_host.iter().zip(pos_host.iter()).enumerate() {
        let (s, pos) = (s as usize, pos as usize);
        if s >= seqs {
            return err(format!("token {t} names sequence {s} of {seqs}"));
        }
        if pos / p.block_size >= max_blocks {
            return err(format!("position {pos} past the block table of sequence {s}"));
        }
        let first = p.window.map_or(0, |w| (pos + 1).saturating_sub(w));
        for b in first / p.block_size..=pos / p.block_size {
            let block = tables[s * max_blocks + b] as usize;
            if block >= num_blocks {
                let slot = block * p.block_size;
                return err(format!("slot {slot} past {num_slots} cache slots"));
            }
        }
    }
    Ok(())
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
        assert!(check_pages(&attn(None), &tables, 2, 16, &[0, 1], &[7, 3]).is_ok());
        assert!(check_pages(&attn(None), &tables, 2, 16, &[2], &[0]).is_err(), "no sequence 2");
        assert!(check_pages(&attn(None), &tables, 2, 16, &[0], &[8]).is_err(), "past the table");
        assert!(check_pages(&attn(None), &[0, 9, 2, 3], 2, 16, &[0], &[5]).is_err(), "block 9 of 4");
        // a window that no longer sees block 9 does not touch it
        assert!(check_pages(&attn(Some(2)), &[9, 1, 2, 3], 2, 16, &[0], &[5]).is_ok());
    }
}
