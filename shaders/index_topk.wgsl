// index_topk: DeepSeek-V3.2's lightning indexer (engine/src/ops/index_topk.rs).
// Token t at position p scores every j <= p as sum_h w[t, h] * relu(q[t, h] . k_j)
// and lists, in ascending order, all of 0..=p when p < top_k, else the top_k
// best positions (a tie goes to the earlier one); u32 max pads a row.
// Position j lives in slot block_tables[s, j / block_size] * block_size + j % block_size.
//
// Two entry points, one workgroup per token of a window of tokens:
// `score`, once per window of cache slots: each invocation scores every
//   WG-th visible position whose slot lies in the window into `scores`
//   (scratch, a row per token);
// `select`: the top_k-th best score is found bit by bit on an
//   order-preserving u32 key (32 counting passes over the row), then the
//   positions above it, and the earliest of those equal to it, are written
//   in order, a chunk of WG positions at a time (`rank`).
// q, w and out are windows of the token window's rows (q_base, w_base,
// out_base elements in); the key cache is read through cache_read.wgsl,
// joined in front.

struct Params {      // IndexTopkParams in backend-wgpu/src/ops/index_topk.rs
    tokens: u32,     // tokens in this window
    t0: u32,         // first token of the window
    heads: u32,
    head_dim: u32,
    block_size: u32,
    max_blocks: u32,
    top_k: u32,
    score_stride: u32, // scratch floats per token: max_blocks * block_size
    q_base: u32,
    w_base: u32,
    out_base: u32,
    slot0: u32,      // first slot of the cache window
    slots: u32,      // slots in the cache window
    cache_base: u32, // where slot0 starts in k_cache, in elements
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<f32>;        // [tokens, heads, head_dim]
@group(0) @binding(2) var<storage, read> w: array<f32>;        // [tokens, heads]
@group(0) @binding(3) var<storage, read> k_cache: array<u32>;  // [slots, 1, head_dim], a window of slots
@group(0) @binding(4) var<storage, read> block_tables: array<u32>;
@group(0) @binding(5) var<storage, read> token_seq: array<u32>;
@group(0) @binding(6) var<storage, read> positions: array<u32>;
@group(0) @binding(7) var<storage, read_write> out: array<u32>; // [tokens, top_k]
@group(0) @binding(8) var<storage, read_write> scores: array<f32>; // [tokens, score_stride]

const WG: u32 = 64u;
const NO_POSITION: u32 = 0xffffffffu;

var<workgroup> pos_s: u32;
var<workgroup> count_a: atomic<u32>;
var<workgroup> count_s: u32;
var<workgroup> scan_s: array<u32, WG>;

fn k_at(i: u32) -> f32 {
    return widen(k_cache[i / per_word()], i);
}

// orders like the f32 it is made from; -0 is +0
fn key_of(v: f32) -> u32 {
    var b = bitcast<u32>(v);
    if (b == 0x80000000u) {
        b = 0u;
    }
    return select(b | 0x80000000u, ~b, (b & 0x80000000u) != 0u);
}

// (how many invocations before this one have `flag`, how many have it),
// by an inclusive prefix sum over scan_s (Hillis-Steele); every invocation
// must call it
fn rank(flag: bool, lid: u32) -> vec2<u32> {
    workgroupBarrier(); // scan_s may still be read by the previous call
    scan_s[lid] = u32(flag);
    workgroupBarrier();
    for (var off = 1u; off < WG; off <<= 1u) {
        var v = scan_s[lid];
        if (lid >= off) {
            v += scan_s[lid - off];
        }
        workgroupBarrier();
        scan_s[lid] = v;
        workgroupBarrier();
    }
    return vec2<u32>(scan_s[lid] - u32(flag), scan_s[WG - 1u]);
}

// how many of the token's scores have a key >= at_least (every invocation gets it)
fn count_at_least(lid: u32, row: u32, pos: u32, at_least: u32) -> u32 {
    if (lid == 0u) {
        atomicStore(&count_a, 0u);
    }
    workgroupBarrier();
    var n = 0u;
    for (var j = lid; j <= pos; j += WG) {
        n += u32(key_of(scores[row + j]) >= at_least);
    }
    atomicAdd(&count_a, n);
    workgroupBarrier();
    if (lid == 0u) {
        count_s = atomicLoad(&count_a);
    }
    return workgroupUniformLoad(&count_s);
}

// the token's position, the same for the whole workgroup
fn position_of(t: u32, lid: u32) -> u32 {
    if (lid == 0u) {
        pos_s = positions[t];
    }
    return workgroupUniformLoad(&pos_s);
}

@compute @workgroup_size(WG)
fn score(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let tl = wid.x + wid.y * nwg.x;
    if (tl >= p.tokens) {
        return;
    }
    let t = p.t0 + tl;
    let pos = position_of(t, lid);
    if (pos < p.top_k) {
        return; // every position is kept: nothing to score
    }
    let seq = token_seq[t];
    let row = tl * p.score_stride;
    let d = p.head_dim;
    for (var j = lid; j <= pos; j += WG) {
        let slot = block_tables[seq * p.max_blocks + j / p.block_size] * p.block_size + j % p.block_size;
        if (slot < p.slot0 || slot - p.slot0 >= p.slots) {
            continue; // another window's
        }
        let k_row = p.cache_base + (slot - p.slot0) * d;
        var score = 0.0;
        for (var h = 0u; h < p.heads; h++) {
            let q_row = p.q_base + (tl * p.heads + h) * d;
            var dot = 0.0;
            for (var e = 0u; e < d; e++) {
                dot += q[q_row + e] * k_at(k_row + e);
            }
            score += w[p.w_base + tl * p.heads + h] * max(dot, 0.0);
        }
        scores[row + j] = score;
    }
}

@compute @workgroup_size(WG)
fn select_top(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let tl = wid.x + wid.y * nwg.x;
    if (tl >= p.tokens) {
        return;
    }
    let pos = position_of(p.t0 + tl, lid);
    let out_row = p.out_base + tl * p.top_k;
    if (pos < p.top_k) {
        for (var i = lid; i < p.top_k; i += WG) {
            out[out_row + i] = select(NO_POSITION, i, i <= pos);
        }
        return;
    }
    let row = tl * p.score_stride;
    // 1. the largest key with at least top_k keys >= it: the top_k-th best
    var threshold = 0u;
    for (var bit = 32u; bit > 0u; bit--) {
        let candidate = threshold | (1u << (bit - 1u));
        if (count_at_least(lid, row, pos, candidate) >= p.top_k) {
            threshold = candidate;
        }
    }
    var above = 0u; // keys > threshold
    if (threshold < 0xffffffffu) {
        above = count_at_least(lid, row, pos, threshold + 1u);
    }
    let ties = p.top_k - above; // how many keys == threshold are taken, earliest first
    // 2. the chosen positions, in order
    var written = 0u;
    var equal_seen = 0u;
    for (var c0 = 0u; c0 <= pos; c0 += WG) {
        let j = c0 + lid;
        var key = 0u;
        if (j <= pos) {
            key = key_of(scores[row + j]);
        }
        let is_above = j <= pos && key > threshold;
        let is_equal = j <= pos && key == threshold;
        let equal = rank(is_equal, lid);
        let take = is_above || (is_equal && equal_seen + equal.x < ties);
        let taken = rank(take, lid);
        if (take) {
            out[out_row + written + taken.x] = j;
        }
        written += taken.y;
        equal_seen += equal.y;
    }
}
