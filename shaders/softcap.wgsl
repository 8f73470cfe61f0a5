// softcap: out[i] = cap * tanh(x[i] / cap) (engine/src/ops/softcap.rs).

struct Params {      // SoftcapParams in backend-wgpu/src/ops/elementwise.rs
    n: u32,          // elements in this window
    cap: f32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

// tanh is +-1 in f32 beyond |x| = 9; clamping keeps exp-based
// implementations from computing inf / inf.
fn tanh_safe(v: f32) -> f32 {
    return tanh(clamp(v, -15.0, 15.0));
}

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
    out[i] = p.cap * tanh_safe(x[i] / p.cap);
}
