// kv_store: cache[slots[t], :] = src[t, :], in place. See engine/src/ops/kv_store.rs.
// Grid-stride over the T * row elements of src. Slots were checked on the host
// (in range, distinct); the range test here is a belt.
#include "common.cuh"

// Mirrored by `KvStoreParams` in backend-cuda/src/ops/mod.rs.
struct KvStoreParams {
    u32 tokens;
    u32 row;  // kv_heads * head_dim
    u32 num_slots;
    u32 _pad;
};

extern "C" __global__ void kv_store(KvStoreParams p, const float* src, const u32* slots, float* cache) {
    const u64 n = (u64)p.tokens * p.row;
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (u64)gridDim.x * blockDim.x) {
        const u32 t = (u32)(i / p.row), e = (u32)(i % p.row);
        const u32 slot = slots[t];
        if (slot < p.num_slots) cache[(u64)slot * p.row + e] = src[i];
    }
}
