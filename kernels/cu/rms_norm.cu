// rms_norm: out[r, c] = x[r, c] / sqrt(mean(x[r, :]^2) + eps) * g[c],
// g = w or 1 + w, then + b[c] with a bias. See engine/src/ops/rms_norm.rs.
// Grid: (rows); block: 256 threads striding over the row.
#include "common.cuh"

// Mirrored by `RmsNormParams` in backend-cuda/src/ops/mod.rs.
struct RmsNormParams {
    u32 rows;
    u32 cols;
    float eps;
    u32 unit_offset;  // 1: Gemma's gain = 1 + w
    u32 has_bias;     // 0: b is not read
};

extern "C" __global__ void rms_norm(RmsNormParams p, const float* x, const float* w, const float* b, float* out) {
    __shared__ float scratch[32];
    const u32 r = blockIdx.x;
    if (r >= p.rows) return;
    const float* xr = x + (size_t)r * p.cols;
    float* orow = out + (size_t)r * p.cols;
    float ss = 0.0f;
    for (u32 c = threadIdx.x; c < p.cols; c += blockDim.x) ss += xr[c] * xr[c];
    ss = block_sum(ss, scratch);
    const float inv_rms = 1.0f / sqrtf(ss / (float)p.cols + p.eps);
    for (u32 c = threadIdx.x; c < p.cols; c += blockDim.x) {
        const float g = p.unit_offset ? 1.0f + w[c] : w[c];
        orow[c] = xr[c] * inv_rms * g + (p.has_bias ? b[c] : 0.0f);
    }
}
