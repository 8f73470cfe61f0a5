// moe_route: each token's top-k experts and their weights, from its router
// logits; out[t] = k weights, then k expert ids as f32. See
// engine/src/ops/moe_route.rs for the math.
//
// One warp per token (grid: tokens; block: 32), its scores and choices in
// shared memory (experts <= ROUTE_MAX_EXPERTS, the host refuses more). The
// experts must be chosen exactly as the reference chooses them, so every
// decision follows its loops: the softmax sum and the weights' sum run in
// index order on one lane, groups are scored and picked by the reference's
// scans, and each top-k pick is the reference's "best starts at 0, moves on
// a strictly larger choice" (the lowest index of the largest non-NaN choice,
// or 0 when choice 0 is NaN), found by a warp reduction. exp is computed in
// f64 and rounded: CUDA's expf may be 2 ulp off, which could reorder two
// experts the reference's (glibc) expf keeps apart or tied.
#include "common.cuh"

#define ROUTE_MAX_EXPERTS 1024
// "no choice yet" in the top-k reduction
#define ROUTE_NONE 0xffffffffu

// Mirrored by `MoeRouteParams` in backend-cuda/src/ops/mod.rs.
struct MoeRouteParams {
    u32 tokens;
    u32 experts;
    u32 top_k;
    u32 sigmoid;  // else softmax
    u32 renormalize;
    u32 has_bias;
    u32 groups;  // 0: no groups
    u32 top_groups;
    float scale;
};

__device__ __forceinline__ float route_exp(float v) { return (float)exp((double)v); }

// Whether choice (bv, b) beats (av, a): a larger value, or the same and a
// lower index; NONE loses to everything.
__device__ __forceinline__ bool route_beats(float bv, u32 b, float av, u32 a) {
    return b != ROUTE_NONE && (a == ROUTE_NONE || bv > av || (bv == av && b < a));
}

extern "C" __global__ void moe_route(MoeRouteParams p, const float* logits, const float* bias, float* out) {
    __shared__ float score[ROUTE_MAX_EXPERTS];
    __shared__ float choice[ROUTE_MAX_EXPERTS];
    __shared__ float group_score[ROUTE_MAX_EXPERTS / 2];  // a group holds >= 2 experts
    __shared__ u32 kept[ROUTE_MAX_EXPERTS / 2];
    const u32 t = blockIdx.x, lane = threadIdx.x;
    const u32 E = p.experts;
    if (t >= p.tokens || E > ROUTE_MAX_EXPERTS) return;
    const float* l = logits + (size_t)t * E;
    if (p.sigmoid) {
        for (u32 e = lane; e < E; e += 32) score[e] = 1.0f / (1.0f + route_exp(-l[e]));
    } else {
        float m = NEG_INF;  // fmaxf skips NaN, as the reference's f32::max
        for (u32 e = lane; e < E; e += 32) m = fmaxf(m, l[e]);
        m = warp_max(m);
        for (u32 e = lane; e < E; e += 32) score[e] = route_exp(l[e] - m);
        __syncwarp();
        float sum = 0.0f;
        if (lane == 0)
            for (u32 e = 0; e < E; e++) sum += score[e];
        sum = __shfl_sync(FULL_MASK, sum, 0);
        for (u32 e = lane; e < E; e += 32) score[e] /= sum;
    }
    __syncwarp();
    for (u32 e = lane; e < E; e += 32) choice[e] = score[e] + (p.has_bias ? bias[e] : 0.0f);
    __syncwarp();
    if (p.groups) {
        // a group scores the sum of its two best choices; the top_groups
        // best groups (ties to the lower) stay eligible
        const u32 per = E / p.groups;
        for (u32 g = lane; g < p.groups; g += 32) {
            float a = NEG_INF, b = NEG_INF;
            for (u32 i = 0; i < per; i++) {
                const float v = choice[g * per + i];
                if (v > a) {
                    b = a;
                    a = v;
                } else if (v > b) {
                    b = v;
                }
            }
            group_score[g] = a + b;
            kept[g] = 0;
        }
        __syncwarp();
        if (lane == 0)
            for (u32 q = 0; q < p.top_groups; q++) {
                u32 best = 0;
                for (u32 i = 1; i < p.groups; i++)
                    if (group_score[i] > group_score[best]) best = i;
                kept[best] = 1;
                group_score[best] = NEG_INF;
            }
        __syncwarp();
        for (u32 e = lane; e < E; e += 32)
            if (!kept[e / per]) choice[e] = NEG_INF;
        __syncwarp();
    }
    float* weights = out + (size_t)t * 2 * p.top_k;
    float* ids = weights + p.top_k;
    float sum = 0.0f;  // lane 0's, in pick order
    for (u32 j = 0; j < p.top_k; j++) {
        float bv = NEG_INF;
        u32 best = ROUTE_NONE;
        for (u32 e = lane; e < E; e += 32) {
            const float v = choice[e];
            if (v == v && route_beats(v, e, bv, best)) {
                bv = v;
                best = e;
            }
        }
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) {
            const float ov = __shfl_xor_sync(FULL_MASK, bv, o);
            const u32 ob = __shfl_xor_sync(FULL_MASK, best, o);
            if (route_beats(ov, ob, bv, best)) {
                bv = ov;
                best = ob;
            }
        }
        if (choice[0] != choice[0] || best == ROUTE_NONE) best = 0;
        __syncwarp();  // every lane has read choice[] before lane 0 clears the pick
        if (lane == 0) {
            weights[j] = score[best];
            ids[j] = (float)best;
            sum += score[best];
            choice[best] = NEG_INF;
        }
        __syncwarp();
    }
    if (lane == 0)
        for (u32 j = 0; j < p.top_k; j++) {
            float w = weights[j];
            if (p.renormalize) w /= sum;
            weights[j] = w * p.scale;
        }
}
