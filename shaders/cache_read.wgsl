// Reading a KV cache bound as u32 words whatever its dtype (CACHE_DTYPE):
// f32 bits, two f16 or bf16 halves (element i in the low half of word i / 2
// when i is even) or four fp8 E4M3 bytes (element i in byte i % 4), widened
// to f32 with integer arithmetic (exact, and no f16 capability needed).
// Joined in front of the shaders that read a cache (attention, index_topk).

// 0: f32, 1: f16, 2: bf16, 3: fp8 E4M3
override CACHE_DTYPE: u32 = 0u;

// half's `f16::to_f32`, subnormals included
fn f16_value(h: u32) -> f32 {
    let sign = (h & 0x8000u) << 16u;
    let e = (h >> 10u) & 0x1fu;
    let m = h & 0x3ffu;
    if (e == 0u) {
        let v = f32(m) * (1.0 / 16777216.0); // m * 2^-24, exact
        return select(v, -v, sign != 0u);
    }
    let fe = select(e + 112u, 0xffu, e == 31u); // inf and NaN stay so
    return bitcast<f32>(sign | (fe << 23u) | (m << 13u));
}

// engine/src/quant/fp8.rs `decode`
fn e4m3_value(b: u32) -> f32 {
    let sign = (b >> 7u) << 31u;
    let e = (b >> 3u) & 0xfu;
    let m = b & 7u;
    if (e == 15u && m == 7u) {
        return bitcast<f32>(sign | 0x7fc00000u);
    }
    if (e == 0u) {
        let v = f32(m) * (1.0 / 512.0); // m * 2^-9, exact
        return select(v, -v, sign != 0u);
    }
    return bitcast<f32>(sign | ((e + 120u) << 23u) | (m << 20u));
}

// element i of a cache, given the word that holds it
fn widen(word: u32, i: u32) -> f32 {
    switch CACHE_DTYPE {
        case 0u: {
            return bitcast<f32>(word);
        }
        case 1u: {
            return f16_value((word >> ((i & 1u) * 16u)) & 0xffffu);
        }
        case 2u: {
            return bitcast<f32>(select(word << 16u, word & 0xffff0000u, (i & 1u) == 1u));
        }
        default: {
            return e4m3_value((word >> ((i & 3u) * 8u)) & 0xffu);
        }
    }
}

// cache elements per u32 word
fn per_word() -> u32 {
    switch CACHE_DTYPE {
        case 0u: { return 1u; }
        case 3u: { return 4u; }
        default: { return 2u; }
    }
}

