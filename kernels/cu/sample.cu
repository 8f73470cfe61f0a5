// sample: out[r] = the column of row r drawn from softmax(x / t) by inverse
// CDF in column order, with t = temperature[r] and u = uniform[r] clamped
// into [0, 1]; t not a finite positive number, or a row with no finite max
// of x / t, gives the argmax; NaN has weight 0. See engine/src/ops/sample.rs.
// Grid: (rows); block: SAMPLE_THREADS (256) threads.
//
// NaN and the infinities are told by their bits; maxima are taken over u32
// keys that order like the floats (NaN -> 0, below -inf), as in argmax.cu.
//
// Sampling: m = the max of x / t (an atomicMax of keys); each thread owns a
// contiguous segment of the row and sums its weights w = expf(x / t - m);
// thread 0 scans the 256 segment sums sequentially into offsets, so the
// running sum is offsets[i] + (the segment's own running sum), which ends at
// exactly offsets[i + 1] (the same f32 additions): the CDF is monotone across
// segments and the one thread with offsets[i] <= u * Z < offsets[i + 1] holds
// the first crossing. When there is none (u * Z at the very top, or u NaN)
// the answer is the last column of weight > 0.
#include "common.cuh"

// Mirrored by `SampleParams` in backend-cuda/src/ops/mod.rs.
struct SampleParams {
    u32 rows;
    u32 cols;
};

// The block size the shared arrays are sized for (the launch uses it).
#define SAMPLE_THREADS 256
// No column (yet): loses every min.
#define SAMPLE_NONE 0xffffffffu
#define SAMPLE_POS_INF 0x7f800000u
// Keys of -inf and +inf: a max key strictly between them is a finite max.
#define SAMPLE_KEY_NEG_INF 0x007fffffu
#define SAMPLE_KEY_POS_INF 0xff800000u

__device__ __forceinline__ bool sample_is_nan(u32 bits) { return (bits & 0x7fffffffu) > SAMPLE_POS_INF; }

// The float of a key that is not 0 (-0 comes back as +0).
__device__ __forceinline__ float sample_float_of_key(u32 key) {
    return __uint_as_float(key >= 0x80000000u ? key & 0x7fffffffu : ~key);
}

// expf(v / t - m), 0 for NaN (and for -inf, as expf(-inf) is).
__device__ __forceinline__ float sample_weight(float v, float t, float m) {
    if (sample_is_nan(__float_as_uint(v))) return 0.0f;
    return expf(v / t - m);
}

extern "C" __global__ void sample(SampleParams p, const float* x, const float* temperature, const float* uniform,
                                  u32* out) {
    __shared__ float offsets[SAMPLE_THREADS + 1];  // segment sums, scanned in place
    __shared__ u32 m_key;     // max key of x / t
    __shared__ u32 best_key;  // argmax: the max key of x
    __shared__ u32 best_idx;  // argmax: its lowest column
    __shared__ u32 found;     // the first column past u * Z
    __shared__ u32 last_pos;  // 1 + the last column of weight > 0; 0: none
    const u32 r = blockIdx.x;
    if (r >= p.rows) return;
    const u32 tid = threadIdx.x;
    const float* xr = x + (size_t)r * p.cols;
    if (tid == 0) {
        m_key = 0u;
        best_key = 0u;
        best_idx = SAMPLE_NONE;
        found = SAMPLE_NONE;
        last_pos = 0u;
    }
    __syncthreads();

    const float t = temperature[r];
    const u32 t_bits = __float_as_uint(t);
    // finite and > 0: sign clear, not +0, exponent not all ones
    if (t_bits != 0u && t_bits < SAMPLE_POS_INF) {
        u32 local_key = 0u;
        for (u32 c = tid; c < p.cols; c += SAMPLE_THREADS) {
            const float v = xr[c];
            if (!sample_is_nan(__float_as_uint(v))) local_key = max(local_key, float_key(v / t));
        }
        atomicMax(&m_key, local_key);
        __syncthreads();
        const u32 mk = m_key;  // the same in every thread: the branch is uniform
        if (mk > SAMPLE_KEY_NEG_INF && mk < SAMPLE_KEY_POS_INF) {
            const float m = sample_float_of_key(mk);
            // pass A: this thread's segment [begin, end)
            const u32 seg = (p.cols + SAMPLE_THREADS - 1) / SAMPLE_THREADS;
            const u32 begin = min(tid * seg, p.cols);
            const u32 end = min(begin + seg, p.cols);
            float s = 0.0f;
            u32 last = 0u;
            for (u32 c = begin; c < end; ++c) {
                const float w = sample_weight(xr[c], t, m);
                s += w;
                if (w > 0.0f) last = c + 1;
            }
            offsets[tid + 1] = s;
            atomicMax(&last_pos, last);
            __syncthreads();
            if (tid == 0) {
                float acc = 0.0f;
                offsets[0] = 0.0f;
                for (int i = 1; i <= SAMPLE_THREADS; ++i) {
                    acc += offsets[i];
                    offsets[i] = acc;
                }
            }
            __syncthreads();
            // pass B: u clamped into [0, 1] by its bits; NaN finds no column
            const u32 u_bits = __float_as_uint(uniform[r]);
            if (!sample_is_nan(u_bits)) {
                float u = __uint_as_float(u_bits);
                if (u_bits & 0x80000000u) {
                    u = 0.0f;  // negative, -0 or -inf
                } else if (u_bits >= 0x3f800000u) {
                    u = 1.0f;  // 1 or more, +inf
                }
                const float goal = u * offsets[SAMPLE_THREADS];
                const float lo = offsets[tid];
                if (lo <= goal && goal < offsets[tid + 1]) {
                    float run = 0.0f;
                    for (u32 c = begin; c < end; ++c) {
                        run += sample_weight(xr[c], t, m);
                        if (lo + run > goal) {
                            atomicMin(&found, c);
                            break;
                        }
                    }
                }
            }
            __syncthreads();
            if (tid == 0) {
                // m is finite, so its column has weight 1: last_pos > 0
                out[r] = found != SAMPLE_NONE ? found : max(last_pos, 1u) - 1u;
            }
            return;
        }
    }

    // the argmax of x: each thread's best (key, lowest column), then the max
    // key, then the lowest column among the threads that hold it
    u32 bk = 0u, bi = SAMPLE_NONE;
    for (u32 c = tid; c < p.cols; c += SAMPLE_THREADS) {
        const u32 k = float_key(xr[c]);
        if (k > bk || (k == bk && c < bi)) {
            bk = k;
            bi = c;
        }
    }
    atomicMax(&best_key, bk);
    __syncthreads();
    if (bk == best_key) atomicMin(&best_idx, bi);
    __syncthreads();
    // cols >= 1 (the shape rule), so thread 0 saw column 0: never NONE
    if (tid == 0) out[r] = best_idx;
}
