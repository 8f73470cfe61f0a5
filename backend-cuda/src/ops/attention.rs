//! attention: host checks of the paged KV indices (as the reference makes),
//! then one block per (token, query head) of kernels/cu/attention.cu, with
//! gpt-oss's sinks and DeepSeek-V3.2's selected positions when given; the
//! kernel of the caches' dtype (f32, f16, bf16 or fp8 E4M3) widens them as
//! it reads.

use ferrum_engine::ops::Attention;
use ferrum_engine::{Error, Result, Tensor};

use super::{AttentionParams, Launcher, by_cache_dtype, u32_of};
use crate::buffer::cuda_buffer;

/// `MAX_D` in attention.cu.
const MAX_HEAD_DIM: usize = 256;
/// `ATTN_WARPS` in attention.cu.
pub(super) const ATTN_WARPS: u32 = 4;
/// attention.cu's kernels, by cache dtype (f32, f16, bf16, fp8).
pub(super) const KERNELS: [&str; 4] = ["attention_f32", "attention_f16", "attention_bf16", "attention_fp8"];

pub(super) fn run(l: &Launcher, p: &Attention, inputs: &[&Tensor], ptrs: &[u64], out: u64) -> Result<()> {
    let dtypes: Vec<_> = inputs.iter().map(|t| t.dtype()).collect();
    let (sinks, selected) = Attention::optional_inputs(&dtypes)?;
    let &[q, k_cache, v_cache, tables, token_seq, positions] = &inputs[..inputs.len().min(6)] else {
        return Err(Error::op("attention", format!("expects 6 to 8 inputs, got {}", inputs.len())));
    };
    let n_selected = selected.map_or(0, |i| inputs[i].shape()[1]);
    if k_cache.dtype() != v_cache.dtype() {
        return Err(Error::op("attention", format!("k_cache is {}, v_cache {}", k_cache.dtype(), v_cache.dtype())));
    }
    let name = by_cache_dtype(k_cache.dtype(), KERNELS)?;
    let max_blocks = tables.shape()[1];
    let mut params = params(p, q.shape(), k_cache.shape(), max_blocks, sinks.is_some())?;
    params.n_selected = u32_of(n_selected, "selected positions")?;
    let host = |t: &Tensor| cuda_buffer(t)?.host_u32(l.stream);
    p.check_pages(&host(tables)?, max_blocks, k_cache.shape()[0], &host(token_seq)?, &host(positions)?)?;
    // without sinks or a selection the kernel never reads that pointer: null
    let (sinks, selected) = (sinks.map_or(0, |i| ptrs[i]), selected.map_or(0, |i| ptrs[i]));
    let args = [ptrs[0], ptrs[1], ptrs[2], ptrs[3], ptrs[4], ptrs[5], sinks, selected, out];
    l.launch(name, grid(&params), 32 * ATTN_WARPS, &params, &args)
}

/// The kernel's params for q [tokens, heads, head_dim] and a cache
/// [slots, kv_heads, head_dim] paged by tables of `max_blocks`; a head_dim
/// past the kernel's registers is an error.
pub(super) fn params(
    p: &Attention,
    q: &[usize],
    cache: &[usize],
    max_blocks: usize,
    has_sinks: bool,
) -> Result<AttentionParams> {
    let (tokens, heads, head_dim) = (q[0], q[1], q[2]);
    if head_dim > MAX_HEAD_DIM {
        return Err(Error::op("attention", format!("head_dim {head_dim} > {MAX_HEAD_DIM} is not supported on cuda")));
    }
    u32_of(tokens * heads, "tokens * heads")?;
    Ok(AttentionParams {
        tokens: u32_of(tokens, "tokens")?,
        heads: u32_of(heads, "heads")?,
        kv_heads: u32_of(cache[1], "kv_heads")?,
        head_dim: u32_of(head_dim, "head_dim")?,
        block_size: u32_of(p.block_size, "block_size")?,
        max_blocks: u32_of(max_blocks, "max_blocks")?,
        window: u32_of(p.window.unwrap_or(0), "window")?,
        num_slots: u32_of(cache[0], "num_slots")?,
        scale: p.scale,
        softcap: p.softcap.unwrap_or(0.0),
        has_sinks: has_sinks as u32,
        n_selected: 0,
    })
}

/// A block per (token, query head).
pub(super) fn grid(p: &AttentionParams) -> (u32, u32, u32) {
    (p.tokens * p.heads, 1, 1)
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
