// concat (engine/src/ops/concat.rs): out[r, :m] = a[r, :], out[r, m:] = b[r, :].
// One invocation per out element of a window of rows; *_base are where the
// window's first row starts in each binding.

struct Params {      // ConcatParams in backend-wgpu/src/ops/concat.rs
    rows: u32,       // in this window
    m: u32,
    n: u32,
    a_base: u32,
    b_base: u32,
    out_base: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

const WG: u32 = 256u;

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let w = p.m + p.n;
    let i = (wid.x + wid.y * nwg.x) * WG + lid;
    if (i >= p.rows * w) {
        return;
    }
    let r = i / w;
    let c = i % w;
    if (c < p.m) {
        out[p.out_base + i] = a[p.a_base + r * p.m + c];
    } else {
        out[p.out_base + i] = b[p.b_base + r * p.n + c - p.m];
    }
}
