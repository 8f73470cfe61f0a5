// glu: out[i] = act(gate[i]) * up[i] (engine/src/ops/glu.rs), with
// silu(x) = x / (1 + exp(-x)) or gelu_tanh(x) = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)));
// or gpt-oss's clamped SwiGLU: g = min(gate, limit), (clamp(up, -limit, limit) + 1) * g / (1 + exp(-alpha g)).

struct Params {      // GluParams in backend-wgpu/src/ops/elementwise.rs
    n: u32,          // elements in this window
    alpha: f32,      // clamped SwiGLU only
    limit: f32,
    _pad: u32,
}

// 0: silu, 1: gelu_tanh, 2: clamped SwiGLU
override ACTIVATION: u32 = 0u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> gate: array<f32>;
@group(0) @binding(2) var<storage, read> up: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

// tanh is +-1 in f32 beyond |x| = 9; clamping keeps exp-based
// implementations from computing inf / inf.
fn tanh_safe(v: f32) -> f32 {
    return tanh(clamp(v, -15.0, 15.0));
}

fn act(v: f32) -> f32 {
    if (ACTIVATION == 0u) {
        return v / (1.0 + exp(-v));
    }
    let c = 0.7978845608028654; // sqrt(2 / pi)
    return 0.5 * v * (1.0 + tanh_safe(c * (v + 0.044715 * v * v * v)));
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
    if (ACTIVATION == 2u) {
        let g = min(gate[i], p.limit);
        out[i] = (clamp(up[i], -p.limit, p.limit) + 1.0) * (g / (1.0 + exp(-p.alpha * g)));
        return;
    }
    out[i] = act(gate[i]) * up[i];
}
