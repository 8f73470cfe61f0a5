// matmul with a quantized weight (engine/src/quant/): out[m, n] =
// sum_k x[m, k] * dequant(w)[n, k] (+ bias[n]), accumulated in f32. The
// weight is never expanded to f32 in memory: each element is decoded in
// registers from its packed code and its scale (Q_FMT picks the format).
// Same entry points and dispatch shapes as shaders/matmul.wgsl (`gemv` for
// m <= 8, `tiled` otherwise); one more binding, the scales.
//
// Buffer layout (written by backend-wgpu/src/quant.rs):
// - codes (binding 2): u32 words, row r of the weight starting at word
//   r * row_words (rows padded to whole words). 4-bit formats: element i of a
//   row is bits 4(i%8).. of word i/8 (element 2j in the low nibble of byte j,
//   as stored); 8-bit formats: bits 8(i%4).. of word i/4.
// - scales (binding 3): row r at word r * srow_words; element i of a row uses
//   scale group i / group (g = 0..spr). NVFP4 (E4M3) and MXFP4 (E8M0) scale
//   bytes are kept raw, 4 per word (byte g at bits 8(g%4) of word g/4); FP8,
//   INT8 and INT4 scales are f32 words. INT4 with zero points: after the spr
//   f32 scales, the i8 zero points, 4 per word.
// - NVFP4's tensor scale is `tensor_scale` in the params.
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

// 0: NVFP4 ModelOpt (E2M1 * (E4M3 * tensor_scale)), 1: NVFP4 compressed-tensors
// (E2M1 * (E4M3 / tensor_scale)), 2: MXFP4 (E2M1 * 2^(e-127)), 3: FP8 E4M3 * f32,
// 4: INT8 * f32, 5: INT4 ((q - zp) * f32)
override Q_FMT: u32 = 0u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> codes: array<u32>;
@group(0) @binding(3) var<storage, read> scales: array<u32>;
@group(0) @binding(4) var<storage, read> bias: array<f32>;
@group(0) @binding(5) var<storage, read_write> out: array<f32>;

const E2M1: array<f32, 16> = array<f32, 16>(
    0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0,
    -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0,
);

// engine/src/quant/fp8.rs `decode` (0x7F/0xFF, NaN, never occur as scales or
// finite weights)
fn e4m3(b: u32) -> f32 {
    let sign = (b >> 7u) << 31u;
    let e = (b >> 3u) & 0xfu;
    let m = b & 7u;
    if (e == 0u) {
        let v = f32(m) * (1.0 / 512.0);
        return select(v, -v, sign != 0u);
    }
    return bitcast<f32>(sign | ((e + 120u) << 23u) | (m << 20u));
}

// 2^(e - 127); e = 0 is the f32 subnormal 2^-127 (0x00400000), which a device
// that flushes subnormals reads as 0
fn e8m0(e: u32) -> f32 {
    if (e == 0u) {
        return bitcast<f32>(0x00400000u);
    }
    return bitcast<f32>(e << 23u);
}

fn scale_byte(srow: u32, g: u32) -> u32 {
    return (scales[srow + (g >> 2u)] >> (8u * (g & 3u))) & 0xffu;
}

// element kk of weight row `row` (window-local), dequantized
fn load_q(row: u32, kk: u32) -> f32 {
    let crow = p.w_base + row * p.row_words;
    let srow = p.s_base + row * p.srow_words;
    let g = kk / p.group;
    if (Q_FMT <= 2u || Q_FMT == 5u) {
        let code = (codes[crow + (kk >> 3u)] >> (4u * (kk & 7u))) & 0xfu;
        if (Q_FMT == 5u) {
            var zp = 0.0;
            if (p.has_zp == 1u) {
                let zb = scale_byte(srow + p.spr, g);
                zp = f32(i32(zb << 24u) >> 24u);
            }
            return (f32(i32(code) - 8) - zp) * bitcast<f32>(scales[srow + g]);
        }
        if (Q_FMT == 2u) {
            return E2M1[code] * e8m0(scale_byte(srow, g));
        }
        let sb = e4m3(scale_byte(srow, g));
        if (Q_FMT == 0u) {
            return E2M1[code] * (sb * p.tensor_scale);
        }
        return E2M1[code] * (sb / p.tensor_scale);
    }
    let byte = (codes[crow + (kk >> 2u)] >> (8u * (kk & 3u))) & 0xffu;
    let s = bitcast<f32>(scales[srow + g]);
    if (Q_FMT == 3u) {
        return e4m3(byte) * s;
    }
    return f32(i32(byte << 24u) >> 24u) * s;
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
                let wv = load_q(r0 + j, kk);
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
            wv[j] = load_q(min(c0 + j, p.nw - 1u), kk);
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
