//! Attention on the host: with and without gpt-oss's sinks (GQA, windows,
//! soft-capping, partial lanes), over caches of every cache dtype, and every
//! cache code widened exactly; the paging the sparse cases share.

use std::path::Path;

use ferrum_engine::DType;
use ferrum_engine::ops::Attention;
use ferrum_engine::ops::attention::AttentionDims;

use super::super::{attention, by_cache_dtype};
use super::{Cache, NO_CXX, Rng, f32_bytes, harness, run_on_host};

/// Block tables for `seqs` (context length, new tokens) over shuffled
/// blocks, two spare; the new tokens' sequences and positions.
pub(super) struct Paged {
    pub tables: Vec<u32>,
    pub max_blocks: usize,
    pub num_slots: usize,
    pub token_seq: Vec<u32>,
    pub positions: Vec<u32>,
}

pub(super) fn paged(rng: &mut Rng, block_size: usize, seqs: &[(usize, usize)]) -> Paged {
    let needed: Vec<usize> = seqs.iter().map(|&(ctx, _)| ctx.div_ceil(block_size)).collect();
    let num_blocks = needed.iter().sum::<usize>() + 2;
    let max_blocks = needed.iter().copied().max().unwrap_or(1);
    let mut pool = rng.experts(num_blocks, num_blocks).into_iter();
    let (mut tables, mut token_seq, mut positions) = (Vec::new(), Vec::new(), Vec::new());
    for (s, (&(ctx, new), &n)) in seqs.iter().zip(&needed).enumerate() {
        let table = pool.by_ref().take(n).map(|b| b as u32);
        tables.extend(table.chain(std::iter::repeat(0)).take(max_blocks));
        for pos in ctx - new..ctx {
            token_seq.push(s as u32);
            positions.push(pos as u32);
        }
    }
    Paged { tables, max_blocks, num_slots: num_blocks * block_size, token_seq, positions }
}

pub(super) fn u32_bytes(v: &[u32]) -> Vec<u8> {
    bytemuck::cast_slice::<u32, u8>(v).to_vec()
}

/// One attention on the host, with the backend's params and grid, against
/// the reference: `seqs` are (context length, new tokens) per sequence, as
/// the conformance cases page them (blocks shuffled, spare blocks of
/// garbage, tables padded with block 0); sinks, when asked for, are random
/// but for one that outweighs every score and one of -inf (no weight);
/// keys and values are rounded into a cache of `dtype`. Returns the largest
/// error.
fn check_attention(
    exe: &Path,
    rng: &mut Rng,
    op: Attention,
    [heads, kv_heads, d]: [usize; 3],
    seqs: &[(usize, usize)],
    sinks: bool,
    dtype: DType,
) -> f32 {
    let Paged { tables, max_blocks, num_slots, token_seq, positions } = paged(rng, op.block_size, seqs);
    let t = positions.len();
    let q = rng.vec(t * heads * d, 1.0, false);
    let k = Cache::rounded(dtype, &rng.vec(num_slots * kv_heads * d, 1.0, false));
    let v = Cache::rounded(dtype, &rng.vec(num_slots * kv_heads * d, 1.0, false));
    let sinks = sinks.then(|| {
        let mut s = rng.vec(heads, 2.0, false);
        s[0] = 8.0;
        s[heads - 1] = f32::NEG_INFINITY;
        s
    });
    op.check_pages(&tables, max_blocks, num_slots, &token_seq, &positions).unwrap();
    let mut want = vec![0.0; t * heads * d];
    let dims = AttentionDims { heads, kv_heads, head_dim: d, max_blocks };
    let (k_s, v_s) = (k.slice(), v.slice());
    op.reference(dims, &q, k_s, v_s, &tables, &token_seq, &positions, sinks.as_deref(), None, &mut want).unwrap();
    let p = attention::params(&op, &[t, heads, d], &[num_slots, kv_heads, d], max_blocks, sinks.is_some()).unwrap();
    let (tables, token_seq, positions) = (u32_bytes(&tables), u32_bytes(&token_seq), u32_bytes(&positions));
    let inputs = [
        f32_bytes(&q),
        k.bytes(),
        v.bytes(),
        &tables,
        &token_seq,
        &positions,
        sinks.as_deref().map_or(&[][..], f32_bytes),
    ];
    let name = by_cache_dtype(dtype, attention::KERNELS).unwrap();
    let got = run_on_host(exe, name, attention::grid(&p), 32 * attention::ATTN_WARPS, &p, &inputs, want.len());
    let mut max_err = 0.0f32;
    for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
        // a weighted mean of values in [-1, 1), summed in another order
        assert!(
            (g - w).abs() <= 2e-6 + 1e-5 * w.abs(),
            "{dtype} cache, {op:?} heads={heads} kv_heads={kv_heads} d={d} seqs={seqs:?} sinks={sinks:?}: \
             element {i} (token {}, head {}): {g} vs {w}",
            i / (heads * d),
            i / d % heads
        );
        max_err = max_err.max((g - w).abs());
    }
    max_err
}

#[test]
fn attention_with_and_without_sinks_matches_the_reference_on_the_host() {
    let Some(exe) = harness() else {
        eprintln!("{NO_CXX}");
        return;
    };
    let op = |block_size, scale, softcap, window| Attention { block_size, scale, softcap, window };
    let inv = |d: usize| 1.0 / (d as f32).sqrt();
    // a prefill, a decode step and a chunk continuing a sequence, in one batch
    let mixed: &[(usize, usize)] = &[(21, 21), (20, 1), (50, 5)];
    let mut rng = Rng(5);
    // gpt-oss: GQA 4:1, a window of 5 (shorter than most contexts), and none
    check_attention(exe, &mut rng, op(16, inv(32), None, Some(5)), [8, 2, 32], mixed, true, DType::F32);
    check_attention(exe, &mut rng, op(16, inv(32), None, None), [8, 2, 32], mixed, true, DType::F32);
    // no GQA, blocks of 3, a window longer than some contexts, soft-capping
    check_attention(
        exe,
        &mut rng,
        op(3, 0.5, Some(1.5), Some(7)),
        [4, 4, 16],
        &[(1, 1), (9, 2), (4, 4)],
        true,
        DType::F32,
    );
    // GQA 6:1, a head_dim that leaves lanes idle (72 = 2 * 32 + 8), keys
    // past a warp's stride, sinks outweighing few keys (one-token contexts)
    check_attention(exe, &mut rng, op(16, 0.3, Some(2.0), None), [6, 1, 72], &[(70, 2), (1, 1)], true, DType::F32);
    // the path without sinks (a null pointer, never read)
    check_attention(exe, &mut rng, op(3, 0.5, Some(1.5), Some(7)), [8, 2, 32], mixed, false, DType::F32);
    check_attention(exe, &mut rng, op(16, inv(16), None, None), [4, 4, 16], &[(1, 1), (9, 2)], false, DType::F32);
    // a head_dim past the kernel's registers is refused on the host
    assert!(attention::params(&op(16, 1.0, None, None), &[1, 1, 264], &[16, 1, 264], 1, false).is_err());
}

/// Caches of f16, bf16 and fp8: the cases above (GQA, windows, soft-capping,
/// sinks, idle lanes) with keys and values rounded into the cache's dtype,
/// against the reference reading the same elements.
#[test]
fn attention_over_every_cache_dtype_matches_the_reference_on_the_host() {
    let Some(exe) = harness() else {
        eprintln!("{NO_CXX}");
        return;
    };
    let op = |block_size, scale, softcap, window| Attention { block_size, scale, softcap, window };
    let inv = |d: usize| 1.0 / (d as f32).sqrt();
    let mixed: &[(usize, usize)] = &[(21, 21), (20, 1), (50, 5)];
    let mut rng = Rng(17);
    for dtype in DType::CACHE {
        let errs = [
            check_attention(exe, &mut rng, op(16, inv(32), None, Some(5)), [8, 2, 32], mixed, true, dtype),
            check_attention(exe, &mut rng, op(3, 0.5, Some(1.5), Some(7)), [4, 4, 16], &[(9, 2), (4, 4)], true, dtype),
            check_attention(exe, &mut rng, op(16, 0.3, Some(2.0), None), [6, 1, 72], &[(70, 2), (1, 1)], true, dtype),
            check_attention(exe, &mut rng, op(16, inv(16), None, None), [4, 4, 16], &[(1, 1), (9, 2)], false, dtype),
        ];
        let max = errs.into_iter().fold(0.0f32, f32::max);
        eprintln!("attention over a {dtype} cache: max |error| {max:e} against the reference");
    }
}

/// Every code of every cache dtype, read back exactly: each token is alone
/// in its sequence (one key, weight 1), so its output is its value row,
/// widened; the reference reads the same rows. Values equal (+0 and -0
/// alike: the weighted sum starts at +0), NaN where the reference's is.
#[test]
fn attention_widens_every_cache_code_exactly_on_the_host() {
    let Some(exe) = harness() else {
        eprintln!("{NO_CXX}");
        return;
    };
    let d = 256;
    for dtype in [DType::F16, DType::BF16, DType::F8E4M3] {
        let codes: Vec<u8> = match dtype.size_bytes() {
            1 => (0..=255u8).collect(),
            _ => (0..=u16::MAX).flat_map(u16::to_le_bytes).collect(),
        };
        let tokens = codes.len() / dtype.size_bytes() / d;
        let v = Cache::from_bytes(dtype, &codes);
        let k = Cache::from_bytes(dtype, &vec![0; codes.len()]);
        let op = Attention { block_size: 1, scale: 1.0, softcap: None, window: None };
        // sequence t: one block, block t, its token at position 0
        let tables: Vec<u32> = (0..tokens as u32).collect();
        let (token_seq, positions) = (tables.clone(), vec![0u32; tokens]);
        let q = Rng(19).vec(tokens * d, 1.0, false);
        let dims = AttentionDims { heads: 1, kv_heads: 1, head_dim: d, max_blocks: 1 };
        let mut want = vec![0.0; tokens * d];
        op.reference(dims, &q, k.slice(), v.slice(), &tables, &token_seq, &positions, None, None, &mut want).unwrap();
        let p = attention::params(&op, &[tokens, 1, d], &[tokens, 1, d], 1, false).unwrap();
        let u32s = |v: &[u32]| bytemuck::cast_slice::<u32, u8>(v).to_vec();
        let inputs =
            [f32_bytes(&q), k.bytes(), v.bytes(), &u32s(&tables), &u32s(&token_seq), &u32s(&positions), &[][..]];
        let name = by_cache_dtype(dtype, attention::KERNELS).unwrap();
        let got = run_on_host(exe, name, attention::grid(&p), 32 * attention::ATTN_WARPS, &p, &inputs, want.len());
        let mut widened = vec![0.0; tokens * d];
        v.slice().widen_into(0, &mut widened);
        for (i, ((&g, &w), &x)) in got.iter().zip(&want).zip(&widened).enumerate() {
            let same = |a: f32, b: f32| a == b || (a.is_nan() && b.is_nan());
            assert!(same(w, x), "{dtype} code {i}: the reference reads {w}, widens {x}");
            assert!(same(g, w), "{dtype} code {i}: {g} vs {w}");
        }
        eprintln!("attention over a {dtype} cache: all {} codes widened exactly", tokens * d);
    }
}
