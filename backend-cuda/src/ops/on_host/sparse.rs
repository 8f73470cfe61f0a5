//! DeepSeek-V3.2's sparse attention on the host: index_topk's choices
//! exactly (ties at zero, every cache dtype, tokens that keep every
//! position), and attention over a selection of positions against the
//! reference.

use ferrum_engine::DType;
use ferrum_engine::ops::attention::AttentionDims;
use ferrum_engine::ops::{Attention, IndexTopk, NO_POSITION};

use super::super::{attention, by_cache_dtype, index_topk};
use super::attention::{paged, u32_bytes};
use super::{Cache, NO_CXX, Rng, f32_bytes, harness, run_on_host};

/// One index_topk on the host against the reference, exactly. With `ties`,
/// queries come from 5 levels, so many scores are exactly 0 or equal.
fn check_index_topk(
    exe: &std::path::Path,
    rng: &mut Rng,
    op: IndexTopk,
    [heads, d]: [usize; 2],
    seqs: &[(usize, usize)],
    ties: bool,
    dtype: DType,
) {
    let pg = paged(rng, op.block_size, seqs);
    let t = pg.positions.len();
    let q = rng.vec(t * heads * d, 1.0, ties);
    let w: Vec<f32> = rng.vec(t * heads, 1.0, false).iter().map(|v| 0.1 + v.abs()).collect();
    let k = Cache::rounded(dtype, &rng.vec(pg.num_slots * d, 1.0, ties));
    let mut want = vec![0u32; t * op.top_k];
    op.reference(&q, &w, k.slice(), pg.max_blocks, &pg.tables, &pg.token_seq, &pg.positions, &mut want).unwrap();
    let p = index_topk::params(&op, &[t, heads, d], pg.num_slots, pg.max_blocks).unwrap();
    let scratch = vec![0u8; t * pg.max_blocks * op.block_size * 4];
    let (tables, seq, pos) = (u32_bytes(&pg.tables), u32_bytes(&pg.token_seq), u32_bytes(&pg.positions));
    let inputs = [f32_bytes(&q), f32_bytes(&w), k.bytes(), &tables, &seq, &pos, &scratch[..]];
    let name = by_cache_dtype(dtype, index_topk::KERNELS).unwrap();
    let got = run_on_host(exe, name, (t as u32, 1, 1), index_topk::BLOCK, &p, &inputs, want.len());
    let got: Vec<u32> = got.iter().map(|v| v.to_bits()).collect();
    assert_eq!(got, want, "{dtype} cache, {op:?} heads={heads} d={d} seqs={seqs:?} ties={ties}");
}

#[test]
fn index_topk_picks_what_the_reference_picks_on_the_host() {
    let Some(exe) = harness() else {
        eprintln!("{NO_CXX}");
        return;
    };
    let mut rng = Rng(11);
    let mixed: &[(usize, usize)] = &[(37, 37), (20, 1), (300, 3)];
    let op = |block_size, top_k| IndexTopk { block_size, top_k };
    check_index_topk(exe, &mut rng, op(4, 8), [6, 16], mixed, false, DType::F32);
    // ties: equal scores and zeros go to the earlier position
    check_index_topk(exe, &mut rng, op(16, 5), [2, 8], mixed, true, DType::F32);
    // more positions than a block has threads, a top_k past some contexts
    check_index_topk(exe, &mut rng, op(3, 40), [4, 40], &[(600, 2), (12, 12)], false, DType::F32);
    for dtype in [DType::F16, DType::BF16, DType::F8E4M3] {
        check_index_topk(exe, &mut rng, op(4, 8), [6, 16], mixed, false, dtype);
    }
}

#[test]
fn attention_over_selected_positions_matches_the_reference_on_the_host() {
    let Some(exe) = harness() else {
        eprintln!("{NO_CXX}");
        return;
    };
    let mut rng = Rng(12);
    for (window, n, dtype) in [(None, 8, DType::F32), (Some(12), 5, DType::F32), (None, 16, DType::BF16)] {
        let op = Attention { block_size: 4, scale: 0.2, softcap: None, window };
        let (heads, d) = (4, 32);
        let pg = paged(&mut rng, op.block_size, &[(37, 37), (20, 1), (50, 5)]);
        let t = pg.positions.len();
        let q = rng.vec(t * heads * d, 1.0, false);
        let k = Cache::rounded(dtype, &rng.vec(pg.num_slots * d, 1.0, false));
        let v = Cache::rounded(dtype, &rng.vec(pg.num_slots * d, 1.0, false));
        // n positions of each token's 0..=p, shuffled, padded with NO_POSITION
        let mut selected = Vec::new();
        for &p in &pg.positions {
            let mut row: Vec<u32> =
                rng.experts(p as usize + 1, n.min(p as usize + 1)).iter().map(|&j| j as u32).collect();
            row.resize(n, NO_POSITION);
            selected.extend(row);
        }
        let dims = AttentionDims { heads, kv_heads: 1, head_dim: d, max_blocks: pg.max_blocks };
        let mut want = vec![0.0; t * heads * d];
        let (tables, seq, pos) = (&pg.tables, &pg.token_seq, &pg.positions);
        op.reference(dims, &q, k.slice(), v.slice(), tables, seq, pos, None, Some(&selected), &mut want).unwrap();
        let mut p = attention::params(&op, &[t, heads, d], &[pg.num_slots, 1, d], pg.max_blocks, false).unwrap();
        p.n_selected = n as u32;
        let (tables, seq, pos, sel) = (u32_bytes(tables), u32_bytes(seq), u32_bytes(pos), u32_bytes(&selected));
        let inputs = [f32_bytes(&q), k.bytes(), v.bytes(), &tables, &seq, &pos, &[][..], &sel];
        let name = by_cache_dtype(dtype, attention::KERNELS).unwrap();
        let got = run_on_host(exe, name, attention::grid(&p), 32 * attention::ATTN_WARPS, &p, &inputs, want.len());
        for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
            assert!((g - w).abs() <= 2e-6 + 1e-5 * w.abs(), "{dtype} window={window:?} n={n}: [{i}] {g} vs {w}");
        }
    }
}
