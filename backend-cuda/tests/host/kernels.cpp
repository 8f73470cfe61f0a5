// kernels.cpp: kernels/cu/moe_route.cu, moe_matmul.cu, moe_combine.cu,
// attention.cu, index_topk.cu, kv_store.cu and glu.cu (with common.cuh, quant.cuh,
// quant_ggml.cuh and gemv.cuh) run on the host, so their indexing, scans,
// reductions and conversions are checked against the CPU reference without
// a GPU (by the tests in backend-cuda/src/ops/on_host.rs, which paste the
// files in place of their include lines).
//
// A small CUDA shim: each thread of a block is a std::thread, blocks run one
// after another (so `__shared__` can be `static`; a block's threads must
// all reach the same barriers, as on the GPU), __syncthreads and
// __syncwarp are barriers, shuffles and ballots go through a shared slot per
// thread between two warp barriers. f16 weights are not run: common.cuh
// widens them with a PTX instruction (f16 KV caches are: without
// __CUDA_ARCH__, common.cuh's cache conversions take their `_soft` twins).
//
// Usage: kernels <kernel> <grid x> <grid y> <block> <out floats> <params.bin>
//        <input.bin>... <out.bin>
// The inputs are the kernel's pointer arguments in order (an unused one may
// be any non-empty file); out.bin gets the output buffer, as f32, which
// starts as the NaN 0x7fc0dead in every element so a missed write shows.
// kv_store_<dtype> updates its output in place: it starts as the input after
// src and slots, the cache's old contents (out floats * 4 bytes of it).
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

typedef unsigned int u32;
typedef unsigned short u16;
typedef unsigned long long u64;

#define __device__
#define __forceinline__ inline
#define __global__
#define __shared__ static
// common.cuh's f16 widening is PTX: stop if it is ever reached
#define asm(...) std::abort()

struct dim3 {
    u32 x, y, z;
};
static thread_local dim3 threadIdx, blockIdx;
static dim3 blockDim, gridDim;

struct alignas(16) uint4 {
    u32 x, y, z, w;
};
struct alignas(16) float4 {
    float x, y, z, w;
};

struct Barrier {
    std::mutex m;
    std::condition_variable cv;
    u32 n = 0, waiting = 0, generation = 0;
    void wait() {
        std::unique_lock<std::mutex> lock(m);
        const u32 g = generation;
        if (++waiting == n) {
            waiting = 0;
            generation++;
            cv.notify_all();
        } else {
            cv.wait(lock, [&] { return generation != g; });
        }
    }
};
static Barrier block_barrier, warp_barriers[32];
static u64 slots[1024];  // one per thread, for shuffles and ballots

static void __syncthreads() { block_barrier.wait(); }
static void __syncwarp(u32 = 0xffffffffu) { warp_barriers[threadIdx.x >> 5].wait(); }

template <class T>
static T shfl_from(T v, u32 lane) {
    u64 bits = 0;
    std::memcpy(&bits, &v, sizeof v);
    slots[threadIdx.x] = bits;
    __syncwarp();
    bits = slots[(threadIdx.x & ~31u) + (lane & 31u)];
    __syncwarp();
    std::memcpy(&v, &bits, sizeof v);
    return v;
}
template <class T>
static T __shfl_xor_sync(u32, T v, int o) { return shfl_from(v, (threadIdx.x & 31u) ^ (u32)o); }
template <class T>
static T __shfl_sync(u32, T v, int lane) { return shfl_from(v, (u32)lane); }
static u32 __ballot_sync(u32, int pred) {
    slots[threadIdx.x] = pred != 0;
    __syncwarp();
    u32 r = 0;
    for (u32 l = 0; l < 32; l++) r |= (u32)slots[(threadIdx.x & ~31u) + l] << l;
    __syncwarp();
    return r;
}
static int __popc(u32 v) { return __builtin_popcount(v); }

static float __uint_as_float(u32 u) {
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}
static float __int_as_float(int i) { return __uint_as_float((u32)i); }
static u32 __float_as_uint(float f) {
    u32 u;
    std::memcpy(&u, &f, 4);
    return u;
}
// the device's unfused, round-to-nearest operations (built with
// -ffp-contract=off, so the host never fuses either)
static float __fmul_rn(float a, float b) { return a * b; }
static float __fadd_rn(float a, float b) { return a + b; }
static float __fsub_rn(float a, float b) { return a - b; }
template <class T>
static T min(T a, T b) { return a < b ? a : b; }

#include "common.cuh"
#include "quant.cuh"
#include "quant_ggml.cuh"
#include "gemv.cuh"
#include "moe_route.cu"
#include "moe_matmul.cu"
#include "moe_combine.cu"
#include "attention.cu"
#include "index_topk.cu"
#include "kv_store.cu"
#include "glu.cu"

// Runs `body` as every thread of every block of the grid: a std::thread per
// thread of a block, going through the blocks together.
template <class F>
static void launch(u32 gx, u32 gy, u32 block, F body) {
    if (block == 0 || block % 32 || block > 1024) { std::fprintf(stderr, "block %u\n", block); std::exit(2); }
    gridDim = {gx, gy, 1};
    blockDim = {block, 1, 1};
    block_barrier.n = block;
    for (auto& w : warp_barriers) w.n = 32;
    std::vector<std::thread> threads;
    for (u32 t = 0; t < block; t++)
        threads.emplace_back([=] {
            threadIdx = {t, 0, 0};
            for (u32 y = 0; y < gy; y++)
                for (u32 x = 0; x < gx; x++) {
                    blockIdx = {x, y, 0};
                    body();
                    __syncthreads();  // the block's shared memory is the next block's
                }
        });
    for (auto& t : threads) t.join();
}

static std::vector<u32> slurp(const char* path) {
    FILE* f = std::fopen(path, "rb");
    if (!f) { std::perror(path); std::exit(2); }
    std::vector<char> data;
    char buf[65536];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) data.insert(data.end(), buf, buf + n);
    std::fclose(f);
    // whole words, 16-byte aligned (operator new), as the chunk readers' loads need
    std::vector<u32> words((data.size() + 3) / 4 + 1, 0u);
    std::memcpy(words.data(), data.data(), data.size());
    return words;
}

int main(int argc, char** argv) {
    if (argc < 8) { std::fprintf(stderr, "usage: %s kernel gx gy block out_floats params inputs... out\n", argv[0]); return 2; }
    const std::string name = argv[1];
    const u32 gx = (u32)std::atol(argv[2]), gy = (u32)std::atol(argv[3]), block = (u32)std::atol(argv[4]);
    std::vector<float> out((size_t)std::atol(argv[5]), __uint_as_float(0x7fc0deadu));
    const std::vector<u32> params = slurp(argv[6]);
    std::vector<std::vector<u32>> in;
    for (int i = 7; i < argc - 1; i++) in.push_back(slurp(argv[i]));
    auto f = [&](size_t i) { return (const float*)in.at(i).data(); };
    auto u = [&](size_t i) { return (const u32*)in.at(i).data(); };
    float* o = out.data();
    bool found = false;
    auto run = [&](auto body) {
        found = true;
        launch(gx, gy, block, body);
    };
#define PARAMS(T) ([&] { T p; std::memcpy(&p, params.data(), sizeof p); return p; }())
    if (name == "moe_route") {
        const MoeRouteParams p = PARAMS(MoeRouteParams);
        run([&] { moe_route(p, f(0), f(1), o); });
    }
    if (name == "moe_combine") {
        const MoeCombineParams p = PARAMS(MoeCombineParams);
        run([&] { moe_combine(p, f(0), f(1), o); });
    }
    // without sinks the backend passes null: so does the harness, so a read shows
#define CACHE_CASE(NAME)                                                                                   \
    if (name == "attention_" #NAME) {                                                                      \
        const AttentionParams p = PARAMS(AttentionParams);                                                 \
        const float* sinks = p.has_sinks ? f(6) : nullptr;                                                 \
        const u32* selected = p.n_selected ? u(7) : nullptr;                                               \
        run([&] { attention_##NAME(p, f(0), u(1), u(2), u(3), u(4), u(5), sinks, selected, o); });         \
    }                                                                                                      \
    /* index_topk's u32 positions come back in the f32 output's bits */                                   \
    if (name == "index_topk_" #NAME) {                                                                     \
        const IndexTopkParams p = PARAMS(IndexTopkParams);                                                 \
        float* scores = (float*)in.at(6).data();                                                           \
        run([&] { index_topk_##NAME(p, f(0), f(1), u(2), u(3), u(4), u(5), scores, (u32*)o); });          \
    }                                                                                                      \
    if (name == "kv_store_" #NAME) {                                                                       \
        const KvStoreParams p = PARAMS(KvStoreParams);                                                     \
        if (in.at(2).size() < out.size()) { std::fprintf(stderr, "kv_store: short cache\n"); return 2; }   \
        std::memcpy(o, in.at(2).data(), out.size() * 4);                                                   \
        run([&] { kv_store_##NAME(p, f(0), u(1), o); });                                                   \
    }
    CACHE_CASE(f32)
    CACHE_CASE(f16)
    CACHE_CASE(bf16)
    CACHE_CASE(fp8)
    if (name == "glu") {
        const GluParams p = PARAMS(GluParams);
        run([&] { glu(p, f(0), f(1), o); });
    }
#define FLOAT_CASE(NAME)                                                                   \
    if (name == "moe_matmul_" #NAME) {                                                     \
        const MoeMatmulParams p = PARAMS(MoeMatmulParams);                                 \
        run([&] { moe_matmul_##NAME(p, f(0), in.at(1).data(), f(2), f(3), f(4), o); });    \
    }
#define QUANT_CASE(NAME)                                                                   \
    if (name == "moe_matmul_" #NAME) {                                                     \
        const MoeQuantParams p = PARAMS(MoeQuantParams);                                   \
        run([&] { moe_matmul_##NAME(p, f(0), u(1), u(2), f(3), f(4), f(5), o); });         \
    }
    FLOAT_CASE(f32)
    FLOAT_CASE(bf16)
    QUANT_CASE(nvfp4)
    QUANT_CASE(nvfp4_ct)
    QUANT_CASE(mxfp4)
    QUANT_CASE(fp8)
    QUANT_CASE(int8)
    QUANT_CASE(int4)
    QUANT_CASE(q4_0)
    QUANT_CASE(q4_1)
    QUANT_CASE(q5_0)
    QUANT_CASE(q5_1)
    QUANT_CASE(q8_0)
    QUANT_CASE(q2_k)
    QUANT_CASE(q3_k)
    QUANT_CASE(q4_k)
    QUANT_CASE(q5_k)
    QUANT_CASE(q6_k)
    if (!found) { std::fprintf(stderr, "unknown kernel %s\n", name.c_str()); return 2; }
    FILE* fo = std::fopen(argv[argc - 1], "wb");
    if (!fo || std::fwrite(out.data(), 4, out.size(), fo) != out.size()) { std::perror(argv[argc - 1]); return 2; }
    std::fclose(fo);
    return 0;
}
