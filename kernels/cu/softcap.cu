// softcap: out[i] = cap * tanh(x[i] / cap). See engine/src/ops/softcap.rs.
#include "common.cuh"

// Mirrored by `ElementwiseParams` in backend-cuda/src/ops/mod.rs.
struct ElementwiseParams {
    u64 n;
    float value;  // the cap
    u32 mode;     // unused here
};

extern "C" __global__ void softcap(ElementwiseParams p, const float* x, float* out) {
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < p.n; i += (u64)gridDim.x * blockDim.x)
        out[i] = p.value * tanhf(x[i] / p.value);
}
