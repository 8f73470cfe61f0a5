// matmul with a quantized weight (engine/src/quant/): out[m, n] =
// sum_k x[m, k] * dequant(w)[n, k] (+ bias[n]), accumulated in f32. The
// weight is never expanded to f32 in memory: each element is decoded in
// registers from its packed code and its scale by `load_q`, which a reader
// prelude joined in front of this body defines for one family of formats
// (read_scaled.wgsl, read_ggml.wgsl; `override Q_FMT` picks the format).
// Same entry points and dispatch shapes as shaders/matmul.wgsl (`gemv` for
// m <= 8, `tiled` otherwise); one more binding, the scales.
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
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> codes: array<u32>;
@group(0) @binding(3) var<storage, read> scales: array<u32>;
@group(0) @binding(4) var<storage, read> bias: array<f32>;
@group(0) @binding(5) var<storage, read_write> out: array<f32>;

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
    let rows = min(GEMV_ROWS, p.nw - r0);
    var acc: array<f32, 32>; // [w row j][x row i] at j * GEMV_M + i
    for (var kk = lid; kk < p.k; kk += GEMV_WG) {
        var xv: array<f32, GEMV_M>;
        for (var i = 0u; i < GEMV_M; i++) {
            if (i < p.m) {
                xv[i] = x[p.x_base + i * p.k + kk];
            }
        }
        for (var j = 0u; j < GEMV_ROWS; j++) {
            if (j < rows) {
                let wv = w_at(r0 + j, kk);
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
                if (s / GEMV_M < rows && s % GEMV_M < p.m) {
                    partial[s][lid] += partial[s][lid + stride];
                }
            }
        }
        workgroupBarrier();
    }
    let j = lid / GEMV_M;
    let i = lid % GEMV_M;
    if (j < rows && i < p.m) {
        let col = p.n0 + r0 + j;
        out[p.out_base + i * p.n + col] = partial[lid][0] + bias_at(col);
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
