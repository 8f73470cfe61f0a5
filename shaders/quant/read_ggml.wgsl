// Reader prelude for GGUF block formats (Q4_0 .. Q6_K): joined in front of an
// op body in shaders/quant/ (see shaders/src/lib.rs). The body declares the
// `codes` binding (array<u32>); this file gives it `load_q`, with the same
// signature as shaders/quant/read_scaled.wgsl's so one body serves both.
//
// Layout (engine/src/quant/device_layout.rs): a row's codes are its GGUF
// blocks byte for byte, padded to whole u32 words; the scales live inside
// the blocks (the scales binding is one unused zero word). Block b of a row
// starts at byte b * type_size, and no type_size is a multiple of 4, so a
// block may start inside a word: fields are read byte by byte, never as
// whole words. Each decoder follows engine/src/quant/ggml/blocks.rs
// operation for operation (scales multiplied out first, `(d * sc) * q - dmin
// * m`), so the values are the CPU reference's bit for bit, save where a
// device fuses the final multiply and subtract.
//
// f16 fields are decoded with unpack2x16float: the backend offers these
// formats only where the adapter has it (SHADER_F16_IN_F32).

// 6: Q4_0, 7: Q4_1, 8: Q5_0, 9: Q5_1, 10: Q8_0 (blocks of 32);
// 11: Q2_K, 12: Q3_K, 13: Q4_K, 14: Q5_K, 15: Q6_K (super-blocks of 256).
// The numbering is engine's `DeviceFormat`, shared with the other reader.
override Q_FMT: u32 = 6u;

// bytes per block, indexed by Q_FMT - 6 (ggml's type_size)
const TYPE_SIZE: array<u32, 10> = array<u32, 10>(18u, 20u, 22u, 24u, 34u, 84u, 110u, 144u, 176u, 210u);

// byte `at` of the row whose codes start at word `crow` (little-endian words)
fn row_byte(crow: u32, at: u32) -> u32 {
    return (codes[crow + (at >> 2u)] >> (8u * (at & 3u))) & 0xffu;
}

// the f16 at byte `at`, as f32. Every type_size and every f16 field offset
// is even, so the two bytes never straddle a word.
fn row_f16(crow: u32, at: u32) -> f32 {
    return unpack2x16float(codes[crow + (at >> 2u)] >> (8u * (at & 3u))).x;
}

fn i8_of(b: u32) -> i32 {
    return i32(b << 24u) >> 24u;
}

// ---- Q4_0, Q4_1, Q5_0, Q5_1, Q8_0: 32 elements per block ----

// The 4-bit quant of element j (0..32) of the 16 bytes at `qs`: byte j's low
// nibble for j < 16, byte j - 16's high nibble after (not 2j and 2j + 1).
fn nibble32(crow: u32, qs: u32, j: u32) -> u32 {
    return (row_byte(crow, qs + (j & 15u)) >> (4u * (j >> 4u))) & 0xfu;
}

// Bit j of the little-endian u32 `qh` at byte `at`. It sits mid-word in
// every other block, so it is read as the byte that holds the bit.
fn bit32(crow: u32, at: u32, j: u32) -> u32 {
    return (row_byte(crow, at + (j >> 3u)) >> (j & 7u)) & 1u;
}

// element j of the block starting at byte `bb`
fn legacy(crow: u32, bb: u32, j: u32) -> f32 {
    let d = row_f16(crow, bb);
    if (Q_FMT == 6u) { // d: f16, qs: [u8; 16]; d * (q - 8)
        return d * f32(i32(nibble32(crow, bb + 2u, j)) - 8);
    }
    if (Q_FMT == 7u) { // d: f16, m: f16, qs: [u8; 16]; d * q + m
        return d * f32(nibble32(crow, bb + 4u, j)) + row_f16(crow, bb + 2u);
    }
    if (Q_FMT == 8u) { // d: f16, qh: u32 (bit 4 of each q), qs; d * (q - 16)
        let q = nibble32(crow, bb + 6u, j) | (bit32(crow, bb + 2u, j) << 4u);
        return d * f32(i32(q) - 16);
    }
    if (Q_FMT == 9u) { // d: f16, m: f16, qh: u32, qs; d * q + m
        let q = nibble32(crow, bb + 8u, j) | (bit32(crow, bb + 4u, j) << 4u);
        return d * f32(q) + row_f16(crow, bb + 2u);
    }
    // Q8_0: d: f16, qs: [i8; 32]; q * d
    return f32(i8_of(row_byte(crow, bb + 2u + j))) * d;
}

// ---- K-quants: super-blocks of 256 in sub-blocks of 16 or 32 ----

// The 2-bit field of element i (0..256) of the 64 bytes at `qs`: two halves
// of 128; in half h, byte h*32 + l holds elements h*128 + l + 32t in bits 2t..
fn crumb256(crow: u32, qs: u32, i: u32) -> u32 {
    let rest = i & 127u;
    return (row_byte(crow, qs + (i >> 7u) * 32u + (rest & 31u)) >> (2u * (rest >> 5u))) & 3u;
}

// The 4-bit field of element i (0..256) of the 128 bytes at `qs`: four chunks
// of 64; in chunk c, byte c*32 + l holds elements c*64 + l (low nibble) and
// c*64 + 32 + l (high nibble).
fn nibble256(crow: u32, qs: u32, i: u32) -> u32 {
    let rest = i & 63u;
    return (row_byte(crow, qs + (i >> 6u) * 32u + (rest & 31u)) >> (4u * (rest >> 5u))) & 0xfu;
}

// Bit i / 32 of byte i % 32 of the 32 bytes at `at` (Q3_K's hmask, Q5_K's qh).
fn high_bit256(crow: u32, at: u32, i: u32) -> u32 {
    return (row_byte(crow, at + (i & 31u)) >> (i >> 5u)) & 1u;
}

// Q4_K/Q5_K: the 6-bit (scale, min) of sub-block s (0..8) from the 12 bytes
// at `sc`. s < 4: the low 6 bits of bytes s and s + 4. s >= 4: byte s + 4's
// nibbles, with the top 2 bits of bytes s - 4 and s as bits 4-5.
fn k_scale_min(crow: u32, sc: u32, s: u32) -> vec2<u32> {
    if (s < 4u) {
        return vec2<u32>(row_byte(crow, sc + s) & 63u, row_byte(crow, sc + s + 4u) & 63u);
    }
    let b = row_byte(crow, sc + s + 4u);
    let scale = (b & 0xfu) | ((row_byte(crow, sc + s - 4u) >> 6u) << 4u);
    let m = (b >> 4u) | ((row_byte(crow, sc + s) >> 6u) << 4u);
    return vec2<u32>(scale, m);
}

// Q3_K: the signed 6-bit scale of sub-block s (0..16) from the 12 bytes at
// `sc`: bits 0-3 the low nibble of byte s (s < 8) or the high nibble of byte
// s - 8; bits 4-5 bits 2(s/4).. of byte 8 + s%4; minus 32.
fn q3k_scale(crow: u32, sc: u32, s: u32) -> i32 {
    var low: u32;
    if (s < 8u) {
        low = row_byte(crow, sc + s) & 0xfu;
    } else {
        low = row_byte(crow, sc + s - 8u) >> 4u;
    }
    let high = (row_byte(crow, sc + 8u + (s & 3u)) >> (2u * (s >> 2u))) & 3u;
    return i32(low | (high << 4u)) - 32;
}

// element i of the super-block starting at byte `bb`
fn k_quant(crow: u32, bb: u32, i: u32) -> f32 {
    if (Q_FMT == 11u) { // Q2_K: scales [u8; 16] (scale | min << 4), qs [u8; 64], d, dmin
        let s = row_byte(crow, bb + (i >> 4u));
        let dl = row_f16(crow, bb + 80u) * f32(s & 0xfu);
        let ml = row_f16(crow, bb + 82u) * f32(s >> 4u);
        return dl * f32(crumb256(crow, bb + 16u, i)) - ml;
    }
    if (Q_FMT == 12u) { // Q3_K: hmask [u8; 32], qs [u8; 64], scales [u8; 12], d
        // a clear high bit means the quant is low - 4
        let q = i32(crumb256(crow, bb + 32u, i)) - select(0, 4, high_bit256(crow, bb, i) == 0u);
        let dl = row_f16(crow, bb + 108u) * f32(q3k_scale(crow, bb + 96u, i >> 4u));
        return dl * f32(q);
    }
    if (Q_FMT == 15u) { // Q6_K: ql [u8; 128], qh [u8; 64], scales [i8; 16], d
        // low 4 bits: in half h, byte h*64 + l holds h*128 + l and h*128 + 64 + l
        let rest = i & 127u;
        let low = (row_byte(crow, bb + (i >> 7u) * 64u + (rest & 63u)) >> (4u * (rest >> 6u))) & 0xfu;
        let q = i32(low | (crumb256(crow, bb + 128u, i) << 4u)) - 32;
        let dl = row_f16(crow, bb + 208u) * f32(i8_of(row_byte(crow, bb + 192u + (i >> 4u))));
        return dl * f32(q);
    }
    // Q4_K: d, dmin, scales [u8; 12], qs [u8; 128]
    // Q5_K: d, dmin, scales [u8; 12], qh [u8; 32] (bit 4 of each q), qs [u8; 128]
    let sm = k_scale_min(crow, bb + 4u, i >> 5u);
    let dl = row_f16(crow, bb) * f32(sm.x);
    let ml = row_f16(crow, bb + 2u) * f32(sm.y);
    var q: u32;
    if (Q_FMT == 13u) {
        q = nibble256(crow, bb + 16u, i);
    } else {
        q = nibble256(crow, bb + 48u, i) | (high_bit256(crow, bb + 16u, i) << 4u);
    }
    return dl * f32(q) - ml;
}

// element kk of the weight row whose codes start at word `crow` of `codes`,
// dequantized; `srow` (the scales) is unused: the scales are in the blocks
fn load_q(crow: u32, srow: u32, kk: u32) -> f32 {
    let size = TYPE_SIZE[Q_FMT - 6u];
    if (Q_FMT <= 10u) {
        return legacy(crow, (kk >> 5u) * size, kk & 31u);
    }
    return k_quant(crow, (kk >> 8u) * size, kk & 255u);
}
