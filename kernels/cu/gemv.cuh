// gemv.cuh: one warp's dot products of one weight row with a few rows of x,
// the inner loop of matmul.cu's GEMV and of moe_matmul.cu (which gathers its
// rows of x by expert). Follows common.cuh; takes any weight reader (FloatW,
// QuantW, GgmlW).
#pragma once

// dot(x[0..N], w[0..N]) with float4 loads of x (16-byte aligned).
template <int N>
__device__ __forceinline__ float dot_x4(const float* x, const float* w) {
    const float4* x4 = (const float4*)x;
    float s = 0.0f;
#pragma unroll
    for (int q = 0; q < N / 4; q++) {
        const float4 xv = x4[q];
        s += xv.x * w[4 * q] + xv.y * w[4 * q + 1] + xv.z * w[4 * q + 2] + xv.w * w[4 * q + 3];
    }
    return s;
}

// acc[r] = this lane's part of x_r . w[row, :] for the first `rows` of the
// ROWS rows xr[r] (k floats each): weight row `row` is read once for all of
// them, a chunk (16 bytes of weights) per lane per step with `vec` (k whole
// chunks, x rows 16-byte aligned), else element by element. The warp's sum
// of acc[r] is the dot product.
template <int ROWS, class W>
__device__ __forceinline__ void warp_dots(W w, u32 row, u32 k, u32 vec, const float* const* xr, u32 rows,
                                          float* acc) {
    const u32 lane = threadIdx.x & 31;
#pragma unroll
    for (int r = 0; r < ROWS; r++) acc[r] = 0.0f;
    if (vec) {
        for (u32 c = lane; (size_t)c * W::CHUNK < k; c += 32) {
            float wv[W::CHUNK];
            w.chunk(row, c, wv);
#pragma unroll
            for (int r = 0; r < ROWS; r++)
                if ((u32)r < rows) acc[r] += dot_x4<W::CHUNK>(xr[r] + (size_t)c * W::CHUNK, wv);
        }
    } else {
        for (u32 c = lane; c < k; c += 32) {
            const float wv = w(row, c);
#pragma unroll
            for (int r = 0; r < ROWS; r++)
                if ((u32)r < rows) acc[r] += xr[r][c] * wv;
        }
    }
}
