// concat: out[r, :m] = a[r, :], out[r, m:] = b[r, :] for a [rows, m] and
// b [rows, n]. See engine/src/ops/concat.rs. Grid-stride loop over out.
#include "common.cuh"

// Mirrored by `ConcatParams` in backend-cuda/src/ops/mod.rs.
struct ConcatParams {
    u64 rows;
    u32 m;
    u32 n;
};

extern "C" __global__ void concat(ConcatParams p, const float* a, const float* b, float* out) {
    const u64 w = (u64)p.m + p.n;
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < p.rows * w; i += (u64)gridDim.x * blockDim.x) {
        const u64 r = i / w, c = i % w;
        out[i] = c < p.m ? a[r * p.m + c] : b[r * p.n + (c - p.m)];
    }
}
