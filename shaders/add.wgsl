// add: out[i] = a[i] + b[i] (engine/src/ops/add.rs).
// One invocation per element of a window; flat windows start on aligned
// element offsets, so indices need no base.

struct Params {      // AddParams in backend-wgpu/src/ops/elementwise.rs
    n: u32,          // elements in this window
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(256)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = (wid.x + wid.y * nwg.x) * 256u + lid;
    if (i >= p.n) {
        return;
    }
    out[i] = a[i] + b[i];
}
