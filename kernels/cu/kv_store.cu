// kv_store: cache[slots[t], :] = src[t, :], in place, rounded to the cache's
// dtype. See engine/src/ops/kv_store.rs. One kernel per cache dtype:
// kv_store_f32, _f16, _bf16 (round to nearest even) and _fp8 (E4M3, round to
// nearest even, saturating at +-448), the conversions of common.cuh.
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

template <int DT>
__device__ void kv_store(KvStoreParams p, const float* src, const u32* slots, void* cache) {
    const u64 n = (u64)p.tokens * p.row;
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (u64)gridDim.x * blockDim.x) {
        const u32 t = (u32)(i / p.row), e = (u32)(i % p.row);
        const u32 slot = slots[t];
        if (slot < p.num_slots) store_cache<DT>(cache, (u64)slot * p.row + e, src[i]);
    }
}

#define KV_STORE(NAME, DT)                                                                                   \
    extern "C" __global__ void kv_store_##NAME(KvStoreParams p, const float* src, const u32* slots,         \
                                               void* cache) {                                               \
        kv_store<DT>(p, src, slots, cache);                                                                 \
    }

KV_STORE(f32, DT_F32)
KV_STORE(f16, DT_F16)
KV_STORE(bf16, DT_BF16)
KV_STORE(fp8, DT_F8E4M3)
