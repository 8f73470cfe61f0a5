// moe_combine (engine/src/ops/moe_combine.rs): out[t, c] =
// sum_j route[t, j] * y[t * K + j, c], summed in choice order. One
// invocation per out element of a window of tokens; *_base are where the
// window's first row starts in each binding.

struct Params {      // MoeCombineParams in backend-wgpu/src/ops/moe_combine.rs
    tokens: u32,     // in this window
    top_k: u32,
    n: u32,
    y_base: u32,
    route_base: u32,
    out_base: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> y: array<f32>;
@group(0) @binding(2) var<storage, read> route: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

const WG: u32 = 256u;

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = (wid.x + wid.y * nwg.x) * WG + lid;
    if (i >= p.tokens * p.n) {
        return;
    }
    let t = i / p.n;
    let c = i % p.n;
    var acc = 0.0;
    for (var j = 0u; j < p.top_k; j++) {
        acc += route[p.route_base + t * 2u * p.top_k + j] * y[p.y_base + (t * p.top_k + j) * p.n + c];
    }
    out[p.out_base + i] = acc;
}
