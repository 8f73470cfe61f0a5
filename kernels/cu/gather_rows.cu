// gather_rows: out[i, :] = f32(table[ids[i], :]). See engine/src/ops/gather_rows.rs.
// Grid: (n, ceil(cols / blockDim.x)); one thread per output element.
#include "common.cuh"

// Mirrored by `GatherRowsParams` in backend-cuda/src/ops/mod.rs.
struct GatherRowsParams {
    u32 n;     // ids
    u32 cols;
    u32 rows;  // of the table; ids were checked on the host, this is a belt
    u32 _pad;
};

template <int DT>
__device__ void gather_rows(GatherRowsParams p, const void* table, const u32* ids, float* out) {
    const u32 i = blockIdx.x;
    const u32 c = blockIdx.y * blockDim.x + threadIdx.x;
    if (i >= p.n || c >= p.cols) return;
    const u32 id = ids[i];
    if (id >= p.rows) return;
    out[(size_t)i * p.cols + c] = load_w<DT>(table, (size_t)id * p.cols + c);
}

extern "C" __global__ void gather_rows_f32(GatherRowsParams p, const void* t, const u32* ids, float* out) {
    gather_rows<DT_F32>(p, t, ids, out);
}
extern "C" __global__ void gather_rows_f16(GatherRowsParams p, const void* t, const u32* ids, float* out) {
    gather_rows<DT_F16>(p, t, ids, out);
}
extern "C" __global__ void gather_rows_bf16(GatherRowsParams p, const void* t, const u32* ids, float* out) {
    gather_rows<DT_BF16>(p, t, ids, out);
}
