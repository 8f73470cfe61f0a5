// add: out[i] = a[i] + b[i]. See engine/src/ops/add.rs. Grid-stride loop.
#include "common.cuh"

// Mirrored by `ElementwiseParams` in backend-cuda/src/ops/mod.rs.
struct ElementwiseParams {
    u64 n;
    float value;  // unused here
    u32 mode;     // unused here
};

extern "C" __global__ void add(ElementwiseParams p, const float* a, const float* b, float* out) {
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < p.n; i += (u64)gridDim.x * blockDim.x)
        out[i] = a[i] + b[i];
}
