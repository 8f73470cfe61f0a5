//! Cases for DeepSeek-V3.2's sparse attention: the lightning indexer
//! (`index_topk`), attention over its selected positions, and the indexer
//! key's LayerNorm (`rms_norm` with a bias).

use ferrum_engine::DType;
use ferrum_engine::ops::{Attention, IndexTopk, NO_POSITION, Op, RmsNorm};

use super::paged::{attention_with, flat_tables, paging, seqs_desc};
use super::{Case, HostTensor, Rng, case};

pub(super) fn cases(rng: &mut dyn FnMut() -> Rng) -> Vec<Case> {
    // (context length after this step, new tokens) per sequence: a prefill
    // whose early tokens see fewer than top_k positions, a decode step, a chunk
    let mixed: &[(usize, usize)] = &[(37, 37), (20, 1), (50, 5)];
    let mut cases = vec![
        index_topk(&mut rng(), DType::F32, 4, 8, [6, 16], mixed),
        index_topk(&mut rng(), DType::F32, 16, 1, [2, 32], &[(9, 9), (40, 2)]),
        index_topk(&mut rng(), DType::F32, 3, 64, [4, 8], &[(70, 3), (12, 12)]),
    ];
    for dtype in [DType::F16, DType::BF16, DType::F8E4M3] {
        cases.push(index_topk(&mut rng(), dtype, 4, 8, [6, 16], mixed));
    }
    let inv = |d: usize| 1.0 / (d as f32).sqrt();
    let plain = Attention { block_size: 16, scale: inv(32), softcap: None, window: None };
    cases.push(selected_attention(&mut rng(), plain.clone(), [8, 1, 32], mixed, 8, false, DType::F32));
    // with sinks, a window that hides some chosen positions, a short cache
    let windowed = Attention { block_size: 3, window: Some(12), ..plain.clone() };
    cases.push(selected_attention(&mut rng(), windowed, [4, 1, 16], mixed, 5, true, DType::F32));
    cases.push(selected_attention(&mut rng(), plain, [4, 1, 64], &[(70, 3), (9, 9)], 16, false, DType::BF16));
    cases.push(layer_norm(&mut rng(), 7, 16));
    cases.push(layer_norm(&mut rng(), 3, 4099));
    cases
}

/// Random queries, positive head weights (so few scores tie at zero) and a
/// random key cache of `cache_dtype`, garbage in the slots no sequence owns.
fn index_topk(
    rng: &mut Rng,
    cache_dtype: DType,
    block_size: usize,
    top_k: usize,
    [heads, d]: [usize; 2],
    seqs: &[(usize, usize)],
) -> Case {
    let p = paging(rng, block_size, seqs);
    let t = p.positions.len();
    let num_slots = p.num_blocks * block_size;
    let weights: Vec<f32> = rng.vec(t * heads, 1.0).into_iter().map(|w| 0.1 + w.abs()).collect();
    let inputs = vec![
        HostTensor::f32(&[t, heads, d], rng.vec(t * heads * d, 1.0)),
        HostTensor::f32(&[t, heads], weights),
        HostTensor::float(&[num_slots, 1, d], cache_dtype, rng.vec(num_slots * d, 1.0)),
        flat_tables(&p.tables, p.max_blocks),
        HostTensor::u32(&[t], p.token_seq),
        HostTensor::u32(&[t], p.positions),
    ];
    let dims = format!(
        "T={t}, heads={heads}, head_dim={d}, block_size={block_size}, top_k={top_k}, cache={cache_dtype}, {}",
        seqs_desc(seqs)
    );
    case(Op::IndexTopk(IndexTopk { block_size, top_k }), inputs, cache_dtype, dims)
}

/// `attention_with`'s inputs and a selection per token: `n` positions drawn
/// from 0..=p when p >= n (in shuffled order), else all of them, padded
/// with `NO_POSITION`.
fn selected_attention(
    rng: &mut Rng,
    op: Attention,
    dims: [usize; 3],
    seqs: &[(usize, usize)],
    n: usize,
    sinks: bool,
    cache_dtype: DType,
) -> Case {
    let mut c = attention_with(rng, op, dims, seqs, sinks, cache_dtype);
    let positions = c.inputs[5].u32s().to_vec();
    let mut selected = Vec::new();
    for &p in &positions {
        let mut row: Vec<u32> = rng.permutation(p as usize + 1).into_iter().take(n).collect();
        row.resize(n, NO_POSITION);
        selected.extend(row);
    }
    c.inputs.push(HostTensor::u32(&[positions.len(), n], selected));
    c.dims += &format!(", selected={n}");
    c
}

/// The indexer key's LayerNorm: rows of mean zero (as its centred
/// projection makes them), a gain and a bias.
fn layer_norm(rng: &mut Rng, rows: usize, cols: usize) -> Case {
    let mut x = rng.vec(rows * cols, 2.0);
    for row in x.chunks_mut(cols) {
        let mean = row.iter().map(|&v| v as f64).sum::<f64>() / cols as f64;
        row.iter_mut().for_each(|v| *v = (*v as f64 - mean) as f32);
    }
    let inputs = vec![
        HostTensor::f32(&[rows, cols], x),
        HostTensor::f32(&[cols], rng.vec(cols, 1.0)),
        HostTensor::f32(&[cols], rng.vec(cols, 1.0)),
    ];
    let op = Op::RmsNorm(RmsNorm { eps: 1e-6, unit_offset: false });
    case(op, inputs, DType::F32, format!("rows={rows}, cols={cols}, eps=1e-6, bias"))
}
