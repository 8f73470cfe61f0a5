// gather_rows from a quantized table: out[i, :] = dequant(table[ids[i], :])
// (engine/src/ops/gather_rows.rs), each element decoded by the `load_q` of
// the reader prelude joined in front of this body (read_scaled.wgsl,
// read_ggml.wgsl), as shaders/quant/matmul.wgsl decodes its weight. Same
// windows as shaders/gather_rows.wgsl: a dispatch covers a window of out
// rows and a window of table rows; ids outside this table window are another
// dispatch's.

struct Params {      // QuantGatherRowsParams in backend-wgpu/src/ops/gather_rows.rs
    n: u32,          // out rows (ids) in this out window
    cols: u32,
    id0: u32,        // index of the out window's first id
    out_base: u32,
    row0: u32,       // first table row in the table window
    rows: u32,       // table rows in the table window
    c_base: u32,     // where row0 starts in the codes binding, in words
    s_base: u32,     // where row0 starts in the scales binding, in words
    row_words: u32,  // code words per table row
    srow_words: u32, // scale words per table row
    group: u32,      // elements per scale
    spr: u32,        // scales per row (the zero points follow them)
    tensor_scale: f32,
    has_zp: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> codes: array<u32>;
@group(0) @binding(2) var<storage, read> scales: array<u32>;
@group(0) @binding(3) var<storage, read> ids: array<u32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(256)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let e = (wid.x + wid.y * nwg.x) * 256u + lid;
    if (e >= p.n * p.cols) {
        return;
    }
    let i = e / p.cols;
    let c = e % p.cols;
    let id = ids[p.id0 + i];
    if (id < p.row0 || id - p.row0 >= p.rows) {
        return;
    }
    let r = id - p.row0;
    out[p.out_base + e] = load_q(p.c_base + r * p.row_words, p.s_base + r * p.srow_words, c);
}
