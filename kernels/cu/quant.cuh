// quant.cuh: decoding quantized weights in registers, from the two buffers
// of engine/src/quant/device_layout.rs (codes; scales and zero points), and
// `QuantW`, the weight reader matmul.cu's kernel bodies take. Plain C++ apart
// from QDEV, __uint_as_float and uint4, so the test
// `quant_cuh_decodes_like_the_reference_on_the_host` (backend-cuda/src/ops/
// matmul.rs, with backend-cuda/tests/host/quant_decode.cpp) compiles this
// file on the host too and checks every format against the CPU reference,
// bit for bit.
//
// Each decode is operation for operation the reference's
// (`dequantize_row_into`): E2M1 x (E4M3 x s2), E2M1 x (E4M3 / g),
// E2M1 x 2^(e-127), E4M3 x s, i8 x s, (q - 8 - zp) x s.
#pragma once

#ifndef QDEV
#define QDEV __device__ __forceinline__
#endif

// `DeviceFormat` in engine/src/quant/device_layout.rs.
#define QFMT_NVFP4_MODELOPT 0
#define QFMT_NVFP4_CT 1
#define QFMT_MXFP4 2
#define QFMT_FP8 3
#define QFMT_INT8 4
#define QFMT_INT4 5
// GGUF block formats, decoded by quant_ggml.cuh
#define QFMT_Q4_0 6
#define QFMT_Q4_1 7
#define QFMT_Q5_0 8
#define QFMT_Q5_1 9
#define QFMT_Q8_0 10
#define QFMT_Q2_K 11
#define QFMT_Q3_K 12
#define QFMT_Q4_K 13
#define QFMT_Q5_K 14
#define QFMT_Q6_K 15

// Mirrored by `QuantMatmulParams` in backend-cuda/src/ops/matmul.rs.
struct QuantMatmulParams {
    u32 m;
    u32 n;
    u32 k;
    u32 has_bias;
    u32 vec;         // gemv: k is whole chunks of the reader, and (QuantW) no word straddles a scale group
    u32 row_words;   // code words per weight row (a multiple of 4: rows start 16-byte aligned)
    u32 srow_words;  // scale (+ zero point) words per weight row
    u32 group;       // elements per scale
    u32 spr;         // scales per row; INT4 zero points follow them
    u32 has_zp;
    float tensor_scale;  // NVFP4's second-level scale
    u32 _pad;
};

// Bits per code and codes per u32 word.
template <int FMT>
struct QBits {
    static const int BITS = (FMT <= QFMT_MXFP4 || FMT == QFMT_INT4) ? 4 : 8;
    static const int PER_WORD = 32 / BITS;
    static const u32 MASK = (1u << BITS) - 1u;
};

// E2M1 (engine/src/quant/e2m1.rs): magnitudes 0, 0.5, 1, 1.5, 2, 3, 4, 6;
// bit 3 is the sign (code 8 is -0.0).
QDEV float q_e2m1(u32 c) {
    const u32 mag = c & 7u;
    const u32 bits = mag < 2u ? (mag == 1u ? 0x3f000000u : 0u) : ((((mag >> 1) + 126u) << 23) | ((mag & 1u) << 22));
    return __uint_as_float(bits | ((c & 8u) << 28));
}

// E4M3 (engine/src/quant/fp8.rs `decode`; 0x7f/0xff, NaN, never occur as
// scales or finite weights).
QDEV float q_e4m3(u32 b) {
    const u32 sign = (b >> 7) << 31;
    const u32 e = (b >> 3) & 0xfu, m = b & 7u;
    if (e == 0u) {
        const float v = (float)m * (1.0f / 512.0f);
        return sign ? -v : v;
    }
    return __uint_as_float(sign | ((e + 120u) << 23) | (m << 20));
}

// E8M0: 2^(e - 127); e = 0 is the f32 subnormal 2^-127 (no flush: ftz off).
QDEV float q_e8m0(u32 e) { return __uint_as_float(e == 0u ? 0x00400000u : e << 23); }

// A code's value before its scale.
template <int FMT>
QDEV float q_code(u32 c) {
    if (FMT <= QFMT_MXFP4) return q_e2m1(c);
    if (FMT == QFMT_FP8) return q_e4m3(c);
    if (FMT == QFMT_INT8) return (float)((int)(c << 24) >> 24);
    return (float)((int)c - 8);  // INT4: the nibble holds q + 8
}

// Scale group g of a weight row whose scale words start at `srow`.
struct QScale {
    float s;
    float zp;
};

template <int FMT>
QDEV QScale q_scale(const QuantMatmulParams& p, const u32* srow, u32 g) {
    QScale r;
    r.zp = 0.0f;
    if (FMT <= QFMT_MXFP4) {
        const u32 b = (srow[g >> 2] >> (8u * (g & 3u))) & 0xffu;
        if (FMT == QFMT_NVFP4_MODELOPT) r.s = q_e4m3(b) * p.tensor_scale;
        if (FMT == QFMT_NVFP4_CT) r.s = q_e4m3(b) / p.tensor_scale;
        if (FMT == QFMT_MXFP4) r.s = q_e8m0(b);
    } else {
        r.s = __uint_as_float(srow[g]);
        if (FMT == QFMT_INT4 && p.has_zp) {
            const u32 zb = (srow[p.spr + (g >> 2)] >> (8u * (g & 3u))) & 0xffu;
            r.zp = (float)((int)(zb << 24) >> 24);
        }
    }
    return r;
}

template <int FMT>
QDEV float q_apply(float v, QScale s) {
    return FMT == QFMT_INT4 ? (v - s.zp) * s.s : v * s.s;
}

// Element i of weight row `row`, dequantized (any shape).
template <int FMT>
QDEV float q_element(const QuantMatmulParams& p, const u32* codes, const u32* scales, u32 row, u32 i) {
    const u32* crow = codes + (size_t)row * p.row_words;
    const u32* srow = scales + (size_t)row * p.srow_words;
    const u32 c = (crow[i / QBits<FMT>::PER_WORD] >> (QBits<FMT>::BITS * (i % QBits<FMT>::PER_WORD))) & QBits<FMT>::MASK;
    return q_apply<FMT>(q_code<FMT>(c), q_scale<FMT>(p, srow, i / p.group));
}

// The PER_WORD elements of one code word, all in the scale group of `s`.
template <int FMT>
QDEV void q_word(u32 word, QScale s, float* out) {
#pragma unroll
    for (int j = 0; j < QBits<FMT>::PER_WORD; j++)
        out[j] = q_apply<FMT>(q_code<FMT>((word >> (QBits<FMT>::BITS * j)) & QBits<FMT>::MASK), s);
}

// A quantized weight [n, k] with separate scales: element (row, col), and
// chunk c of a row (16 bytes of codes: 32 FP4/INT4 or 16 FP8/INT8 elements)
// decoded, one scale per code word.
template <int FMT>
struct QuantW {
    static const int CHUNK = 4 * QBits<FMT>::PER_WORD;
    QuantMatmulParams p;
    const u32* codes;
    const u32* scales;
    QDEV float operator()(u32 row, u32 col) const { return q_element<FMT>(p, codes, scales, row, col); }
    QDEV void chunk(u32 row, u32 c, float* out) const {
        const uint4 raw = ((const uint4*)(codes + (size_t)row * p.row_words))[c];
        const u32* srow = scales + (size_t)row * p.srow_words;
        const u32 words[4] = {raw.x, raw.y, raw.z, raw.w};
        const int PER_WORD = QBits<FMT>::PER_WORD;
#pragma unroll
        for (int q = 0; q < 4; q++) {
            const u32 e0 = (c * 4 + q) * PER_WORD;
            q_word<FMT>(words[q], q_scale<FMT>(p, srow, e0 / p.group), out + q * PER_WORD);
        }
    }
};
