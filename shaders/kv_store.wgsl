// kv_store: cache[slots[t], :] = src[t, :] (engine/src/ops/kv_store.rs), in
// place: slots not named keep their contents. A cache larger than one binding
// is written through several windows of slots, each dispatch writing the
// tokens whose slot falls in its window.
//
// The cache is bound as u32 words whatever its dtype (CACHE_DTYPE): f32 bits,
// two f16 or bf16 halves (element i in the low half of word i / 2 when i is
// even) or four fp8 E4M3 bytes (element i in byte i % 4). One invocation per
// cache word of the rows written builds the whole word, so no two invocations
// write parts of one word; the host requires rows of whole words. src is read
// as bits and rounded with integer arithmetic, so the result is the engine's
// bit for bit on every device (no flushed subnormals, no driver's rounding).

struct Params {      // KvStoreParams in backend-wgpu/src/ops/kv_store.rs
    tokens: u32,     // src tokens in this window
    row: u32,        // elements per slot: kv_heads * head_dim, a multiple of per_word()
    t0: u32,         // first token of the src window
    src_base: u32,
    slot0: u32,      // first slot of the cache window
    slots: u32,      // slots in the cache window
    cache_base: u32, // in u32 words
    _pad: u32,
}

// 0: f32, 1: f16, 2: bf16, 3: fp8 E4M3
override CACHE_DTYPE: u32 = 0u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<u32>; // f32 bits
@group(0) @binding(2) var<storage, read> slot_of: array<u32>;
@group(0) @binding(3) var<storage, read_write> cache: array<u32>;

fn per_word() -> u32 {
    switch CACHE_DTYPE {
        case 0u: { return 1u; }
        case 3u: { return 4u; }
        default: { return 2u; }
    }
}

// half's `f16::from_f32`: round to nearest even, overflow to inf, NaN stays NaN
fn f16_bits(x: u32) -> u32 {
    let sign = (x >> 16u) & 0x8000u;
    let e = (x >> 23u) & 0xffu; // the f16 exponent is e - 112
    let m = x & 0x7fffffu;
    if (e == 0xffu) {
        return sign | 0x7c00u | select(0u, 0x200u, m != 0u) | (m >> 13u);
    }
    if (e >= 143u) {
        return sign | 0x7c00u;
    }
    if (e <= 112u) {
        // subnormal f16 (or zero below half of its smallest, 2^-24)
        if (e < 102u) {
            return sign;
        }
        let full = m | 0x800000u;
        let shift = 126u - e; // 14..24
        let round_bit = 1u << (shift - 1u);
        let up = (full & round_bit) != 0u && (full & (3u * round_bit - 1u)) != 0u;
        return sign | ((full >> shift) + select(0u, 1u, up));
    }
    // a carry out of the mantissa bumps the exponent, up to inf
    let up = (m & 0x1000u) != 0u && (m & 0x2fffu) != 0u;
    return (sign | ((e - 112u) << 10u) | (m >> 13u)) + select(0u, 1u, up);
}

// half's `bf16::from_f32`: the top half of the f32, rounded to nearest even
fn bf16_bits(x: u32) -> u32 {
    if ((x & 0x7fffffffu) > 0x7f800000u) {
        return (x >> 16u) | 0x40u; // NaN, made quiet
    }
    let up = (x & 0x8000u) != 0u && (x & 0x17fffu) != 0u;
    return (x >> 16u) + select(0u, 1u, up);
}

// engine/src/quant/fp8.rs `encode_saturating`: round to nearest even,
// saturate at ±448, NaN to 0x7F | sign, -0 to 0x80
fn e4m3_bits(x: u32) -> u32 {
    let sign = (x >> 24u) & 0x80u;
    let a = x & 0x7fffffffu;
    if (a > 0x7f800000u) {
        return sign | 0x7fu;
    }
    if (a >= 0x43e00000u) { // 448 and above, inf included
        return sign | 0x7eu;
    }
    if (a >= 0x3c800000u) {
        // normal (>= 2^-6): keep 3 mantissa bits of the f32, rebias 127 -> 7
        var r = a >> 20u;
        let rest = a & 0xfffffu;
        if (rest > 0x80000u || (rest == 0x80000u && (r & 1u) == 1u)) {
            r += 1u;
        }
        return sign | min(r - (120u << 3u), 0x7eu);
    }
    // subnormal: multiples of 2^-9. a = full * 2^(e - 150), so a * 2^9 is
    // full >> (141 - e); below 2^-10 (e < 117) it rounds to 0
    let e = a >> 23u;
    if (e < 117u) {
        return sign;
    }
    let full = (a & 0x7fffffu) | 0x800000u;
    let shift = 141u - e; // 21..24
    var q = full >> shift;
    let rest = full & ((1u << shift) - 1u);
    let half = 1u << (shift - 1u);
    if (rest > half || (rest == half && (q & 1u) == 1u)) {
        q += 1u;
    }
    return sign | q;
}

// the word of cache elements from src elements i..i + per_word()
fn word_at(i: u32) -> u32 {
    switch CACHE_DTYPE {
        case 0u: {
            return src[i];
        }
        case 1u: {
            return f16_bits(src[i]) | (f16_bits(src[i + 1u]) << 16u);
        }
        case 2u: {
            return bf16_bits(src[i]) | (bf16_bits(src[i + 1u]) << 16u);
        }
        default: {
            return e4m3_bits(src[i]) | (e4m3_bits(src[i + 1u]) << 8u) | (e4m3_bits(src[i + 2u]) << 16u)
                | (e4m3_bits(src[i + 3u]) << 24u);
        }
    }
}

@compute @workgroup_size(256)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let per = per_word();
    let words = p.row / per; // words per slot
    let w = (wid.x + wid.y * nwg.x) * 256u + lid;
    if (w >= p.tokens * words) {
        return;
    }
    let t = w / words;
    let c = w % words;
    let slot = slot_of[p.t0 + t];
    if (slot < p.slot0 || slot - p.slot0 >= p.slots) {
        return;
    }
    cache[p.cache_base + (slot - p.slot0) * words + c] = word_at(p.src_base + t * p.row + c * per);
}
