// matmul with a quantized weight (engine/src/quant/): out[m, n] =
// sum_k x[m, k] * dequant(w)[n, k] (+ bias[n]), accumulated in f32. The
// weight is never expanded to f32 in memory: each element is decoded in
// registers from its packed code and its scale by `load_q`, which a reader
// prelude joined in front of this body defines for one family of formats
// (read_scaled.wgsl, read_ggml.wgsl; `override Q_FMT` picks the format).
// Same entry points and dispatch shapes as shaders/matmul.wgsl (`gemv` for
// m <= 8, `tiled` otherwise); one more binding, the scales. A third entry,
// `moe`, is moe_matmul over a stack of experts (below); behind
// read_float.wgsl it serves f32, f16 and bf16 stacks too.
//
// Buffer layout (engine/src/quant/device_layout.rs, written by
// backend-wgpu/src/quant.rs): row r of the weight starts at word
// r * row_words of `codes` and at word r * srow_words of `scales`; the
// readers say how a row's words are decoded.
// *_base are where a window's first row starts inside its binding, in words.

struct Params {      // QuantMatmulParams in backend-wgpu/src/ops/matmul.rs
    m: u32,          // x/out rows in this window
    k: u32,
    n: u32,          // out columns (all rows of w)
    n0: u32,         // first w row of this window
    nw: u32,         // w rows in this window
    x_base: u32,
    w_base: u32,     // in u32 words of the codes binding
    out_base: u32,
    has_bias: u32,
    s_base: u32,     // in u32 words of the scales binding
    row_words: u32,  // code words per weight row
    srow_words: u32, // scale words per weight row
    group: u32,      // elements per scale
    spr: u32,        // scales per row (the zero points follow them)
    tensor_scale: f32,
    has_zp: u32,
    // the `moe` entry only (moe_matmul; zero for matmul):
    top_k: u32,      // K: out row r is choice r % K of token r / K
    per_choice: u32, // 1: x row r; 0: x row r / K (one row per token)
    route_base: u32,
    experts: u32,    // in the whole stack (ids are clamped to it)
    e0: u32,         // first expert of this weight window
    has_scale: u32,  // 1: out rows of expert e are times escale[e]
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> codes: array<u32>;
@group(0) @binding(3) var<storage, read> scales: array<u32>;
@group(0) @binding(4) var<storage, read> bias: array<f32>;
@group(0) @binding(5) var<storage, read_write> out: array<f32>;
@group(0) @binding(6) var<storage, read> route: array<f32>; // `moe` only
@group(0) @binding(7) var<storage, read> escale: array<f32>; // `moe` only: per-expert scale

// element kk of weight row `row` (window-local), dequantized by the reader
fn w_at(row: u32, kk: u32) -> f32 {
    return load_q(p.w_base + row * p.row_words, p.s_base + row * p.srow_words, kk);
}

fn bias_at(col: u32) -> f32 {
    if (p.has_bias == 1u) {
        return bias[col];
    }
    return 0.0;
}

const GEMV_WG: u32 = 64u;
const GEMV_M: u32 = 8u;
const GEMV_ROWS: u32 = 4u;
var<workgroup> partial: array<array<f32, GEMV_WG>, 32>; // [GEMV_ROWS * GEMV_M][GEMV_WG]

@compute @workgroup_size(GEMV_WG)
fn gemv(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let r0 = (wid.x + wid.y * nwg.x) * GEMV_ROWS; // first w row (window-local)
    if (r0 >= p.nw) {
        return;
    }
    var xo: array<u32, GEMV_M>;
    var oo: array<u32, GEMV_M>;
    for (var i = 0u; i < GEMV_M; i++) {
        xo[i] = p.x_base + i * p.k;
        oo[i] = p.out_base + i * p.n + p.n0;
    }
    gemv_rows(r0, min(GEMV_ROWS, p.nw - r0), p.m, xo, oo, r0, 1.0, lid);
}

// The body of `gemv` and `moe`: w rows wr..wr + rows (window-local, rows <=
// GEMV_ROWS) times m <= GEMV_M rows of x, row i starting at xo[i];
// out[oo[i] + col + j] = (x_i . w_(wr + j)) * scale + bias[n0 + wr + j]. It
// has barriers: call it in uniform control flow.
fn gemv_rows(
    wr: u32,
    rows: u32,
    m: u32,
    xo: array<u32, GEMV_M>,
    oo: array<u32, GEMV_M>,
    col: u32,
    scale: f32,
    lid: u32,
) {
    // constant trip counts with guards, so acc stays in registers
    var acc: array<f32, 32>; // [w row j][x row i] at j * GEMV_M + i
    for (var kk = lid; kk < p.k; kk += GEMV_WG) {
        var xv: array<f32, GEMV_M>;
        for (var i = 0u; i < GEMV_M; i++) {
            if (i < m) {
                xv[i] = x[xo[i] + kk];
            }
        }
        for (var j = 0u; j < GEMV_ROWS; j++) {
            if (j < rows) {
                let wv = w_at(wr + j, kk);
                for (var i = 0u; i < GEMV_M; i++) {
                    acc[j * GEMV_M + i] += xv[i] * wv;
                }
            }
        }
    }
    for (var s = 0u; s < GEMV_ROWS * GEMV_M; s++) {
        partial[s][lid] = acc[s];
    }
    workgroupBarrier();
    for (var stride = GEMV_WG / 2u; stride > 0u; stride >>= 1u) {
        if (lid < stride) {
            for (var s = 0u; s < GEMV_ROWS * GEMV_M; s++) {
                if (s / GEMV_M < rows && s % GEMV_M < m) {
                    partial[s][lid] += partial[s][lid + stride];
                }
            }
        }
        workgroupBarrier();
    }
    // one invocation per (w row, x row) writes
    let j = lid / GEMV_M;
    let i = lid % GEMV_M;
    if (j < rows && i < m) {
        out[oo[i] + col + j] = partial[lid][0] * scale + bias_at(p.n0 + wr + j);
    }
}

// moe_matmul (engine/src/ops/moe_matmul.rs): w stacks experts of p.n rows,
// this window experts e0.. (whole experts); out row r of this token window is
// choice r % K of token r / K, times the rows of its expert
// route[t, K + j]. A workgroup per (tile of GEMV_ROWS columns, expert) finds
// the rows that chose its expert and runs them through gemv_rows GEMV_M at a
// time: an expert's weights are read once per GEMV_M rows that chose it, and
// not at all when none did. The expert ids are read here, not on the host
// (planning never waits for the device); one out of range (a route from
// elsewhere) is clamped, so every out row is written and no read strays.
var<workgroup> hits: array<u32, GEMV_WG>; // rows of the current chunk that chose this expert
var<workgroup> n_hits: atomic<u32>;
var<workgroup> found: u32;

fn expert_of(r: u32) -> u32 {
    let id = route[p.route_base + (r / p.top_k) * 2u * p.top_k + p.top_k + r % p.top_k];
    return min(u32(max(id, 0.0)), p.experts - 1u);
}

@compute @workgroup_size(GEMV_WG)
fn moe(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let col = wid.x * GEMV_ROWS; // first column of the tile, within an expert
    if (col >= p.n) {
        return;
    }
    let expert = p.e0 + wid.y;
    let rows = min(GEMV_ROWS, p.n - col);
    let wr = wid.y * p.n + col; // its first w row (window-local)
    var scale = 1.0;
    if (p.has_scale == 1u) {
        scale = escale[expert];
    }
    // the route in chunks of GEMV_WG rows, one row per invocation
    for (var r0 = 0u; r0 < p.m; r0 += GEMV_WG) {
        if (lid == 0u) {
            atomicStore(&n_hits, 0u);
        }
        workgroupBarrier();
        let r = r0 + lid;
        if (r < p.m && expert_of(r) == expert) {
            hits[atomicAdd(&n_hits, 1u)] = r;
        }
        workgroupBarrier();
        if (lid == 0u) {
            found = atomicLoad(&n_hits);
        }
        let count = workgroupUniformLoad(&found);
        for (var h = 0u; h < count; h += GEMV_M) {
            var xo: array<u32, GEMV_M>;
            var oo: array<u32, GEMV_M>;
            for (var i = 0u; i < GEMV_M; i++) {
                let hit = hits[min(h + i, count - 1u)];
                xo[i] = p.x_base + select(hit / p.top_k, hit, p.per_choice == 1u) * p.k;
                oo[i] = p.out_base + hit * p.n;
            }
            gemv_rows(wr, rows, min(GEMV_M, count - h), xo, oo, col, scale, lid);
            workgroupBarrier(); // the next batch rewrites partial, the next chunk hits
        }
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
            wv[j] = w_at(min(c0 + j, p.nw - 1u), kk);
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
