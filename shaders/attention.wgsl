// attention: causal attention over a paged KV cache (engine/src/ops/attention.rs).
// Token t of sequence s = token_seq[t] at position p sees positions j in
// [first, p] (first = p + 1 - window with a sliding window, else 0);
// score_j = scale * q . k_j, soft-capped when asked; out = softmax(score) . v.
// With sinks, head h's logit sinks[h] joins the softmax's max and denominator
// only: w_j = e^score_j / (sum_i e^score_i + e^sinks[h]).
// With n_selected > 0 (DeepSeek-V3.2's index_topk), token t sees only the
// visible positions listed in selected[t, :]; entries past p (u32 max pads a
// row) are skipped.
// Position j lives in slot block_tables[s, j / block_size] * block_size + j % block_size.
//
// One workgroup per (token, head) of a window of tokens. Keys go in chunks of
// WG: each invocation scores one key, every invocation then folds the chunk
// into a running max and sum (online softmax), and owns head_dim / WG output
// elements. Three barriers per chunk of WG keys.
//
// `main` binds the whole cache. `windowed` serves caches larger than one
// binding: it is dispatched once per window of cache slots, attends only to
// the keys whose slot lies in its window, and merges its (max, sum, acc)
// into a per-(token, head) `state` row, in dispatch order; the last window
// writes out. The sink starts the softmax state (max sinks[h], sum 1, acc 0)
// of `main` and of the first window only, so it is counted once.
//
// The caches are bound as u32 words whatever their dtype, widened as they
// are read (cache_read.wgsl, joined in front of this file). Offsets
// (cache_base, rows) count elements, not words.

struct Params {      // AttentionParams in backend-wgpu/src/ops/attention.rs
    tokens: u32,     // tokens in this window
    t0: u32,         // first token of the window
    heads: u32,
    kv_heads: u32,
    head_dim: u32,   // <= MAX_D
    block_size: u32,
    max_blocks: u32,
    window: u32,     // 0: no sliding window
    q_base: u32,
    out_base: u32,
    scale: f32,
    softcap: f32,    // 0: no soft-capping
    slot0: u32,      // first slot of the cache window (0 for `main`)
    slots: u32,      // slots in the cache window
    cache_base: u32, // where slot0 starts in the k/v bindings, in elements
    merge: u32,      // `windowed`: bit 0 set: merge with state; bit 1: last window, write out
    has_sinks: u32,  // 1: sinks holds a logit per head; 0: a stand-in, never read
    n_selected: u32, // positions per token in selected; 0: a stand-in, never read
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read> k_cache: array<u32>;
@group(0) @binding(3) var<storage, read> v_cache: array<u32>;
@group(0) @binding(4) var<storage, read> block_tables: array<u32>;
@group(0) @binding(5) var<storage, read> token_seq: array<u32>;
@group(0) @binding(6) var<storage, read> positions: array<u32>;
@group(0) @binding(7) var<storage, read_write> out: array<f32>;
@group(0) @binding(8) var<storage, read> sinks: array<f32>; // [heads]
@group(0) @binding(9) var<storage, read> selected: array<u32>; // [T, n_selected]
// `windowed` only: [tokens, heads, head_dim + 2]: acc, then max, then sum
@group(0) @binding(10) var<storage, read_write> state: array<f32>;


const WG: u32 = 64u;
const MAX_D: u32 = 256u;
const PER_INVOCATION: u32 = 4u; // MAX_D / WG
const LOWEST: f32 = -3.0e38;    // below any score, and exp(LOWEST - m) == 0

var<workgroup> q_s: array<f32, MAX_D>;
var<workgroup> score_s: array<f32, WG>;
var<workgroup> weight_s: array<f32, WG>;
var<workgroup> row_s: array<u32, WG>; // where each key's k/v row starts in the bindings
// the loop's first and last index (positions, or entries of selected), then
// the first and last visible position, made workgroup-uniform for the loop
var<workgroup> span_s: vec4<u32>;

fn tanh_safe(v: f32) -> f32 {
    return tanh(clamp(v, -15.0, 15.0));
}

fn k_at(i: u32) -> f32 {
    return widen(k_cache[i / per_word()], i);
}

fn v_at(i: u32) -> f32 {
    return widen(v_cache[i / per_word()], i);
}

fn slot_at(seq: u32, j: u32) -> u32 {
    let block = block_tables[seq * p.max_blocks + j / p.block_size];
    return block * p.block_size + j % p.block_size;
}

// Softmax state of one (token, head) over the keys seen so far.
struct Partial {
    m: f32,                          // running max of the scores
    l: f32,                          // sum of exp(score - m)
    acc: array<f32, PER_INVOCATION>, // sum of exp(score - m) * v, this invocation's elements
}

// Attends (token tl of the window, head h) to its visible keys whose slot
// lies in [p.slot0, p.slot0 + p.slots); with `sink`, head h's sink logit
// starts the state, as a key whose value is 0.
fn attend(tl: u32, h: u32, lid: u32, sink: bool) -> Partial {
    let t = p.t0 + tl;
    let seq = token_seq[t];
    let kvh = h / (p.heads / p.kv_heads);
    let d = p.head_dim;
    let q_row = p.q_base + (tl * p.heads + h) * d;
    for (var e = lid; e < d; e += WG) {
        q_s[e] = q[q_row + e];
    }
    if (lid == 0u) {
        let pos = positions[t];
        var first = 0u;
        if (p.window > 0u && pos + 1u > p.window) {
            first = pos + 1u - p.window;
        }
        span_s = vec4<u32>(first, pos, first, pos);
        if (p.n_selected > 0u) {
            span_s = vec4<u32>(0u, p.n_selected - 1u, first, pos);
        }
    }
    let span = workgroupUniformLoad(&span_s); // also publishes q_s

    var r: Partial;
    r.m = LOWEST;
    r.l = 0.0;
    if (sink && p.has_sinks == 1u) {
        // exp(sink - m) with m = sink; clamped so a -inf sink stays a no-op
        r.m = max(sinks[h], LOWEST);
        r.l = 1.0;
    }
    for (var c0 = span.x; c0 <= span.y; c0 += WG) {
        let count = min(WG, span.y + 1u - c0); // positions in this chunk
        // 1. one key per invocation; keys in another cache window are skipped
        var s = LOWEST;
        var row = p.cache_base; // a cache row in this window, for skipped keys too
        var valid = false;
        var key_pos = c0 + lid; // the position, or its entry in selected
        if (lid < count && p.n_selected > 0u) {
            key_pos = selected[t * p.n_selected + key_pos];
        }
        if (lid < count && key_pos >= span.z && key_pos <= span.w) {
            let slot = slot_at(seq, key_pos);
            if (slot >= p.slot0 && slot - p.slot0 < p.slots) {
                valid = true;
                row = p.cache_base + ((slot - p.slot0) * p.kv_heads + kvh) * d;
                var dot = 0.0;
                let per = per_word();
                if (d % per == 0u) {
                    // rows of whole words: row is a multiple of per (the host starts
                    // windows on rows at aligned offsets), one load per word
                    for (var w = 0u; w < d / per; w++) {
                        let word = k_cache[row / per + w];
                        for (var j = 0u; j < per; j++) {
                            dot += q_s[w * per + j] * widen(word, j);
                        }
                    }
                } else {
                    for (var e = 0u; e < d; e++) {
                        dot += q_s[e] * k_at(row + e);
                    }
                }
                s = p.scale * dot;
                if (p.softcap > 0.0) {
                    s = p.softcap * tanh_safe(s / p.softcap);
                }
            }
        }
        score_s[lid] = s;
        row_s[lid] = row;
        workgroupBarrier();
        // 2. the chunk's weights against the new running max
        var m_chunk = LOWEST;
        for (var i = 0u; i < count; i++) {
            m_chunk = max(m_chunk, score_s[i]);
        }
        let m_new = max(r.m, m_chunk);
        weight_s[lid] = select(0.0, exp(s - m_new), valid);
        workgroupBarrier();
        // 3. rescale what came before, add this chunk
        let correction = exp(r.m - m_new);
        var l_chunk = 0.0;
        for (var i = 0u; i < count; i++) {
            l_chunk += weight_s[i];
        }
        r.l = r.l * correction + l_chunk;
        for (var k = 0u; k < PER_INVOCATION; k++) {
            let e = lid + k * WG;
            if (e < d) {
                var a = r.acc[k] * correction;
                for (var i = 0u; i < count; i++) {
                    let w = weight_s[i];
                    a += select(0.0, w * v_at(row_s[i] + e), w > 0.0);
                }
                r.acc[k] = a;
            }
        }
        r.m = m_new;
        workgroupBarrier(); // before the next chunk overwrites the shared arrays
    }
    return r;
}

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let item = wid.x + wid.y * nwg.x;
    if (item >= p.tokens * p.heads) {
        return;
    }
    let r = attend(item / p.heads, item % p.heads, lid, true);
    let out_row = p.out_base + item * p.head_dim;
    for (var k = 0u; k < PER_INVOCATION; k++) {
        let e = lid + k * WG;
        if (e < p.head_dim) {
            out[out_row + e] = r.acc[k] / r.l;
        }
    }
}

@compute @workgroup_size(WG)
fn windowed(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let item = wid.x + wid.y * nwg.x;
    if (item >= p.tokens * p.heads) {
        return;
    }
    let d = p.head_dim;
    let merging = (p.merge & 1u) == 1u;
    // the sink joins the first window's state only; later windows merge it in
    var r = attend(item / p.heads, item % p.heads, lid, !merging);
    let state_row = item * (d + 2u);
    if (merging) {
        // fold in the windows before this one
        let m_prev = state[state_row + d];
        let m = max(m_prev, r.m);
        let c_prev = exp(m_prev - m);
        let c_new = exp(r.m - m);
        for (var k = 0u; k < PER_INVOCATION; k++) {
            let e = lid + k * WG;
            if (e < d) {
                r.acc[k] = state[state_row + e] * c_prev + r.acc[k] * c_new;
            }
        }
        r.l = state[state_row + d + 1u] * c_prev + r.l * c_new;
        r.m = m;
    }
    let last = (p.merge & 2u) == 2u;
    let out_row = p.out_base + item * d;
    for (var k = 0u; k < PER_INVOCATION; k++) {
        let e = lid + k * WG;
        if (e < d) {
            if (last) {
                out[out_row + e] = r.acc[k] / r.l;
            } else {
                state[state_row + e] = r.acc[k];
            }
        }
    }
    // every invocation read the old max and sum above; write them after a barrier
    workgroupBarrier();
    if (!last && lid == 0u) {
        state[state_row + d] = r.m;
        state[state_row + d + 1u] = r.l;
    }
}
