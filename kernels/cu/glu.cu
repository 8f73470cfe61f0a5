// glu: out[i] = act(gate[i]) * up[i], act = silu (mode 0), gelu_tanh (mode 1)
// or gpt-oss's clamped SwiGLU (mode 2: g = min(gate, limit),
// out = (clamp(up, -limit, limit) + 1) * g / (1 + exp(-alpha g))).
// See engine/src/ops/glu.rs. Grid-stride loop.
#include "common.cuh"

// Mirrored by `GluParams` in backend-cuda/src/ops/mod.rs.
struct GluParams {
    u64 n;
    u32 mode;     // 0 silu, 1 gelu_tanh, 2 clamped swiglu
    float alpha;  // mode 2 only
    float limit;  // mode 2 only
    u32 _pad;
};

extern "C" __global__ void glu(GluParams p, const float* gate, const float* up, float* out) {
    const float c = 0.7978845608028654f;  // sqrt(2 / pi)
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < p.n; i += (u64)gridDim.x * blockDim.x) {
        const float x = gate[i], u = up[i];
        if (p.mode == 2) {
            // min/clamp as Rust's f32::min/clamp: a NaN gate gives limit, a NaN up stays NaN
            const float g = fminf(x, p.limit);
            const float uc = u < -p.limit ? -p.limit : (u > p.limit ? p.limit : u);
            out[i] = (uc + 1.0f) * (g / (1.0f + expf(-p.alpha * g)));
        } else {
            const float a =
                p.mode == 0 ? x / (1.0f + expf(-x)) : 0.5f * x * (1.0f + tanhf(c * (x + 0.044715f * x * x * x)));
            out[i] = a * u;
        }
    }
}
