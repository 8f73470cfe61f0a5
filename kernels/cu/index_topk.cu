// index_topk: DeepSeek-V3.2's lightning indexer. See engine/src/ops/index_topk.rs.
// Token t at position p scores every j <= p as sum_h w[t, h] * relu(q[t, h] . k_j)
// and lists, in ascending order, all of 0..=p when p < top_k, else the top_k
// best (compared as numbers; a tie goes to the earlier position); u32 max
// pads a row.
//
// One block per token (grid.x = T):
// 1. each warp scores every (blockDim / 32)-th position into `scores`, a
//    row of score_stride floats per token (scratch the host allocates);
// 2. the top_k-th best score's key (common.cuh's float_key) is found bit by
//    bit: 32 passes counting the keys at or above a candidate;
// 3. the positions above it, and the earliest of those equal to it, are
//    written in order, blockDim positions at a time (`block_rank`).
// Block tables, sequences and positions were checked on the host.
#include "common.cuh"

#define NO_POSITION 0xffffffffu
#define TOPK_MAX_WARPS 32

// Mirrored by `IndexTopkParams` in backend-cuda/src/ops/mod.rs.
struct IndexTopkParams {
    u32 tokens;
    u32 heads;
    u32 head_dim;
    u32 block_size;
    u32 max_blocks;
    u32 top_k;
    u32 score_stride;
    u32 num_slots;
};

// how many of row[0..=pos] have a key >= at_least, in every thread
__device__ u32 count_at_least(const float* row, u32 pos, u32 at_least, float* scratch) {
    float n = 0.0f;  // counts stay exact in f32 below 2^24 positions
    for (u32 j = threadIdx.x; j <= pos; j += blockDim.x) n += float_key(row[j]) >= at_least ? 1.0f : 0.0f;
    return (u32)block_sum(n, scratch);
}

// Over the block: how many threads before this one have their flag set, and
// how many have it in all.
struct Rank {
    u32 before, total;
};

// by ballots and the warps' counts; every thread must call it
__device__ Rank block_rank(bool flag, u32* s_warp) {
    const u32 lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    const u32 bits = __ballot_sync(FULL_MASK, flag);
    __syncthreads();  // s_warp may still be read by the previous call
    if (lane == 0) s_warp[warp] = __popc(bits);
    __syncthreads();
    Rank r = {(u32)__popc(bits & ((1u << lane) - 1u)), 0};
    for (u32 i = 0; i < warps; i++) {
        if (i < warp) r.before += s_warp[i];
        r.total += s_warp[i];
    }
    return r;
}

template <int DT>
__device__ void index_topk(IndexTopkParams p, const float* q, const float* w, const void* k_cache,
                           const u32* block_tables, const u32* token_seq, const u32* positions, float* scores,
                           u32* out) {
    __shared__ float s_sum[32];
    __shared__ u32 s_warp[TOPK_MAX_WARPS];
    const u32 t = blockIdx.x;
    if (t >= p.tokens) return;
    const u32 lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    const u32 pos = positions[t];
    u32* orow = out + (size_t)t * p.top_k;
    if (pos < p.top_k) {
        for (u32 i = threadIdx.x; i < p.top_k; i += blockDim.x) orow[i] = i <= pos ? i : NO_POSITION;
        return;
    }
    float* row = scores + (size_t)t * p.score_stride;
    const u32 s = token_seq[t], d = p.head_dim;
    // 1. scores, a warp per position
    for (u32 j = warp; j <= pos; j += warps) {
        const u32 slot = block_tables[(size_t)s * p.max_blocks + j / p.block_size] * p.block_size + j % p.block_size;
        float score = 0.0f;
        for (u32 h = 0; h < p.heads; h++) {
            const float* qrow = q + ((size_t)t * p.heads + h) * d;
            float dot = 0.0f;
            if (slot < p.num_slots)
                for (u32 e = lane; e < d; e += 32) dot += qrow[e] * load_cache<DT>(k_cache, (size_t)slot * d + e);
            score += w[(size_t)t * p.heads + h] * fmaxf(warp_sum(dot), 0.0f);
        }
        if (lane == 0) row[j] = score;
    }
    __syncthreads();
    // 2. the largest key with at least top_k keys >= it: the top_k-th best
    u32 threshold = 0;
    for (int bit = 31; bit >= 0; bit--) {
        const u32 candidate = threshold | (1u << bit);
        if (count_at_least(row, pos, candidate, s_sum) >= p.top_k) threshold = candidate;
    }
    const u32 above = threshold == 0xffffffffu ? 0 : count_at_least(row, pos, threshold + 1, s_sum);
    const u32 ties = p.top_k - above;  // keys == threshold taken, earliest first
    // 3. the chosen positions, in order
    u32 written = 0, equal_seen = 0;
    for (u32 c0 = 0; c0 <= pos; c0 += blockDim.x) {
        const u32 j = c0 + threadIdx.x;
        const u32 key = j <= pos ? float_key(row[j]) : 0;
        const bool is_above = j <= pos && key > threshold, is_equal = j <= pos && key == threshold;
        const Rank equal = block_rank(is_equal, s_warp);
        const bool take = is_above || (is_equal && equal_seen + equal.before < ties);
        const Rank taken = block_rank(take, s_warp);
        if (take) orow[written + taken.before] = j;
        written += taken.total;
        equal_seen += equal.total;
    }
}

#define INDEX_TOPK(NAME, DT)                                                                                  \
    extern "C" __global__ void index_topk_##NAME(IndexTopkParams p, const float* q, const float* w,          \
                                                 const void* k_cache, const u32* block_tables,               \
                                                 const u32* token_seq, const u32* positions, float* scores,  \
                                                 u32* out) {                                                 \
        index_topk<DT>(p, q, w, k_cache, block_tables, token_seq, positions, scores, out);                  \
    }

INDEX_TOPK(f32, DT_F32)
INDEX_TOPK(f16, DT_F16)
INDEX_TOPK(bf16, DT_BF16)
INDEX_TOPK(fp8, DT_F8E4M3)
