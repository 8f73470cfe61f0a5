// attention: causal attention over a paged KV cache (engine/src/ops/attention.rs).
// Token t of sequence s = token_seq[t] at position p sees positions j in
// [first, p] (first = p + 1 - window with a sliding window, else 0);
// score_j = scale * q . k_j, soft-capped when asked; out = softmax(score) . v.
// Position j lives in slot block_tables[s, j / block_size] * block_size + j % block_size.
//
// One workgroup per (token, head) of a window of tokens. Keys go in chunks of
// WG: each invocation scores one key, every invocation then folds the chunk
// into a running max and sum (online softmax), and owns head_dim / WG output
// elements. Three barriers per chunk of WG keys.

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
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read> k_cache: array<f32>;
@group(0) @binding(3) var<storage, read> v_cache: array<f32>;
@group(0) @binding(4) var<storage, read> block_tables: array<u32>;
@group(0) @binding(5) var<storage, read> token_seq: array<u32>;
@group(0) @binding(6) var<storage, read> positions: array<u32>;
@group(0) @binding(7) var<storage, read_write> out: array<f32>;

const WG: u32 = 64u;
const MAX_D: u32 = 256u;
const PER_INVOCATION: u32 = 4u; // MAX_D / WG
const LOWEST: f32 = -3.0e38;    // below any score, and exp(LOWEST - m) == 0

var<workgroup> q_s: array<f32, MAX_D>;
var<workgroup> score_s: array<f32, WG>;
var<workgroup> weight_s: array<f32, WG>;
var<workgroup> slot_s: array<u32, WG>;
// first and last visible position, made workgroup-uniform for the loop
var<workgroup> span_s: vec2<u32>;

fn tanh_safe(v: f32) -> f32 {
    return tanh(clamp(v, -15.0, 15.0));
}

fn slot_at(seq: u32, j: u32) -> u32 {
    let block = block_tables[seq * p.max_blocks + j / p.block_size];
    return block * p.block_size + j % p.block_size;
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
    let tl = item / p.heads; // token within the window
    let h = item % p.heads;
    let t = p.t0 + tl;
    let seq = token_seq[t];
    let kvh = h / (p.heads / p.kv_heads);
    let d = p.head_dim;
    let row = (tl * p.heads + h) * d;
    for (var e = lid; e < d; e += WG) {
        q_s[e] = q[p.q_base + row + e];
    }
    if (lid == 0u) {
        let pos = positions[t];
        var first = 0u;
        if (p.window > 0u && pos + 1u > p.window) {
            first = pos + 1u - p.window;
        }
        span_s = vec2<u32>(first, pos);
    }
    let span = workgroupUniformLoad(&span_s); // also publishes q_s

    var m_run = LOWEST;
    var l_run = 0.0;
    var acc: array<f32, PER_INVOCATION>;
    for (var c0 = span.x; c0 <= span.y; c0 += WG) {
        let count = min(WG, span.y + 1u - c0); // keys in this chunk
        // 1. one key per invocation
        let j = c0 + lid;
        var s = LOWEST;
        var slot = 0u;
        if (lid < count) {
            slot = slot_at(seq, j);
            let k_row = (slot * p.kv_heads + kvh) * d;
            var dot = 0.0;
            for (var e = 0u; e < d; e++) {
                dot += q_s[e] * k_cache[k_row + e];
            }
            s = p.scale * dot;
            if (p.softcap > 0.0) {
                s = p.softcap * tanh_safe(s / p.softcap);
            }
        }
        score_s[lid] = s;
        slot_s[lid] = slot;
        workgroupBarrier();
        // 2. the chunk's weights against the new running max
        var m_chunk = LOWEST;
        for (var i = 0u; i < count; i++) {
            m_chunk = max(m_chunk, score_s[i]);
        }
        let m_new = max(m_run, m_chunk);
        weight_s[lid] = select(0.0, exp(s - m_new), lid < count);
        workgroupBarrier();
        // 3. rescale what came before, add this chunk
        let correction = exp(m_run - m_new);
        var l_chunk = 0.0;
        for (var i = 0u; i < count; i++) {
            l_chunk += weight_s[i];
        }
        l_run = l_run * correction + l_chunk;
        for (var r = 0u; r < PER_INVOCATION; r++) {
            let e = lid + r * WG;
            if (e < d) {
                var a = acc[r] * correction;
                for (var i = 0u; i < count; i++) {
                    a += weight_s[i] * v_cache[(slot_s[i] * p.kv_heads + kvh) * d + e];
                }
                acc[r] = a;
            }
        }
        m_run = m_new;
        workgroupBarrier(); // before the next chunk overwrites the shared arrays
    }
    for (var r = 0u; r < PER_INVOCATION; r++) {
        let e = lid + r * WG;
        if (e < d) {
            out[p.out_base + row + e] = acc[r] / l_run;
        }
    }
}
