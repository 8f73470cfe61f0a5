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

// Weight dtype codes (template arguments; `by_dtype` in backend-cuda/src/ops/mod.rs picks the kernel).
#define DT_F32 0
#define DT_F16 1
#define DT_BF16 2

#define FULL_MASK 0xffffffffu
// -inf without math.h (NVRTC has no INFINITY macro without headers)
#define NEG_INF __int_as_float(0xff800000)

__device__ __forceinline__ float bf16_to_f32(u16 h) { return __uint_as_float(((u32)h) << 16); }

__device__ __forceinline__ float f16_to_f32(u16 h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
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
