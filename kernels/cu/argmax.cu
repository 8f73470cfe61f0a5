// argmax: out[r] = the lowest index of the largest value of row r; NaN is
// never chosen, -0 and +0 tie, an all-NaN row gives 0. See
// engine/src/ops/argmax.rs.
// Grid: (rows); block: 256 threads striding over the row, then a reduction
// of (key, index) pairs: each value becomes a u32 key that orders like the
// floats (NaN -> 0, below -inf's 0x007fffff), and a pair beats another with
// a larger key, or the same key and a smaller index. The order is total, so
// the shape of the reduction does not change the answer.
#include "common.cuh"

// Mirrored by `ArgmaxParams` in backend-cuda/src/ops/mod.rs.
struct ArgmaxParams {
    u32 rows;
    u32 cols;
};

// The index of "no value yet": it loses every tie.
#define ARGMAX_NONE 0xffffffffu

// Whether (bk, bi) beats (ak, ai).
__device__ __forceinline__ bool argmax_beats(u32 bk, u32 bi, u32 ak, u32 ai) {
    return bk > ak || (bk == ak && bi < ai);
}

// Every lane of the warp ends with the warp's best pair.
__device__ __forceinline__ void warp_argmax(u32& k, u32& i) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        const u32 ok = __shfl_xor_sync(FULL_MASK, k, o);
        const u32 oi = __shfl_xor_sync(FULL_MASK, i, o);
        if (argmax_beats(ok, oi, k, i)) {
            k = ok;
            i = oi;
        }
    }
}

extern "C" __global__ void argmax(ArgmaxParams p, const float* x, u32* out) {
    __shared__ u32 keys[32];
    __shared__ u32 idxs[32];
    const u32 r = blockIdx.x;
    if (r >= p.rows) return;
    const float* xr = x + (size_t)r * p.cols;
    u32 best_k = 0u, best_i = ARGMAX_NONE;
    for (u32 c = threadIdx.x; c < p.cols; c += blockDim.x) {
        const u32 k = float_key(xr[c]);
        if (argmax_beats(k, c, best_k, best_i)) {
            best_k = k;
            best_i = c;
        }
    }
    // blockDim.x is a multiple of 32, at most 1024: every warp is full
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int warps = blockDim.x >> 5;
    warp_argmax(best_k, best_i);
    if (lane == 0) {
        keys[warp] = best_k;
        idxs[warp] = best_i;
    }
    __syncthreads();
    if (warp == 0) {
        best_k = lane < warps ? keys[lane] : 0u;
        best_i = lane < warps ? idxs[lane] : ARGMAX_NONE;
        warp_argmax(best_k, best_i);
        // cols >= 1 (the shape rule): thread 0 saw column 0, so never NONE
        if (lane == 0) out[r] = best_i;
    }
}
