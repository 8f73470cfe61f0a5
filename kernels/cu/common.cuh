// common.cuh: helpers shared by every kernel. The backend pastes this file in
// place of the include line of each kernel before handing a kernel to NVRTC, so no
// include path is needed, and no CUDA header is used at all:
// - bf16 is a u16 widened with a shift (its bits are the top half of an f32);
// - f16 is widened with the PTX instruction cvt.f32.f16 (inline asm), which
//   is what cuda_fp16.h's __half2float does, without needing that header.
#pragma once

typedef unsigned int u32;
typedef unsigned short u16;
typedef unsigned long long u64;

typedef unsigned char u8;

// Weight dtype codes (template arguments; `by_dtype` in backend-cuda/src/ops/mod.rs picks the kernel).
#define DT_F32 0
#define DT_F16 1
#define DT_BF16 2
// A KV cache may also hold fp8 E4M3 (kv_store.cu, attention.cu; `by_cache_dtype` picks the kernel).
#define DT_F8E4M3 3

#define FULL_MASK 0xffffffffu
// -inf without math.h (NVRTC has no INFINITY macro without headers)
#define NEG_INF __int_as_float(0xff800000)

__device__ __forceinline__ float bf16_to_f32(u16 h) { return __uint_as_float(((u32)h) << 16); }

__device__ __forceinline__ float f16_to_f32(u16 h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}

// KV cache elements, rounded and widened as engine/src/ops/mod.rs
// `CacheSliceMut::store` and `FloatSlice::widen_into` do (the half crate,
// engine/src/quant/fp8.rs), bit for bit. f16 goes through PTX on the device
// (cvt.rn.f16.f32 is cuda_fp16.h's __float2half_rn; cvt.f32.f16 is exact),
// where only a NaN's payload may differ (it stays NaN); the host harness,
// which has no PTX, takes the same conversions written out (`_soft`).

// f32 -> bf16 bits, round to nearest even (__float2bfloat16_rn); NaN stays
// NaN with its top bits, quiet.
__device__ __forceinline__ u16 round_bf16(float x) {
    const u32 b = __float_as_uint(x);
    if ((b & 0x7fffffffu) > 0x7f800000u) return (u16)((b >> 16) | 0x0040u);
    return (u16)((b + 0x7fffu + ((b >> 16) & 1u)) >> 16);
}

// f32 -> f16 bits, round to nearest even, overflow to inf, NaN quiet with
// its top bits: the half crate's f32_to_f16_fallback, step for step.
__device__ __forceinline__ u16 round_f16_soft(float x) {
    const u32 b = __float_as_uint(x);
    const u32 sign = (b >> 16) & 0x8000u, man = b & 0x7fffffu;
    const int e = (int)((b >> 23) & 0xffu) - 127 + 15;
    if (e == 128 + 15) return (u16)(sign | 0x7c00u | (man ? 0x0200u | (man >> 13) : 0u));  // inf, NaN
    if (e >= 31) return (u16)(sign | 0x7c00u);                                             // overflow
    if (e <= 0) {                                                                          // subnormal or 0
        if (14 - e > 24) return (u16)sign;
        const u32 m = man | 0x800000u, round = 1u << (13 - e);
        const u32 h = m >> (14 - e);
        return (u16)(sign | (h + ((m & round) && (m & (3u * round - 1u)) ? 1u : 0u)));
    }
    const u32 h = sign | ((u32)e << 10) | (man >> 13);
    return (u16)(h + ((man & 0x1000u) && (man & 0x2fffu) ? 1u : 0u));
}

// f16 bits -> f32, exactly (as cvt.f32.f16 and the half crate).
__device__ __forceinline__ float f16_to_f32_soft(u16 h) {
    const u32 sign = ((u32)h & 0x8000u) << 16, e = ((u32)h >> 10) & 0x1fu, m = (u32)h & 0x3ffu;
    if (e == 31u) return __uint_as_float(sign | 0x7f800000u | (m << 13) | (m ? 0x400000u : 0u));
    if (e == 0u) return __uint_as_float(sign | __float_as_uint((float)m * (1.0f / 16777216.0f)));  // m * 2^-24
    return __uint_as_float(sign | ((e + 112u) << 23) | (m << 13));
}

// f32 -> f16 bits, round to nearest even, overflow to inf (__float2half_rn).
__device__ __forceinline__ u16 round_f16(float x) {
#ifdef __CUDA_ARCH__
    u16 h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(x));
    return h;
#else
    return round_f16_soft(x);
#endif
}

// f32 -> E4M3 (float8_e4m3fn) as fp8.rs `encode_saturating`: clamp to
// +-448 (inf included), round to nearest even; NaN is 0x7f or 0xff, -0 0x80.
// (__nv_cvt_float_to_fp8(x, __NV_SATFINITE, __NV_E4M3), without cuda_fp8.h.)
__device__ __forceinline__ u8 round_e4m3(float x) {
    const u32 b = __float_as_uint(x);
    const u32 sign = (b >> 31) << 7;
    u32 a = b & 0x7fffffffu;
    if (a > 0x7f800000u) return (u8)(sign | 0x7fu);
    if (a > 0x43e00000u) a = 0x43e00000u;  // 448
    if (a >= 0x3c800000u) {                // 2^-6: normal in E4M3
        u32 r = a >> 20;                   // exponent and 3 mantissa bits
        const u32 rest = a & 0xfffffu;
        if (rest > 0x80000u || (rest == 0x80000u && (r & 1u))) r++;
        r -= 120u << 3;  // f32 bias 127 -> E4M3 bias 7
        return (u8)(sign | (r < 0x7eu ? r : 0x7eu));
    }
    // subnormal: multiples of 2^-9, RNE (q = 8 is the smallest normal)
    return (u8)(sign | (u32)rintf(__uint_as_float(a) * 512.0f));
}

// E4M3 -> f32 as fp8.rs `decode` (0x7f and 0xff are NaN).
__device__ __forceinline__ float e4m3_to_f32(u32 c) {
    const u32 sign = (c >> 7) << 31, e = (c >> 3) & 0xfu, m = c & 7u;
    if ((c & 0x7fu) == 0x7fu) return __uint_as_float(sign | 0x7fc00000u);
    if (e == 0u) return __uint_as_float(sign | __float_as_uint((float)m * (1.0f / 512.0f)));
    return __uint_as_float(sign | ((e + 120u) << 23) | (m << 20));
}

// Element i of a KV cache of DT (DT_F32 .. DT_F8E4M3), widened to f32.
template <int DT>
__device__ __forceinline__ float load_cache(const void* c, size_t i) {
    if (DT == DT_F32) return ((const float*)c)[i];
    if (DT == DT_BF16) return bf16_to_f32(((const u16*)c)[i]);
    if (DT == DT_F8E4M3) return e4m3_to_f32(((const u8*)c)[i]);
#ifdef __CUDA_ARCH__
    return f16_to_f32(((const u16*)c)[i]);
#else
    return f16_to_f32_soft(((const u16*)c)[i]);
#endif
}

// Element i of a KV cache of DT = v, rounded to DT.
template <int DT>
__device__ __forceinline__ void store_cache(void* c, size_t i, float v) {
    if (DT == DT_F32) ((float*)c)[i] = v;
    if (DT == DT_F16) ((u16*)c)[i] = round_f16(v);
    if (DT == DT_BF16) ((u16*)c)[i] = round_bf16(v);
    if (DT == DT_F8E4M3) ((u8*)c)[i] = round_e4m3(v);
}

// Element i of a weight stored as DT, widened to f32.
template <int DT>
__device__ __forceinline__ float load_w(const void* w, size_t i) {
    if (DT == DT_F32) return ((const float*)w)[i];
    if (DT == DT_F16) return f16_to_f32(((const u16*)w)[i]);
    return bf16_to_f32(((const u16*)w)[i]);
}

template <int DT>
__device__ __forceinline__ void unpack16(uint4 raw, float* out) {
    if (DT == DT_F32) {
        out[0] = __uint_as_float(raw.x);
        out[1] = __uint_as_float(raw.y);
        out[2] = __uint_as_float(raw.z);
        out[3] = __uint_as_float(raw.w);
    } else {
        const u32 words[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const u16 lo = (u16)(words[i] & 0xffffu), hi = (u16)(words[i] >> 16);
            out[2 * i] = DT == DT_F16 ? f16_to_f32(lo) : bf16_to_f32(lo);
            out[2 * i + 1] = DT == DT_F16 ? f16_to_f32(hi) : bf16_to_f32(hi);
        }
    }
}

// A float weight [n, k], the reader of the weight ops (matmul.cu,
// gather_rows.cu): element (row, col), and chunk c of a row (the 16 bytes at
// c * 16: 4 f32 or 8 f16/bf16) widened. quant.cuh and quant_ggml.cuh give
// the quantized formats readers with the same members.
template <int DT>
struct FloatW {
    static const int CHUNK = DT == DT_F32 ? 4 : 8;
    const void* w;
    u32 k;
    __device__ __forceinline__ float operator()(u32 row, u32 col) const { return load_w<DT>(w, (size_t)row * k + col); }
    __device__ __forceinline__ void chunk(u32 row, u32 c, float* out) const {
        const uint4* r = (const uint4*)((const char*)w + (size_t)row * k * (DT == DT_F32 ? 4 : 2));
        unpack16<DT>(r[c], out);
    }
};

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL_MASK, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(FULL_MASK, v, o));
    return v;
}

// Sum over a block of blockDim.x threads (a multiple of 32, at most 1024);
// every thread gets the total. `scratch` holds 32 floats of shared memory.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int warps = blockDim.x >> 5;
    v = warp_sum(v);
    __syncthreads();  // scratch may still be read by a previous call
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < warps ? scratch[lane] : 0.0f;
    return warp_sum(v);
}

// Order-preserving u32 key of a float: a larger float has a larger key; -0
// and +0 share one; NaN is 0, below -inf's 0x007fffff. Maxima over keys are
// total and exact whatever the reduction order (argmax.cu, sample.cu).
__device__ __forceinline__ u32 float_key(float v) {
    const u32 bits = __float_as_uint(v);
    const u32 mag = bits & 0x7fffffffu;
    if (mag > 0x7f800000u) return 0u;  // NaN
    if (mag == 0u) return 0x80000000u;  // -0 and +0
    return (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);
}
