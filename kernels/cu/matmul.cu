// matmul: out[m, n] = sum_k x[m, k] * w[n, k] (+ b[n]), f32 accumulation.
// See engine/src/ops/matmul.rs. w is [n, k] (nn.Linear), stored f32, f16 or bf16.
//
// Two kernels per weight dtype:
// - matmul_gemv_<dt>: decode (small m). One warp per output column n, each
//   warp reading its weight row once for up to GEMV_ROWS rows of x. Grid:
//   (ceil(n / GEMV_WARPS), ceil(m / GEMV_ROWS)); block: 32 * GEMV_WARPS.
//   With `vec` set (k * elem_size a multiple of 16), each lane loads 16 bytes
//   of weights at a time, so a warp reads 512 contiguous bytes per step.
// - matmul_tiled_<dt>: prefill (larger m). 64 x 64 output tiles, k in steps
//   of 16 through shared memory, 256 threads each computing 4 x 4 outputs.
//   Grid: (ceil(n / 64), ceil(m / 64)).
#include "common.cuh"

#define GEMV_WARPS 8
#define GEMV_ROWS 4
#define TILE 64
#define TILE_K 16

// Mirrored by `MatmulParams` in backend-cuda/src/ops/mod.rs.
struct MatmulParams {
    u32 m;
    u32 n;
    u32 k;
    u32 has_bias;
    u32 vec;  // gemv only: 16-byte loads are aligned (k * elem_size % 16 == 0)
    u32 _pad;
};

// 16 bytes of weights widened to f32: 4 f32 or 8 f16/bf16.
template <int DT>
struct Vec16 {
    static const int N = DT == DT_F32 ? 4 : 8;
};

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

template <int DT>
__device__ void matmul_gemv(MatmulParams p, const float* x, const void* w, const float* bias, float* out) {
    const u32 lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const u32 j = blockIdx.x * GEMV_WARPS + warp;
    const u32 i0 = blockIdx.y * GEMV_ROWS;
    if (j >= p.n) return;  // whole warps leave together: shuffles stay full
    const u32 rows = min((u32)GEMV_ROWS, p.m - i0);
    float acc[GEMV_ROWS];
#pragma unroll
    for (int r = 0; r < GEMV_ROWS; r++) acc[r] = 0.0f;
    const size_t k = p.k;
    if (p.vec) {
        const int N = Vec16<DT>::N;
        const uint4* wrow = (const uint4*)((const char*)w + (size_t)j * k * (DT == DT_F32 ? 4 : 2));
        for (size_t c = lane; c * N < k; c += 32) {
            float wv[Vec16<DT>::N];
            unpack16<DT>(wrow[c], wv);
#pragma unroll
            for (int r = 0; r < GEMV_ROWS; r++) {
                if ((u32)r < rows) {
                    const float4* xr = (const float4*)(x + (size_t)(i0 + r) * k + c * N);
                    float s = 0.0f;
#pragma unroll
                    for (int q = 0; q < N / 4; q++) {
                        const float4 xv = xr[q];
                        s += xv.x * wv[4 * q] + xv.y * wv[4 * q + 1] + xv.z * wv[4 * q + 2] + xv.w * wv[4 * q + 3];
                    }
                    acc[r] += s;
                }
            }
        }
    } else {
        for (size_t c = lane; c < k; c += 32) {
            const float wv = load_w<DT>(w, (size_t)j * k + c);
#pragma unroll
            for (int r = 0; r < GEMV_ROWS; r++)
                if ((u32)r < rows) acc[r] += x[(size_t)(i0 + r) * k + c] * wv;
        }
    }
    const float b = p.has_bias ? bias[j] : 0.0f;
#pragma unroll
    for (int r = 0; r < GEMV_ROWS; r++) {
        const float s = warp_sum(acc[r]);
        if (lane == 0 && (u32)r < rows) out[(size_t)(i0 + r) * p.n + j] = s + b;
    }
}

template <int DT>
__device__ void matmul_tiled(MatmulParams p, const float* x, const void* w, const float* bias, float* out) {
    __shared__ float xs[TILE_K][TILE + 1];  // (k, m) of this tile
    __shared__ float ws[TILE_K][TILE + 1];  // (k, n) of this tile
    const u32 tx = threadIdx.x & 15, ty = threadIdx.x >> 4;
    const u32 m0 = blockIdx.y * TILE, n0 = blockIdx.x * TILE;
    float acc[4][4];
#pragma unroll
    for (int r = 0; r < 4; r++)
#pragma unroll
        for (int c = 0; c < 4; c++) acc[r][c] = 0.0f;
    for (u32 k0 = 0; k0 < p.k; k0 += TILE_K) {
#pragma unroll
        for (int l = 0; l < 4; l++) {
            const u32 idx = threadIdx.x + l * 256;
            const u32 row = idx / TILE_K, kk = idx % TILE_K;
            const u32 gk = k0 + kk;
            const u32 gm = m0 + row, gn = n0 + row;
            xs[kk][row] = (gm < p.m && gk < p.k) ? x[(size_t)gm * p.k + gk] : 0.0f;
            ws[kk][row] = (gn < p.n && gk < p.k) ? load_w<DT>(w, (size_t)gn * p.k + gk) : 0.0f;
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
        if (gm >= p.m) continue;
#pragma unroll
        for (int c = 0; c < 4; c++) {
            const u32 gn = n0 + tx + 16 * c;
            if (gn < p.n) out[(size_t)gm * p.n + gn] = acc[r][c] + (p.has_bias ? bias[gn] : 0.0f);
        }
    }
}

extern "C" __global__ void matmul_gemv_f32(MatmulParams p, const float* x, const void* w, const float* bias,
                                          float* out) {
    matmul_gemv<DT_F32>(p, x, w, bias, out);
}

extern "C" __global__ void matmul_tiled_f32(MatmulParams p, const float* x, const void* w, const float* bias,
                                          float* out) {
    matmul_tiled<DT_F32>(p, x, w, bias, out);
}

extern "C" __global__ void matmul_gemv_f16(MatmulParams p, const float* x, const void* w, const float* bias,
                                          float* out) {
    matmul_gemv<DT_F16>(p, x, w, bias, out);
}

extern "C" __global__ void matmul_tiled_f16(MatmulParams p, const float* x, const void* w, const float* bias,
                                          float* out) {
    matmul_tiled<DT_F16>(p, x, w, bias, out);
}

extern "C" __global__ void matmul_gemv_bf16(MatmulParams p, const float* x, const void* w, const float* bias,
                                          float* out) {
    matmul_gemv<DT_BF16>(p, x, w, bias, out);
}

extern "C" __global__ void matmul_tiled_bf16(MatmulParams p, const float* x, const void* w, const float* bias,
                                          float* out) {
    matmul_tiled<DT_BF16>(p, x, w, bias, out);
}
