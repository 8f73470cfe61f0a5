// glu: out[i] = act(gate[i]) * up[i], act = silu (mode 0) or gelu_tanh (mode 1).
// See engine/src/ops/glu.rs. Grid-stride loop.
#include "common.cuh"

// Mirrored by `ElementwiseParams` in backend-cuda/src/ops/mod.rs.
struct ElementwiseParams {
    u64 n;
    float value;  // unused here
    u32 mode;     // 0 silu, 1 gelu_tanh
};

extern "C" __global__ void glu(ElementwiseParams p, const float* gate, const float* up, float* out) {
    const float c = 0.7978845608028654f;  // sqrt(2 / pi)
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < p.n; i += (u64)gridDim.x * blockDim.x) {
        const float x = gate[i];
        const float a = p.mode == 0 ? x / (1.0f + expf(-x)) : 0.5f * x * (1.0f + tanhf(c * (x + 0.044715f * x * x * x)));
        out[i] = a * up[i];
    }
}
