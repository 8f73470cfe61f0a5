// moe_matmul: out[t*K + j, :] = x[r, :] . w[e*n .. (e+1)*n, :]^T (* s[e]) (+ b[e*n ..])
// with e = route[t, K + j], r = t or t*K + j. See engine/src/ops/moe_matmul.rs.
// w stacks the experts' [n, k] weights in any weight format, read through
// matmul.cu's readers (FloatW, QuantW, GgmlW) and GEMV loop (gemv.cuh).
//
// Grid: (ceil(n / MOE_WARPS), experts + 1); block: 32 * MOE_WARPS. Block
// (c, e) computes columns c*MOE_WARPS.. (a warp each) of every row that chose
// expert e: it scans the route on the device (launches are replayed from a
// CUDA graph, so nothing is known on the host), gathers up to MOE_LIST such
// rows in shared memory in route order, then each warp reads its weight row
// once per MOE_ROWS of them: an expert's weights stream from memory once per
// step, however many tokens chose it. An id that names no expert (negative,
// fractional, NaN, >= experts) never indexes w: those rows belong to the
// extra block row e = experts, which writes them zeros.
//
// Kernels, per weight format <f> (the suffixes of matmul.cu): moe_matmul_<f>.
#include "common.cuh"
#include "quant.cuh"
#include "quant_ggml.cuh"
#include "gemv.cuh"

#define MOE_WARPS 8
#define MOE_ROWS 4
#define MOE_LIST (32 * MOE_WARPS)  // one scan step: a route id per thread

// Mirrored by `MoeMatmulParams` in backend-cuda/src/ops/moe_matmul.rs.
struct MoeMatmulParams {
    u32 tokens;
    u32 top_k;
    u32 experts;
    u32 per_choice;  // x has a row per (token, choice), else one per token
    u32 n;           // output columns: rows per expert in w
    u32 k;
    u32 has_bias;
    u32 vec;  // the reader's chunk path (as MatmulParams / QuantMatmulParams::vec)
    u32 has_scale;  // a per-expert scale multiplies each expert's results
};

// Mirrored by `MoeQuantParams` in backend-cuda/src/ops/moe_matmul.rs: a quantized
// stack's reader params (its n is the stack's rows) follow.
struct MoeQuantParams {
    MoeMatmulParams moe;
    QuantMatmulParams w;
};

// The expert of choice row i = t*K + j, or `experts` if its id names none.
__device__ __forceinline__ u32 moe_expert(const MoeMatmulParams& p, const float* route, u32 i) {
    const float id = route[(size_t)(i / p.top_k) * 2 * p.top_k + p.top_k + i % p.top_k];
    return id >= 0.0f && id < (float)p.experts && id == floorf(id) ? (u32)id : p.experts;
}

// Column j of the `count` gathered rows (choice rows, in `rows`), for the warp
// of column j.
template <class W>
__device__ void moe_rows(const MoeMatmulParams& p, const float* x, W w, const float* bias, const float* scale,
                         float* out, const u32* rows, u32 count, u32 e, u32 j) {
    const u32 lane = threadIdx.x & 31;
    if (j >= p.n) return;  // whole warps: shuffles stay full
    if (e == p.experts) {
        for (u32 r = lane; r < count; r += 32) out[(size_t)rows[r] * p.n + j] = 0.0f;
        return;
    }
    const u32 wrow = e * p.n + j;
    const float b = p.has_bias ? bias[wrow] : 0.0f;
    const float sc = p.has_scale ? scale[e] : 1.0f;
    for (u32 r0 = 0; r0 < count; r0 += MOE_ROWS) {
        const u32 m = min((u32)MOE_ROWS, count - r0);
        const float* xr[MOE_ROWS];
#pragma unroll
        for (int r = 0; r < MOE_ROWS; r++) {
            const u32 i = rows[r0 + min((u32)r, m - 1)];
            xr[r] = x + (size_t)(p.per_choice ? i : i / p.top_k) * p.k;
        }
        float acc[MOE_ROWS];
        warp_dots<MOE_ROWS>(w, wrow, p.k, p.vec, xr, m, acc);
#pragma unroll
        for (int r = 0; r < MOE_ROWS; r++) {
            const float s = warp_sum(acc[r]);
            if (lane == 0 && (u32)r < m) out[(size_t)rows[r0 + r] * p.n + j] = s * sc + b;
        }
    }
}

template <class W>
__device__ void moe_matmul(const MoeMatmulParams& p, const float* x, W w, const float* route, const float* bias,
                           const float* scale, float* out) {
    __shared__ u32 rows[MOE_LIST];
    __shared__ u32 warp_hits[MOE_WARPS];
    const u32 lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const u32 e = blockIdx.y;
    const u32 j = blockIdx.x * MOE_WARPS + warp;
    const u32 choices = p.tokens * p.top_k;
    u32 count = 0;  // rows gathered; the same in every thread
    for (u32 base = 0; base < choices; base += MOE_LIST) {
        const u32 i = base + threadIdx.x;
        const bool hit = i < choices && moe_expert(p, route, i) == e;
        const u32 ballot = __ballot_sync(FULL_MASK, hit);
        if (lane == 0) warp_hits[warp] = __popc(ballot);
        __syncthreads();
        u32 before = 0, step = 0;  // hits of the warps before this one, and of the step
#pragma unroll
        for (u32 q = 0; q < MOE_WARPS; q++) {
            before += q < warp ? warp_hits[q] : 0u;
            step += warp_hits[q];
        }
        if (count + step > MOE_LIST) {  // full: multiply what is gathered first
            moe_rows(p, x, w, bias, scale, out, rows, count, e, j);
            count = 0;
        }
        __syncthreads();  // rows[] and warp_hits[] read before they are rewritten
        if (hit) rows[count + before + __popc(ballot & ((1u << lane) - 1u))] = i;
        count += step;
    }
    __syncthreads();
    if (count) moe_rows(p, x, w, bias, scale, out, rows, count, e, j);
}

#define FLOAT_MOE(NAME, DT)                                                                                    \
    extern "C" __global__ void moe_matmul_##NAME(MoeMatmulParams p, const float* x, const void* w,            \
                                                 const float* route, const float* bias, const float* scale,    \
                                                 float* out) {                                                 \
        FloatW<DT> wl = {w, p.k};                                                                              \
        moe_matmul(p, x, wl, route, bias, scale, out);                                                         \
    }

FLOAT_MOE(f32, DT_F32)
FLOAT_MOE(f16, DT_F16)
FLOAT_MOE(bf16, DT_BF16)

#define QUANT_MOE(NAME, W)                                                                                     \
    extern "C" __global__ void moe_matmul_##NAME(MoeQuantParams p, const float* x, const u32* codes,          \
                                                 const u32* scales, const float* route, const float* bias,     \
                                                 const float* scale, float* out) {                             \
        W wl = {p.w, codes, scales};                                                                           \
        moe_matmul(p.moe, x, wl, route, bias, scale, out);                                                     \
    }

QUANT_MOE(nvfp4, QuantW<QFMT_NVFP4_MODELOPT>)
QUANT_MOE(nvfp4_ct, QuantW<QFMT_NVFP4_CT>)
QUANT_MOE(mxfp4, QuantW<QFMT_MXFP4>)
QUANT_MOE(fp8, QuantW<QFMT_FP8>)
QUANT_MOE(int8, QuantW<QFMT_INT8>)
QUANT_MOE(int4, QuantW<QFMT_INT4>)
QUANT_MOE(q4_0, GgmlW<QFMT_Q4_0>)
QUANT_MOE(q4_1, GgmlW<QFMT_Q4_1>)
QUANT_MOE(q5_0, GgmlW<QFMT_Q5_0>)
QUANT_MOE(q5_1, GgmlW<QFMT_Q5_1>)
QUANT_MOE(q8_0, GgmlW<QFMT_Q8_0>)
QUANT_MOE(q2_k, GgmlW<QFMT_Q2_K>)
QUANT_MOE(q3_k, GgmlW<QFMT_Q3_K>)
QUANT_MOE(q4_k, GgmlW<QFMT_Q4_K>)
QUANT_MOE(q5_k, GgmlW<QFMT_Q5_K>)
QUANT_MOE(q6_k, GgmlW<QFMT_Q6_K>)
