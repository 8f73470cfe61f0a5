// gather_rows: out[i, :] = f32(table[ids[i], :]). See engine/src/ops/gather_rows.rs.
// The table is read through the weight readers of matmul.cu, element by
// element: FloatW widens f32/f16/bf16 (gather_rows_f32, _f16, _bf16);
// QuantW and GgmlW decode every quantized format (gather_rows_<q>, with the
// suffixes of matmul.cu: nvfp4 .. int4, q4_0 .. q6_k).
// Grid: (n, ceil(cols / blockDim.x)); one thread per output element.
#include "common.cuh"
#include "quant.cuh"
#include "quant_ggml.cuh"

// Mirrored by `GatherRowsParams` in backend-cuda/src/ops/gather_rows.rs.
struct GatherRowsParams {
    u32 n;     // ids
    u32 cols;
    u32 rows;  // of the table; ids were checked on the host, this is a belt
    u32 _pad;
};

template <class W>
__device__ void gather_rows(u32 n, u32 cols, u32 rows, W table, const u32* ids, float* out) {
    const u32 i = blockIdx.x;
    const u32 c = blockIdx.y * blockDim.x + threadIdx.x;
    if (i >= n || c >= cols) return;
    const u32 id = ids[i];
    if (id >= rows) return;
    out[(size_t)i * cols + c] = table(id, c);
}

#define FLOAT_GATHER(NAME, DT)                                                                                 \
    extern "C" __global__ void gather_rows_##NAME(GatherRowsParams p, const void* t, const u32* ids,          \
                                                  float* out) {                                                \
        FloatW<DT> table = {t, p.cols};                                                                        \
        gather_rows(p.n, p.cols, p.rows, table, ids, out);                                                     \
    }

FLOAT_GATHER(f32, DT_F32)
FLOAT_GATHER(f16, DT_F16)
FLOAT_GATHER(bf16, DT_BF16)

// A quantized table [rows, cols] takes matmul's params, as a weight [n, k]
// with one "row of x" per id: m = ids, n = table rows, k = cols.
#define QUANT_GATHER(NAME, W)                                                                                  \
    extern "C" __global__ void gather_rows_##NAME(QuantMatmulParams p, const u32* codes, const u32* scales,    \
                                                  const u32* ids, float* out) {                                \
        W table = {p, codes, scales};                                                                          \
        gather_rows(p.m, p.k, p.n, table, ids, out);                                                           \
    }

QUANT_GATHER(nvfp4, QuantW<QFMT_NVFP4_MODELOPT>)
QUANT_GATHER(nvfp4_ct, QuantW<QFMT_NVFP4_CT>)
QUANT_GATHER(mxfp4, QuantW<QFMT_MXFP4>)
QUANT_GATHER(fp8, QuantW<QFMT_FP8>)
QUANT_GATHER(int8, QuantW<QFMT_INT8>)
QUANT_GATHER(int4, QuantW<QFMT_INT4>)
QUANT_GATHER(q4_0, GgmlW<QFMT_Q4_0>)
QUANT_GATHER(q4_1, GgmlW<QFMT_Q4_1>)
QUANT_GATHER(q5_0, GgmlW<QFMT_Q5_0>)
QUANT_GATHER(q5_1, GgmlW<QFMT_Q5_1>)
QUANT_GATHER(q8_0, GgmlW<QFMT_Q8_0>)
QUANT_GATHER(q2_k, GgmlW<QFMT_Q2_K>)
QUANT_GATHER(q3_k, GgmlW<QFMT_Q3_K>)
QUANT_GATHER(q4_k, GgmlW<QFMT_Q4_K>)
QUANT_GATHER(q5_k, GgmlW<QFMT_Q5_K>)
QUANT_GATHER(q6_k, GgmlW<QFMT_Q6_K>)
