// quant_ggml.cuh: GGUF block formats (Q4_0 .. Q8_0, Q2_K .. Q6_K) decoded in
// registers, and `GgmlW`, their weight reader for the kernel bodies of
// matmul.cu and gather_rows.cu (the other formats' reader is quant.cuh's
// `QuantW`, with the same members). Follows quant.cuh, whose QDEV,
// QuantMatmulParams and QFMT_* it uses; plain C++ apart from those and
// __uint_as_float / __fmul_rn / __fadd_rn / __fsub_rn, so the host test
// compiles it too and checks every format bit for bit.
//
// Layout (engine/src/quant/device_layout.rs): a row's codes are its GGUF
// blocks byte for byte, padded to whole words; the scales live inside the
// blocks (the scales buffer is one unused zero word). Block b of a row
// starts at byte b * type_size, and no type_size but Q4_K's is a multiple of
// 4, so blocks start inside words: fields are read byte by byte.
//
// Each decoder is operation for operation engine/src/quant/ggml/blocks.rs
// (f16 fields widened exactly; scales multiplied out first, then
// `(d * sc) * q - dmin * m`). NVRTC runs with --fmad=true, which would fuse a
// multiply into a following add, so every multiply that feeds an add or a
// subtract is __fmul_rn and the add __fadd_rn / __fsub_rn: the values are the
// CPU reference's bit for bit.
#pragma once

// ggml's block geometry: elements and bytes (type_size) per block.
template <int FMT>
struct GgmlBlock {
    static const u32 ELEMS = FMT <= QFMT_Q8_0 ? 32u : 256u;
    static const u32 BYTES = FMT == QFMT_Q4_0   ? 18u
                             : FMT == QFMT_Q4_1 ? 20u
                             : FMT == QFMT_Q5_0 ? 22u
                             : FMT == QFMT_Q5_1 ? 24u
                             : FMT == QFMT_Q8_0 ? 34u
                             : FMT == QFMT_Q2_K ? 84u
                             : FMT == QFMT_Q3_K ? 110u
                             : FMT == QFMT_Q4_K ? 144u
                             : FMT == QFMT_Q5_K ? 176u
                                                : 210u;  // Q6_K
};

// IEEE half to f32, exactly (as the `half` crate's to_f32: subnormals
// normalized, NaN quieted keeping its payload). Integer operations and one
// exact product, so host and device agree bit for bit.
QDEV float q_f16(u32 h) {
    const u32 sign = (h & 0x8000u) << 16;
    const u32 e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
    if (e == 0u) {
        const float v = (float)m * (1.0f / 16777216.0f);  // m * 2^-24: exact
        return sign ? -v : v;
    }
    if (e == 31u) return __uint_as_float(sign | 0x7f800000u | (m ? 0x00400000u | (m << 13) : 0u));
    return __uint_as_float(sign | ((e + 112u) << 23) | (m << 13));
}

typedef const unsigned char* gbytes;

QDEV float g_f16(gbytes b, u32 at) { return q_f16(b[at] | ((u32)b[at + 1] << 8)); }
QDEV u32 g_u32(gbytes b, u32 at) {
    return b[at] | ((u32)b[at + 1] << 8) | ((u32)b[at + 2] << 16) | ((u32)b[at + 3] << 24);
}
QDEV int g_i8(u32 byte) { return (int)(byte << 24) >> 24; }

// ---- Q4_0, Q4_1, Q5_0, Q5_1, Q8_0: element j (0..32) of the block at b ----
// The 4-bit quant of element j is byte j's low nibble for j < 16, byte
// j - 16's high nibble after (not 2j and 2j + 1); Q5's bit 4 is bit j of qh.
template <int FMT>
QDEV float legacy_value(gbytes b, u32 j) {
    const float d = g_f16(b, 0);
    if (FMT == QFMT_Q8_0) return (float)g_i8(b[2 + j]) * d;  // d, qs: [i8; 32]; q * d
    const u32 qs = FMT == QFMT_Q4_0 ? 2u : FMT == QFMT_Q4_1 ? 4u : FMT == QFMT_Q5_0 ? 6u : 8u;
    u32 q = (b[qs + (j & 15u)] >> (4u * (j >> 4))) & 0xfu;
    if (FMT == QFMT_Q5_0 || FMT == QFMT_Q5_1) q |= ((g_u32(b, FMT == QFMT_Q5_0 ? 2u : 4u) >> j) & 1u) << 4;
    if (FMT == QFMT_Q4_0) return d * (float)((int)q - 8);   // d, qs; d * (q - 8)
    if (FMT == QFMT_Q5_0) return d * (float)((int)q - 16);  // d, qh, qs; d * (q - 16)
    return __fadd_rn(__fmul_rn(d, (float)q), g_f16(b, 2));  // Q4_1, Q5_1: d, m, (qh,) qs; d * q + m
}

// ---- K-quants: element i = 32 c + l (c 0..8, l 0..32) of the super-block
// of 256 at b. The chunk c and the lane l are passed apart so that a chunk's
// 32 elements (GgmlW::chunk, l unrolled) share every per-chunk load and
// product. ----

// The 2-bit field of element 32 c + l of the 64 bytes at qs: two halves of
// 128; in half h, byte h*32 + l holds elements h*128 + 32t + l in bits 2t.
QDEV u32 crumb256(gbytes qs, u32 c, u32 l) { return (qs[(c >> 2) * 32u + l] >> (2u * (c & 3u))) & 3u; }

// The 4-bit field of element 32 c + l of the 128 bytes at qs: four chunks of
// 64; in chunk c/2, byte (c/2)*32 + l holds elements 64(c/2) + l (low
// nibble) and 64(c/2) + 32 + l (high nibble).
QDEV u32 nibble256(gbytes qs, u32 c, u32 l) { return (qs[(c >> 1) * 32u + l] >> (4u * (c & 1u))) & 0xfu; }

// Q3_K: the signed 6-bit scale of sub-block s (0..16) from the 12 bytes at
// sc: bits 0-3 the low nibble of byte s (s < 8) or the high nibble of byte
// s - 8; bits 4-5 bits 2(s/4).. of byte 8 + s%4; minus 32.
QDEV int q3k_scale(gbytes sc, u32 s) {
    const u32 low = s < 8u ? sc[s] & 0xfu : sc[s - 8u] >> 4;
    const u32 high = (sc[8u + (s & 3u)] >> (2u * (s >> 2))) & 3u;
    return (int)(low | (high << 4)) - 32;
}

// Q4_K/Q5_K: the 6-bit scale (.x) and min (.y) of sub-block s (0..8) from the
// 12 bytes at sc. s < 4: the low 6 bits of bytes s and s + 4. s >= 4: byte
// s + 4's nibbles, with the top 2 bits of bytes s - 4 and s as bits 4-5.
struct GgmlScaleMin {
    u32 x, y;
};
QDEV GgmlScaleMin k_scale_min(gbytes sc, u32 s) {
    GgmlScaleMin r;
    if (s < 4u) {
        r.x = sc[s] & 63u;
        r.y = sc[s + 4u] & 63u;
    } else {
        r.x = (sc[s + 4u] & 0xfu) | ((sc[s - 4u] >> 6) << 4);
        r.y = (sc[s + 4u] >> 4) | ((sc[s] >> 6) << 4);
    }
    return r;
}

template <int FMT>
QDEV float kquant_value(gbytes b, u32 c, u32 l) {
    if (FMT == QFMT_Q2_K) {  // scales [u8; 16] (scale | min << 4), qs [u8; 64], d, dmin
        const u32 s = b[2u * c + (l >> 4)];
        const float dl = g_f16(b, 80) * (float)(s & 0xfu);
        const float ml = g_f16(b, 82) * (float)(s >> 4);
        return __fsub_rn(__fmul_rn(dl, (float)crumb256(b + 16, c, l)), ml);
    }
    if (FMT == QFMT_Q3_K) {  // hmask [u8; 32], qs [u8; 64], scales [u8; 12], d
        // hmask: bit c of byte l is the high bit of element 32 c + l; clear means q = low - 4
        const int q = (int)crumb256(b + 32, c, l) - (((b[l] >> c) & 1u) ? 0 : 4);
        const float dl = g_f16(b, 108) * (float)q3k_scale(b + 96, 2u * c + (l >> 4));
        return dl * (float)q;
    }
    if (FMT == QFMT_Q6_K) {  // ql [u8; 128], qh [u8; 64], scales [i8; 16], d
        // ql: in half h = c/4, byte h*64 + l' holds elements h*128 + l' (low
        // nibble) and h*128 + 64 + l' (high nibble), l' = 32 (c & 1) + l
        const u32 low = (b[(c >> 2) * 64u + (c & 1u) * 32u + l] >> (4u * ((c >> 1) & 1u))) & 0xfu;
        const int q = (int)(low | (crumb256(b + 128, c, l) << 4)) - 32;
        const float dl = g_f16(b, 208) * (float)g_i8(b[192u + 2u * c + (l >> 4)]);
        return dl * (float)q;
    }
    // Q4_K: d, dmin, scales [u8; 12], qs [u8; 128]
    // Q5_K: d, dmin, scales [u8; 12], qh [u8; 32] (bit c of byte l is bit 4), qs [u8; 128]
    const GgmlScaleMin sm = k_scale_min(b + 4, c);
    const float dl = g_f16(b, 0) * (float)sm.x;
    const float ml = g_f16(b, 2) * (float)sm.y;
    const u32 q =
        FMT == QFMT_Q4_K ? nibble256(b + 16, c, l) : nibble256(b + 48, c, l) | (((b[16u + l] >> c) & 1u) << 4);
    return __fsub_rn(__fmul_rn(dl, (float)q), ml);
}

// Element 32 c + l of the block at b (c = 0 for the 32-element formats).
template <int FMT>
QDEV float ggml_value(gbytes b, u32 c, u32 l) {
    return FMT <= QFMT_Q8_0 ? legacy_value<FMT>(b, l) : kquant_value<FMT>(b, c, l);
}

// A weight [n, k] of GGUF blocks: element (row, col), and chunk c of a row
// (elements 32 c .. 32 c + 31, inside one block) decoded.
template <int FMT>
struct GgmlW {
    static const int CHUNK = 32;
    QuantMatmulParams p;
    const u32* codes;
    const u32* scales;  // unused: the scales are in the blocks
    QDEV gbytes block(u32 row, u32 b) const {
        return (gbytes)(codes + (size_t)row * p.row_words) + (size_t)b * GgmlBlock<FMT>::BYTES;
    }
    QDEV float operator()(u32 row, u32 col) const {
        const u32 e = col % GgmlBlock<FMT>::ELEMS;
        return ggml_value<FMT>(block(row, col / GgmlBlock<FMT>::ELEMS), e >> 5, e & 31u);
    }
    QDEV void chunk(u32 row, u32 c, float* out) const {
        const u32 per_block = GgmlBlock<FMT>::ELEMS / 32u;
        const gbytes b = block(row, c / per_block);
        const u32 cc = c % per_block;
#pragma unroll
        for (u32 l = 0; l < 32u; l++) out[l] = ggml_value<FMT>(b, cc, l);
    }
};
