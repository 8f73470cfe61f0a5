// rope: rotary position embedding over each head (engine/src/ops/rope.rs).
// Pair i at position p: theta = p * inv_freq[i],
// (a, b) -> s * (a cos theta - b sin theta, b cos theta + a sin theta).
// Neox pairs c with c + half; interleaved pairs 2i with 2i + 1; elements
// past the rotary dims pass through. One invocation per element of a window
// of tokens.

struct Params {      // RopeParams in backend-wgpu/src/ops/rope.rs
    tokens: u32,     // tokens in this window
    heads: u32,
    head_dim: u32,
    half: u32,       // rotary_dim / 2
    t0: u32,         // first token of the window
    x_base: u32,
    out_base: u32,
    interleaved: u32,
    attention_scale: f32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> positions: array<u32>;
@group(0) @binding(3) var<storage, read> inv_freq: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

// GPU sin/cos are only accurate near [-pi, pi] and theta reaches 1e5 rad at
// long contexts: reduce first. TWO_PI_HI has 8 significant bits, so
// k * TWO_PI_HI is exact for k < 2^16 (theta < 4e5).
const TWO_PI_HI: f32 = 6.28125;
const TWO_PI_LO: f32 = 0.0019353071795864769;
const INV_TWO_PI: f32 = 0.15915494309189535;

fn reduce_angle(theta: f32) -> f32 {
    let k = round(theta * INV_TWO_PI);
    return (theta - k * TWO_PI_HI) - k * TWO_PI_LO;
}

@compute @workgroup_size(256)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let e = (wid.x + wid.y * nwg.x) * 256u + lid;
    let per_token = p.heads * p.head_dim;
    if (e >= p.tokens * per_token) {
        return;
    }
    let t = e / per_token;
    let c = e % p.head_dim;
    let xi = p.x_base + e;
    if (c >= 2u * p.half) {
        out[p.out_base + e] = x[xi];
        return;
    }
    // which pair, and whether this element is its first (a) or second (b)
    var i: u32;
    var first: bool;
    var partner: u32; // index of the other element of the pair
    if (p.interleaved == 1u) {
        i = c / 2u;
        first = (c & 1u) == 0u;
        partner = select(xi - 1u, xi + 1u, first);
    } else {
        first = c < p.half;
        i = select(c - p.half, c, first);
        partner = select(xi - p.half, xi + p.half, first);
    }
    let theta = reduce_angle(f32(positions[p.t0 + t]) * inv_freq[i]);
    let cos_t = cos(theta) * p.attention_scale;
    let sin_t = sin(theta) * p.attention_scale;
    let v = x[xi];
    let other = x[partner];
    if (first) {
        out[p.out_base + e] = v * cos_t - other * sin_t; // a cos - b sin
    } else {
        out[p.out_base + e] = v * cos_t + other * sin_t; // b cos + a sin
    }
}
