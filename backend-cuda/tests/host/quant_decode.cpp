// quant_decode.cpp: kernels/cu/quant.cuh and quant_ggml.cuh compiled for the
// host, so the CUDA decoders can be checked against the CPU reference without
// a GPU (by the test `quant_cuh_decodes_like_the_reference_on_the_host` in
// backend-cuda/src/ops/matmul.rs, which pastes the headers in place of their
// include lines, as ferrum_kernels::program does for NVRTC).
//
// Usage: quant_decode <fmt> <params.bin> <codes.bin> <scales.bin> <out.bin>
// params.bin is the 48-byte QuantMatmulParams; out.bin gets n*k f32 decoded
// element by element by the format's reader (`w(row, col)`, the path of the
// tiled and dequant kernels), then n*k f32 decoded a chunk at a time
// (`w.chunk`, the GEMV's `vec` path; zeros unless vec).
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

typedef unsigned int u32;
typedef unsigned short u16;
typedef unsigned long long u64;

static inline float __uint_as_float(u32 u) {
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}

// the device's unfused, round-to-nearest operations (built with
// -ffp-contract=off, so the host never fuses either)
static inline float __fmul_rn(float a, float b) { return a * b; }
static inline float __fadd_rn(float a, float b) { return a + b; }
static inline float __fsub_rn(float a, float b) { return a - b; }

struct alignas(16) uint4 {
    u32 x, y, z, w;
};

// free functions and the readers' member functions alike
#define QDEV inline

#include "quant.cuh"
#include "quant_ggml.cuh"

static std::vector<char> slurp(const char* path) {
    FILE* f = std::fopen(path, "rb");
    if (!f) { std::perror(path); std::exit(2); }
    std::vector<char> data;
    char buf[65536];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) data.insert(data.end(), buf, buf + n);
    std::fclose(f);
    return data;
}

template <class W>
static void decode(const QuantMatmulParams& p, const u32* codes, const u32* scales, float* elem, float* chunk) {
    const W w = {p, codes, scales};
    for (u32 r = 0; r < p.n; r++)
        for (u32 i = 0; i < p.k; i++) elem[(size_t)r * p.k + i] = w(r, i);
    if (!p.vec) return;
    for (u32 r = 0; r < p.n; r++)
        for (u32 c = 0; c < p.k / W::CHUNK; c++) w.chunk(r, c, chunk + (size_t)r * p.k + (size_t)c * W::CHUNK);
}

int main(int argc, char** argv) {
    if (argc != 6) { std::fprintf(stderr, "usage: %s fmt params codes scales out\n", argv[0]); return 2; }
    const int fmt = std::atoi(argv[1]);
    std::vector<char> pb = slurp(argv[2]), cb = slurp(argv[3]), sb = slurp(argv[4]);
    if (pb.size() != sizeof(QuantMatmulParams)) { std::fprintf(stderr, "params: %zu bytes\n", pb.size()); return 2; }
    QuantMatmulParams p;
    std::memcpy(&p, pb.data(), sizeof p);
    // 16-byte aligned (operator new), as the chunk readers' uint4 loads need
    std::vector<u32> codes(cb.size() / 4), scales(sb.size() / 4 + 1);
    std::memcpy(codes.data(), cb.data(), cb.size());
    std::memcpy(scales.data(), sb.data(), sb.size());
    std::vector<float> out(2 * (size_t)p.n * p.k, 0.0f);
    float *elem = out.data(), *chunk = out.data() + (size_t)p.n * p.k;
    const u32 *c = codes.data(), *s = scales.data();
    switch (fmt) {
        case QFMT_NVFP4_MODELOPT: decode<QuantW<QFMT_NVFP4_MODELOPT>>(p, c, s, elem, chunk); break;
        case QFMT_NVFP4_CT: decode<QuantW<QFMT_NVFP4_CT>>(p, c, s, elem, chunk); break;
        case QFMT_MXFP4: decode<QuantW<QFMT_MXFP4>>(p, c, s, elem, chunk); break;
        case QFMT_FP8: decode<QuantW<QFMT_FP8>>(p, c, s, elem, chunk); break;
        case QFMT_INT8: decode<QuantW<QFMT_INT8>>(p, c, s, elem, chunk); break;
        case QFMT_INT4: decode<QuantW<QFMT_INT4>>(p, c, s, elem, chunk); break;
        case QFMT_Q4_0: decode<GgmlW<QFMT_Q4_0>>(p, c, s, elem, chunk); break;
        case QFMT_Q4_1: decode<GgmlW<QFMT_Q4_1>>(p, c, s, elem, chunk); break;
        case QFMT_Q5_0: decode<GgmlW<QFMT_Q5_0>>(p, c, s, elem, chunk); break;
        case QFMT_Q5_1: decode<GgmlW<QFMT_Q5_1>>(p, c, s, elem, chunk); break;
        case QFMT_Q8_0: decode<GgmlW<QFMT_Q8_0>>(p, c, s, elem, chunk); break;
        case QFMT_Q2_K: decode<GgmlW<QFMT_Q2_K>>(p, c, s, elem, chunk); break;
        case QFMT_Q3_K: decode<GgmlW<QFMT_Q3_K>>(p, c, s, elem, chunk); break;
        case QFMT_Q4_K: decode<GgmlW<QFMT_Q4_K>>(p, c, s, elem, chunk); break;
        case QFMT_Q5_K: decode<GgmlW<QFMT_Q5_K>>(p, c, s, elem, chunk); break;
        case QFMT_Q6_K: decode<GgmlW<QFMT_Q6_K>>(p, c, s, elem, chunk); break;
        default: std::fprintf(stderr, "unknown format %d\n", fmt); return 2;
    }
    FILE* f = std::fopen(argv[5], "wb");
    if (!f || std::fwrite(out.data(), 4, out.size(), f) != out.size()) { std::perror(argv[5]); return 2; }
    std::fclose(f);
    return 0;
}
