// gather_rows with native f16 (adapters with SHADER_F16): shaders/gather_rows.wgsl
// with the table bound as array<f16>. Same Params, bindings and entry point.
enable f16;

struct Params {      // GatherRowsParams in backend-wgpu/src/ops/gather_rows.rs
    n: u32,
    cols: u32,
    id0: u32,
    out_base: u32,
    row0: u32,
    rows: u32,
    table_base: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> table: array<f16>;
@group(0) @binding(2) var<storage, read> ids: array<u32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

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
    out[p.out_base + e] = f32(table[p.table_base + (id - p.row0) * p.cols + c]);
}
