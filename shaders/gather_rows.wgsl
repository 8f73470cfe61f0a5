// gather_rows: out[i, :] = f32(table[ids[i], :]) (engine/src/ops/gather_rows.rs).
// The table is bound as u32 words whatever its dtype (W_DTYPE): f32 bits, or
// two f16/bf16 halves per word, low half first. A dispatch covers a window of
// out rows and a window of table rows (a table larger than one binding takes
// several); ids outside this table window are another dispatch's.
// shaders/f16/gather_rows.wgsl is the same with `enable f16;`.

struct Params {      // GatherRowsParams in backend-wgpu/src/ops/gather_rows.rs
    n: u32,          // out rows (ids) in this out window
    cols: u32,
    id0: u32,        // index of the out window's first id
    out_base: u32,
    row0: u32,       // first table row in the table window
    rows: u32,       // table rows in the table window
    table_base: u32, // where row0 starts in the table binding, in elements
    _pad: u32,
}

// 0: f32, 1: f16, 2: bf16
override W_DTYPE: u32 = 0u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> table: array<u32>;
@group(0) @binding(2) var<storage, read> ids: array<u32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

fn load_w(i: u32) -> f32 {
    if (W_DTYPE == 0u) {
        return bitcast<f32>(table[i]);
    }
    let word = table[i >> 1u];
    let high = (i & 1u) == 1u;
    if (W_DTYPE == 1u) {
        let pair = unpack2x16float(word);
        return select(pair.x, pair.y, high);
    }
    // bf16 is the top half of an f32: widen with a shift
    return bitcast<f32>(select(word << 16u, word & 0xffff0000u, high));
}

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
    out[p.out_base + e] = load_w(p.table_base + (id - p.row0) * p.cols + c);
}
