// matmul: out[m, n] = sum_k x[m, k] * w[n, k] (+ bias[n]), accumulated in f32
// (engine/src/ops/matmul.rs). The weight is bound as u32 words whatever its
// dtype (W_DTYPE): f32 bits, or two f16/bf16 halves per word, low half first.
// A dispatch covers a window of x/out rows and a window of w rows (= out
// columns n0..n0+nw); *_base is where a window starts in its binding.
// shaders/f16/matmul.wgsl is the same with `enable f16;`.
//
// Entry points: `gemv` (m <= 8, decode): a workgroup per weight row reads it
// once, coalesced, for all m rows of x. `tiled` (prefill): each invocation
// computes a 4x4 block of out from registers, no shared memory or barriers.

struct Params {      // MatmulParams in backend-wgpu/src/ops/matmul.rs
    m: u32,          // x/out rows in this window
    k: u32,
    n: u32,          // out columns (all rows of w)
    n0: u32,         // first w row of this window
    nw: u32,         // w rows in this window
    x_base: u32,
    w_base: u32,     // in elements of w's dtype
    out_base: u32,
    has_bias: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

// 0: f32, 1: f16, 2: bf16
override W_DTYPE: u32 = 0u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<u32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

fn load_w(i: u32) -> f32 {
    if (W_DTYPE == 0u) {
        return bitcast<f32>(w[i]);
    }
    let word = w[i >> 1u];
    let high = (i & 1u) == 1u;
    if (W_DTYPE == 1u) {
        let pair = unpack2x16float(word);
        return select(pair.x, pair.y, high);
    }
    // bf16 is the top half of an f32: widen with a shift
    return bitcast<f32>(select(word << 16u, word & 0xffff0000u, high));
}

fn bias_at(col: u32) -> f32 {
    if (p.has_bias == 1u) {
        return bias[col];
    }
    return 0.0;
}

const GEMV_WG: u32 = 64u;
const GEMV_M: u32 = 8u;
var<workgroup> partial: array<array<f32, GEMV_WG>, GEMV_M>;

@compute @workgroup_size(GEMV_WG)
fn gemv(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let r = wid.x + wid.y * nwg.x; // w row within the window
    if (r >= p.nw) {
        return;
    }
    let w_row = p.w_base + r * p.k;
    var acc: array<f32, GEMV_M>;
    for (var kk = lid; kk < p.k; kk += GEMV_WG) {
        let wv = load_w(w_row + kk);
        for (var i = 0u; i < p.m; i++) {
            acc[i] += x[p.x_base + i * p.k + kk] * wv;
        }
    }
    for (var i = 0u; i < GEMV_M; i++) {
        partial[i][lid] = acc[i];
    }
    workgroupBarrier();
    for (var stride = GEMV_WG / 2u; stride > 0u; stride >>= 1u) {
        if (lid < stride) {
            for (var i = 0u; i < GEMV_M; i++) {
                partial[i][lid] += partial[i][lid + stride];
            }
        }
        workgroupBarrier();
    }
    if (lid < p.m) {
        let col = p.n0 + r;
        out[p.out_base + lid * p.n + col] = partial[lid][0] + bias_at(col);
    }
}

const TILE: u32 = 4u;

@compute @workgroup_size(8, 8)
fn tiled(@builtin(global_invocation_id) gid: vec3<u32>) {
    let c0 = gid.x * TILE; // first w row (window-local)
    let r0 = gid.y * TILE; // first x row (window-local)
    if (c0 >= p.nw || r0 >= p.m) {
        return;
    }
    var acc: array<array<f32, TILE>, TILE>; // [x row][w row]
    for (var kk = 0u; kk < p.k; kk++) {
        var wv: array<f32, TILE>;
        for (var j = 0u; j < TILE; j++) {
            // past the edge: re-read the last row; the result is not stored
            wv[j] = load_w(p.w_base + min(c0 + j, p.nw - 1u) * p.k + kk);
        }
        for (var i = 0u; i < TILE; i++) {
            let xv = x[p.x_base + min(r0 + i, p.m - 1u) * p.k + kk];
            for (var j = 0u; j < TILE; j++) {
                acc[i][j] += xv * wv[j];
            }
        }
    }
    for (var i = 0u; i < TILE; i++) {
        for (var j = 0u; j < TILE; j++) {
            if (r0 + i < p.m && c0 + j < p.nw) {
                let col = p.n0 + c0 + j;
                out[p.out_base + (r0 + i) * p.n + col] = acc[i][j] + bias_at(col);
            }
        }
    }
}
