// attention: causal attention over a paged KV cache, GQA, optional sliding
// window, soft-capping and sinks. See engine/src/ops/attention.rs for the math.
//
// One block of ATTN_WARPS warps per (token, query head); grid.x = T * heads.
// Each warp walks every ATTN_WARPS-th visible key with an online softmax
// (running max m, sum l, and an output row held across the lanes, lane
// holding elements lane + 32 i), then the warps' states are merged through
// shared memory. head_dim <= MAX_D (the host refuses larger). Block tables,
// sequences and positions were checked on the host; the slot test is a belt.
//
// The caches (both of one dtype) are widened to f32 as read (common.cuh's
// load_cache): one kernel per cache dtype, attention_f32, _f16, _bf16 and
// _fp8 (E4M3).
//
// Sinks (gpt-oss): with has_sinks, head h's logit sinks[h] joins the
// softmax's denominator (and its max) once, in the merge, as a state of one
// more warp with m = sinks[h], l = 1 and no output row. Without, sinks may
// be null and is never read.
//
// Selected positions (DeepSeek-V3.2's index_topk): with n_selected > 0, token
// t sees only the visible positions listed in selected[t, :]; entries past
// its position (u32::MAX pads a row) are skipped. Without, selected may be
// null and is never read.
#include "common.cuh"

#define ATTN_WARPS 4
#define MAX_D 256
#define PER_LANE (MAX_D / 32)

// Mirrored by `AttentionParams` in backend-cuda/src/ops/mod.rs.
struct AttentionParams {
    u32 tokens;
    u32 heads;
    u32 kv_heads;
    u32 head_dim;
    u32 block_size;
    u32 max_blocks;
    u32 window;  // 0: no window
    u32 num_slots;
    float scale;
    float softcap;  // 0: none
    u32 has_sinks;  // 0: sinks is not read
    u32 n_selected;  // 0: every visible position; selected is not read
};

template <int DT>
__device__ void attention(AttentionParams p, const float* q, const void* k_cache, const void* v_cache,
                          const u32* block_tables, const u32* token_seq, const u32* positions, const float* sinks,
                          const u32* selected, float* out) {
    __shared__ float s_m[ATTN_WARPS], s_l[ATTN_WARPS];
    __shared__ float s_acc[ATTN_WARPS][MAX_D];
    const u32 lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const u32 t = blockIdx.x / p.heads, h = blockIdx.x % p.heads;
    if (t >= p.tokens) return;
    const u32 d = p.head_dim;
    const u32 kvh = h / (p.heads / p.kv_heads);
    const u32 s = token_seq[t], pos = positions[t];
    const u32 first = (p.window != 0 && pos + 1 > p.window) ? pos + 1 - p.window : 0;
    const float* qrow = q + ((size_t)t * p.heads + h) * d;

    float qr[PER_LANE], acc[PER_LANE];
#pragma unroll
    for (int i = 0; i < PER_LANE; i++) {
        const u32 e = lane + 32 * i;
        qr[i] = e < d ? qrow[e] : 0.0f;
        acc[i] = 0.0f;
    }
    float m = NEG_INF, l = 0.0f;
    const u32 count = p.n_selected ? p.n_selected : pos + 1 - first;
    for (u32 i = warp; i < count; i += ATTN_WARPS) {
        const u32 j = p.n_selected ? selected[(size_t)t * p.n_selected + i] : first + i;
        if (j < first || j > pos) continue;
        const u32 slot = block_tables[(size_t)s * p.max_blocks + j / p.block_size] * p.block_size + j % p.block_size;
        if (slot >= p.num_slots) continue;
        const size_t row = ((size_t)slot * p.kv_heads + kvh) * d;
        float dot = 0.0f;
#pragma unroll
        for (int i = 0; i < PER_LANE; i++) {
            const u32 e = lane + 32 * i;
            if (e < d) dot += qr[i] * load_cache<DT>(k_cache, row + e);
        }
        float score = warp_sum(dot) * p.scale;
        if (p.softcap > 0.0f) score = p.softcap * tanhf(score / p.softcap);
        const float m_new = fmaxf(m, score);
        const float corr = expf(m - m_new);  // 0 on the first key (m = -inf)
        const float wgt = expf(score - m_new);
        l = l * corr + wgt;
#pragma unroll
        for (int i = 0; i < PER_LANE; i++) {
            const u32 e = lane + 32 * i;
            if (e < d) acc[i] = acc[i] * corr + wgt * load_cache<DT>(v_cache, row + e);
        }
        m = m_new;
    }
    if (lane == 0) {
        s_m[warp] = m;
        s_l[warp] = l;
    }
#pragma unroll
    for (int i = 0; i < PER_LANE; i++) {
        const u32 e = lane + 32 * i;
        if (e < d) s_acc[warp][e] = acc[i];
    }
    __syncthreads();
    // merge: a warp that saw no key has m = -inf, so its weight is 0; the
    // sink is one more state (m = sink, l = 1), counted here only
    const float sink = p.has_sinks ? sinks[h] : NEG_INF;
    float big = sink;
#pragma unroll
    for (int w = 0; w < ATTN_WARPS; w++) big = fmaxf(big, s_m[w]);
    float denom = sink == NEG_INF ? 0.0f : expf(sink - big), f[ATTN_WARPS];
#pragma unroll
    for (int w = 0; w < ATTN_WARPS; w++) {
        f[w] = s_m[w] == NEG_INF ? 0.0f : expf(s_m[w] - big);
        denom += s_l[w] * f[w];
    }
    float* orow = out + ((size_t)t * p.heads + h) * d;
    for (u32 e = threadIdx.x; e < d; e += blockDim.x) {
        float o = 0.0f;
#pragma unroll
        for (int w = 0; w < ATTN_WARPS; w++) o += s_acc[w][e] * f[w];
        orow[e] = denom == 0.0f ? 0.0f : o / denom;  // NaN stays NaN, as in the reference
    }
}

#define ATTENTION(NAME, DT)                                                                                   \
    extern "C" __global__ void attention_##NAME(AttentionParams p, const float* q, const void* k_cache,      \
                                                const void* v_cache, const u32* block_tables,                \
                                                const u32* token_seq, const u32* positions, const float* sinks, \
                                                const u32* selected, float* out) {                           \
        attention<DT>(p, q, k_cache, v_cache, block_tables, token_seq, positions, sinks, selected, out);     \
    }

ATTENTION(f32, DT_F32)
ATTENTION(f16, DT_F16)
ATTENTION(bf16, DT_BF16)
ATTENTION(fp8, DT_F8E4M3)
