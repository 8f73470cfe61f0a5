// moe_combine: out[t, c] = sum_j route[t, j] * y[t*K + j, c], in choice
// order. See engine/src/ops/moe_combine.rs.
// Grid: (tokens, ceil(n / blockDim.x)); one thread per output element. The
// products and sums are rounded apart (__fmul_rn, __fadd_rn: NVRTC would
// fuse them), as the reference's, so the result is its result bit for bit.
#include "common.cuh"

// Mirrored by `MoeCombineParams` in backend-cuda/src/ops/mod.rs.
struct MoeCombineParams {
    u32 tokens;
    u32 top_k;
    u32 n;
    u32 _pad;
};

extern "C" __global__ void moe_combine(MoeCombineParams p, const float* y, const float* route, float* out) {
    const u32 t = blockIdx.x;
    const u32 c = blockIdx.y * blockDim.x + threadIdx.x;
    if (t >= p.tokens || c >= p.n) return;
    const float* weights = route + (size_t)t * 2 * p.top_k;
    const float* rows = y + (size_t)t * p.top_k * p.n + c;
    float s = 0.0f;
    for (u32 j = 0; j < p.top_k; j++) s = __fadd_rn(s, __fmul_rn(weights[j], rows[(size_t)j * p.n]));
    out[(size_t)t * p.n + c] = s;
}
