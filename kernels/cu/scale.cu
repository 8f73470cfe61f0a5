// scale: out[i] = factor * x[i]. See engine/src/ops/scale.rs. Grid-stride loop.
#include "common.cuh"

// Mirrored by `ElementwiseParams` in backend-cuda/src/ops/mod.rs.
struct ElementwiseParams {
    u64 n;
    float value;  // the factor
    u32 mode;     // unused here
};

extern "C" __global__ void scale(ElementwiseParams p, const float* x, float* out) {
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < p.n; i += (u64)gridDim.x * blockDim.x)
        out[i] = p.value * x[i];
}
