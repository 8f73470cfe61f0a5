// matmul: out[m, n] = sum_k x[m, k] * w[n, k] (+ b[n]), f32 accumulation.
// See engine/src/ops/matmul.rs. w is [n, k] (nn.Linear): f32, f16 or bf16,
// or quantized (NVFP4, MXFP4, FP8, INT8, INT4: codes and scales in two
// buffers, decoded in registers by quant.cuh; GGUF's Q4_0 .. Q8_0 and Q2_K ..
// Q6_K: blocks kept as stored, decoded by quant_ggml.cuh; never expanded in
// memory). Each kernel body takes its weight through a reader (FloatW in
// common.cuh, QuantW, GgmlW): element (row, col), or chunk c of a row,
// widened or decoded.
//
// Kernels, per weight format <f> (f32, f16, bf16, nvfp4, nvfp4_ct, mxfp4,
// fp8, int8, int4, q4_0, q4_1, q5_0, q5_1, q8_0, q2_k, q3_k, q4_k, q5_k,
// q6_k):
// - matmul_gemv_<f>: decode (small m). One warp per output column n, each
//   warp reading its weight row once for up to GEMV_ROWS rows of x. Grid:
//   (ceil(n / GEMV_WARPS), ceil(m / GEMV_ROWS)); block: 32 * GEMV_WARPS.
//   With `vec` set, each lane loads 16 bytes of weights at a time (4 f32,
//   8 f16/bf16, 32 FP4/INT4 or 16 FP8/INT8 codes), so a warp reads 512
//   contiguous bytes per step: the memory-bound decode path. GGUF blocks
//   are read a 32-element chunk of one block per lane (the block's bytes,
//   scales included), so a warp reads 32 consecutive chunks of its row.
// - matmul_tiled_<f>: prefill (larger m) when cuBLAS is absent. 64 x 64
//   output tiles, k in steps of 16 through shared memory, 256 threads each
//   computing 4 x 4 outputs. Grid: (ceil(n / 64), ceil(m / 64)).
// - matmul_dequant_<q>: with cuBLAS, a quantized prefill decodes the weight
//   into a temporary f32 [n, k] (grid-stride) for one SGEMM: exact like the
//   reference, and the decode is read once per matmul, not once per tile.
// - With cuBLAS, prefill with float weights is one GEMM: x is first rounded
//   to the weight's dtype (matmul_x_to_f16 / _bf16; tensor cores take one
//   input type), cuBLAS accumulates in f32, then matmul_add_bias.
#include "common.cuh"
#include "quant.cuh"
#include "quant_ggml.cuh"
#include "gemv.cuh"

#define GEMV_WARPS 8
#define GEMV_ROWS 4
#define TILE 64
#define TILE_K 16

// Mirrored by `MatmulParams` in backend-cuda/src/ops/matmul.rs.
struct MatmulParams {
    u32 m;
    u32 n;
    u32 k;
    u32 has_bias;
    u32 vec;  // gemv only: 16-byte loads are aligned (k * elem_size % 16 == 0)
    u32 _pad;
};

// out[i0.., j] for up to GEMV_ROWS rows of x: warp j reads weight row j once
// (warp_dots in gemv.cuh).
template <class W>
__device__ void matmul_gemv(u32 m, u32 n, u32 k, u32 vec, u32 has_bias, const float* x, W w, const float* bias,
                            float* out) {
    const u32 lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const u32 j = blockIdx.x * GEMV_WARPS + warp;
    const u32 i0 = blockIdx.y * GEMV_ROWS;
    if (j >= n) return;  // whole warps leave together: shuffles stay full
    const u32 rows = min((u32)GEMV_ROWS, m - i0);
    const float* xr[GEMV_ROWS];
#pragma unroll
    for (int r = 0; r < GEMV_ROWS; r++) xr[r] = x + (size_t)(i0 + r) * k;
    float acc[GEMV_ROWS];
    warp_dots<GEMV_ROWS>(w, j, k, vec, xr, rows, acc);
    const float b = has_bias ? bias[j] : 0.0f;
#pragma unroll
    for (int r = 0; r < GEMV_ROWS; r++) {
        const float s = warp_sum(acc[r]);
        if (lane == 0 && (u32)r < rows) out[(size_t)(i0 + r) * n + j] = s + b;
    }
}

template <class W>
__device__ void matmul_tiled(u32 m, u32 n, u32 k, const float* x, W w, u32 has_bias, const float* bias,
                             float* out) {
    __shared__ float xs[TILE_K][TILE + 1];  // (k, m) of this tile
    __shared__ float ws[TILE_K][TILE + 1];  // (k, n) of this tile
    const u32 tx = threadIdx.x & 15, ty = threadIdx.x >> 4;
    const u32 m0 = blockIdx.y * TILE, n0 = blockIdx.x * TILE;
    float acc[4][4];
#pragma unroll
    for (int r = 0; r < 4; r++)
#pragma unroll
        for (int c = 0; c < 4; c++) acc[r][c] = 0.0f;
    for (u32 k0 = 0; k0 < k; k0 += TILE_K) {
#pragma unroll
        for (int l = 0; l < 4; l++) {
            const u32 idx = threadIdx.x + l * 256;
            const u32 row = idx / TILE_K, kk = idx % TILE_K;
            const u32 gk = k0 + kk;
            const u32 gm = m0 + row, gn = n0 + row;
            xs[kk][row] = (gm < m && gk < k) ? x[(size_t)gm * k + gk] : 0.0f;
            ws[kk][row] = (gn < n && gk < k) ? w(gn, gk) : 0.0f;
        }
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < TILE_K; kk++) {
            float a[4], b[4];
#pragma unroll
            for (int r = 0; r < 4; r++) a[r] = xs[kk][ty + 16 * r];
#pragma unroll
            for (int c = 0; c < 4; c++) b[c] = ws[kk][tx + 16 * c];
#pragma unroll
            for (int r = 0; r < 4; r++)
#pragma unroll
                for (int c = 0; c < 4; c++) acc[r][c] += a[r] * b[c];
        }
        __syncthreads();
    }
#pragma unroll
    for (int r = 0; r < 4; r++) {
        const u32 gm = m0 + ty + 16 * r;
        if (gm >= m) continue;
#pragma unroll
        for (int c = 0; c < 4; c++) {
            const u32 gn = n0 + tx + 16 * c;
            if (gn < n) out[(size_t)gm * n + gn] = acc[r][c] + (has_bias ? bias[gn] : 0.0f);
        }
    }
}

#define FLOAT_KERNELS(NAME, DT)                                                                                \
    extern "C" __global__ void matmul_gemv_##NAME(MatmulParams p, const float* x, const void* w,              \
                                                  const float* bias, float* out) {                            \
        FloatW<DT> wl = {w, p.k};                                                                              \
        matmul_gemv(p.m, p.n, p.k, p.vec, p.has_bias, x, wl, bias, out);                                      \
    }                                                                                                          \
    extern "C" __global__ void matmul_tiled_##NAME(MatmulParams p, const float* x, const void* w,             \
                                                   const float* bias, float* out) {                           \
        FloatW<DT> wl = {w, p.k};                                                                              \
        matmul_tiled(p.m, p.n, p.k, x, wl, p.has_bias, bias, out);                                             \
    }

FLOAT_KERNELS(f32, DT_F32)
FLOAT_KERNELS(f16, DT_F16)
FLOAT_KERNELS(bf16, DT_BF16)

// The whole weight decoded to f32 [n, k], for a cuBLAS GEMM in prefill.
template <class W>
__device__ void matmul_dequant(u32 n, u32 k, W w, float* out) {
    const u64 total = (u64)n * k;
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (u64)gridDim.x * blockDim.x)
        out[i] = w((u32)(i / k), (u32)(i % k));
}

// The three kernels of a quantized format, reading it through W (QuantW in
// quant.cuh, GgmlW in quant_ggml.cuh, whose `scales` buffer is unused).
#define QUANT_KERNELS(NAME, W)                                                                                 \
    extern "C" __global__ void matmul_dequant_##NAME(QuantMatmulParams p, const u32* codes, const u32* scales,  \
                                                     float* w) {                                               \
        W wl = {p, codes, scales};                                                                             \
        matmul_dequant(p.n, p.k, wl, w);                                                                       \
    }                                                                                                          \
    extern "C" __global__ void matmul_gemv_##NAME(QuantMatmulParams p, const float* x, const u32* codes,      \
                                                  const u32* scales, const float* bias, float* out) {         \
        W wl = {p, codes, scales};                                                                             \
        matmul_gemv(p.m, p.n, p.k, p.vec, p.has_bias, x, wl, bias, out);                                      \
    }                                                                                                          \
    extern "C" __global__ void matmul_tiled_##NAME(QuantMatmulParams p, const float* x, const u32* codes,     \
                                                   const u32* scales, const float* bias, float* out) {        \
        W wl = {p, codes, scales};                                                                             \
        matmul_tiled(p.m, p.n, p.k, x, wl, p.has_bias, bias, out);                                             \
    }

QUANT_KERNELS(nvfp4, QuantW<QFMT_NVFP4_MODELOPT>)
QUANT_KERNELS(nvfp4_ct, QuantW<QFMT_NVFP4_CT>)
QUANT_KERNELS(mxfp4, QuantW<QFMT_MXFP4>)
QUANT_KERNELS(fp8, QuantW<QFMT_FP8>)
QUANT_KERNELS(int8, QuantW<QFMT_INT8>)
QUANT_KERNELS(int4, QuantW<QFMT_INT4>)
QUANT_KERNELS(q4_0, GgmlW<QFMT_Q4_0>)
QUANT_KERNELS(q4_1, GgmlW<QFMT_Q4_1>)
QUANT_KERNELS(q5_0, GgmlW<QFMT_Q5_0>)
QUANT_KERNELS(q5_1, GgmlW<QFMT_Q5_1>)
QUANT_KERNELS(q8_0, GgmlW<QFMT_Q8_0>)
QUANT_KERNELS(q2_k, GgmlW<QFMT_Q2_K>)
QUANT_KERNELS(q3_k, GgmlW<QFMT_Q3_K>)
QUANT_KERNELS(q4_k, GgmlW<QFMT_Q4_K>)
QUANT_KERNELS(q5_k, GgmlW<QFMT_Q5_K>)
QUANT_KERNELS(q6_k, GgmlW<QFMT_Q6_K>)

// Mirrored by `RowsParams` in backend-cuda/src/ops/matmul.rs: `n` elements
// of a row-major matrix with `cols` columns.
struct RowsParams {
    u64 n;
    u32 cols;
    u32 _pad;
};

// f32 -> bf16, rounding to nearest even (NaN stays NaN).
__device__ __forceinline__ u16 f32_to_bf16(float f) {
    const u32 u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (u16)((u >> 16) | 0x40u);
    return (u16)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

__device__ __forceinline__ u16 f32_to_f16(float f) {
    u16 h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
}

extern "C" __global__ void matmul_x_to_bf16(RowsParams p, const float* x, u16* out) {
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < p.n; i += (u64)gridDim.x * blockDim.x)
        out[i] = f32_to_bf16(x[i]);
}

extern "C" __global__ void matmul_x_to_f16(RowsParams p, const float* x, u16* out) {
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < p.n; i += (u64)gridDim.x * blockDim.x)
        out[i] = f32_to_f16(x[i]);
}

// out[i, j] += bias[j], after a cuBLAS GEMM.
extern "C" __global__ void matmul_add_bias(RowsParams p, const float* bias, float* out) {
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < p.n; i += (u64)gridDim.x * blockDim.x)
        out[i] += bias[i % p.cols];
}
