// rope: rotary position embedding. See engine/src/ops/rope.rs.
// One thread per element of x [T, heads, head_dim]: an element inside the
// rotary dims computes its half of its pair's rotation, the rest copy.
#include "common.cuh"

// Mirrored by `RopeParams` in backend-cuda/src/ops/mod.rs.
struct RopeParams {
    u32 tokens;
    u32 heads;
    u32 head_dim;
    u32 half;  // rotary_dim / 2 = len(inv_freq)
    u32 interleaved;  // 0 neox (i, i + half), 1 GPT-J (2i, 2i + 1)
    float attention_scale;
};

extern "C" __global__ void rope(RopeParams p, const float* x, const u32* positions, const float* inv_freq, float* out) {
    const u64 n = (u64)p.tokens * p.heads * p.head_dim;
    for (u64 idx = (u64)blockIdx.x * blockDim.x + threadIdx.x; idx < n; idx += (u64)gridDim.x * blockDim.x) {
        const u32 e = (u32)(idx % p.head_dim);
        const u32 t = (u32)(idx / ((u64)p.heads * p.head_dim));
        const u64 base = idx - e;
        if (e >= 2 * p.half) {
            out[idx] = x[idx];
            continue;
        }
        u32 i, ia, ib;
        bool first;
        if (p.interleaved) {
            i = e / 2;
            ia = 2 * i;
            ib = 2 * i + 1;
            first = (e & 1) == 0;
        } else {
            i = e < p.half ? e : e - p.half;
            ia = i;
            ib = i + p.half;
            first = e < p.half;
        }
        const float theta = (float)positions[t] * inv_freq[i];
        float s, c;
        sincosf(theta, &s, &c);
        c *= p.attention_scale;
        s *= p.attention_scale;
        const float a = x[base + ia], b = x[base + ib];
        out[idx] = first ? a * c - b * s : b * c + a * s;
    }
}
