//! Cases over a paged KV cache: the batch's paging (shuffled, non-contiguous
//! block tables, spare blocks of garbage), kv_store and attention.

use ferrum_engine::DType;
use ferrum_engine::ops::{Attention, KvStore, Op};

use super::{Case, HostTensor, Rng, case};

/// A paged layout for a batch: each sequence's block table (blocks drawn
/// from a shuffled pool, so neither contiguous nor ordered), and every
/// token's sequence, position and slot.
pub(super) struct Paging {
    pub num_blocks: usize,
    pub max_blocks: usize,
    pub tables: Vec<Vec<u32>>,
    pub token_seq: Vec<u32>,
    pub positions: Vec<u32>,
    pub slots: Vec<u32>,
}

pub(super) fn paging(rng: &mut Rng, block_size: usize, seqs: &[(usize, usize)]) -> Paging {
    let needed: Vec<usize> = seqs.iter().map(|&(ctx, _)| ctx.div_ceil(block_size)).collect();
    let num_blocks = needed.iter().sum::<usize>() + 2; // spare blocks hold garbage
    let mut pool = rng.permutation(num_blocks).into_iter();
    let tables: Vec<Vec<u32>> = needed.iter().map(|&n| pool.by_ref().take(n).collect()).collect();
    let mut p = Paging {
        num_blocks,
        max_blocks: needed.iter().copied().max().unwrap_or(1).max(1),
        tables,
        token_seq: vec![],
        positions: vec![],
        slots: vec![],
    };
    for (s, &(ctx, new)) in seqs.iter().enumerate() {
        assert!(new >= 1 && new <= ctx, "sequence {s}: {new} new tokens of {ctx}");
        for pos in ctx - new..ctx {
            p.token_seq.push(s as u32);
            p.positions.push(pos as u32);
            p.slots.push(p.tables[s][pos / block_size] * block_size as u32 + (pos % block_size) as u32);
        }
    }
    p
}

pub(super) fn seqs_desc(seqs: &[(usize, usize)]) -> String {
    let parts: Vec<String> = seqs.iter().map(|(ctx, new)| format!("{new}/{ctx}")).collect();
    format!("seqs(new/ctx)=[{}]", parts.join(" "))
}

/// Writes each token's row into its slot of a cache of `dtype` full of
/// random values. Slots are distinct: two tokens writing one slot would make
/// the result depend on execution order. The rows are f32 values the cache
/// dtype holds exactly, so every backend's rounding gives the oracle's copy.
pub fn kv_store(
    rng: &mut Rng,
    dtype: DType,
    block_size: usize,
    kv_heads: usize,
    d: usize,
    seqs: &[(usize, usize)],
) -> Case {
    let p = paging(rng, block_size, seqs);
    let t = p.slots.len();
    let num_slots = p.num_blocks * block_size;
    let held = HostTensor::float(&[t, kv_heads, d], dtype, rng.vec(t * kv_heads * d, 1.0));
    let src = HostTensor::f32(&[t, kv_heads, d], held.f64s().into_iter().map(|x| x as f32).collect());
    let init = HostTensor::float(&[num_slots, kv_heads, d], dtype, rng.vec(num_slots * kv_heads * d, 1.0));
    let dims = format!(
        "T={t}, kv_heads={kv_heads}, head_dim={d}, block_size={block_size}, num_slots={num_slots}, {}",
        seqs_desc(seqs)
    );
    let op = Op::KvStore(KvStore { num_slots, dtype });
    let mut c = case(op, vec![src, HostTensor::u32(&[t], p.slots)], dtype, dims);
    c.init_out = Some(init);
    c
}

/// The cache is random everywhere, including slots no sequence owns: a
/// kernel that reads outside the visible positions gets garbage.
pub fn attention(rng: &mut Rng, op: Attention, [heads, kv_heads, d]: [usize; 3], seqs: &[(usize, usize)]) -> Case {
    attention_with(rng, op, [heads, kv_heads, d], seqs, false, DType::F32)
}

/// [`attention`], with a learned sink logit per head when `sinks`
/// (of the scores' size, so it takes a real share of the softmax).
pub fn attention_with(
    rng: &mut Rng,
    op: Attention,
    [heads, kv_heads, d]: [usize; 3],
    seqs: &[(usize, usize)],
    sinks: bool,
    cache_dtype: DType,
) -> Case {
    let p = paging(rng, op.block_size, seqs);
    let t = p.positions.len();
    let num_slots = p.num_blocks * op.block_size;
    let cache = num_slots * kv_heads * d;
    let mut inputs = vec![
        HostTensor::f32(&[t, heads, d], rng.vec(t * heads * d, 1.0)),
        HostTensor::float(&[num_slots, kv_heads, d], cache_dtype, rng.vec(cache, 1.0)),
        HostTensor::float(&[num_slots, kv_heads, d], cache_dtype, rng.vec(cache, 1.0)),
        flat_tables(&p.tables, p.max_blocks),
        HostTensor::u32(&[t], p.token_seq),
        HostTensor::u32(&[t], p.positions),
    ];
    if sinks {
        inputs.push(HostTensor::f32(&[heads], rng.vec(heads, 2.0)));
    }
    let none = || "none".to_string();
    let window = op.window.map_or_else(none, |w| w.to_string());
    let softcap = op.softcap.map_or_else(none, |c| c.to_string());
    let dims = format!(
        "T={t}, heads={heads}, kv_heads={kv_heads}, head_dim={d}, block_size={}, window={window}, \
         softcap={softcap}, scale={:.4}, sinks={sinks}, cache={cache_dtype}, {}",
        op.block_size,
        op.scale,
        seqs_desc(seqs)
    );
    case(Op::Attention(op), inputs, cache_dtype, dims)
}

/// Block tables as the engine uploads them: [seqs, max_blocks], padded with 0.
pub(super) fn flat_tables(tables: &[Vec<u32>], max_blocks: usize) -> HostTensor {
    let mut flat = Vec::new();
    for table in tables {
        flat.extend(table.iter().copied().chain(std::iter::repeat(0)).take(max_blocks));
    }
    HostTensor::u32(&[tables.len(), max_blocks], flat)
}
