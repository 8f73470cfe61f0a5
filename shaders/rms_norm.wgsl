// rms_norm: out[r, c] = x[r, c] / sqrt(mean_c(x[r, :]^2) + eps) * g[c], with
// g = w or 1 + w, then + b[c] with a bias (engine/src/ops/rms_norm.rs). One workgroup per row of a
// window of rows; x_base/out_base are where the window starts in its binding.

struct Params {      // RmsNormParams in backend-wgpu/src/ops/rms_norm.rs
    rows: u32,       // rows in this window
    cols: u32,
    x_base: u32,
    out_base: u32,
    eps: f32,
    unit_offset: u32,
    has_bias: u32,   // 0: b is a stand-in, never read
    _pad0: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<storage, read> b: array<f32>;

const WG: u32 = 64u;
var<workgroup> partial: array<f32, WG>;

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let row = wid.x + wid.y * nwg.x;
    if (row >= p.rows) {
        return;
    }
    let x_row = p.x_base + row * p.cols;
    let out_row = p.out_base + row * p.cols;
    var sum_sq = 0.0;
    for (var c = lid; c < p.cols; c += WG) {
        let v = x[x_row + c];
        sum_sq += v * v;
    }
    partial[lid] = sum_sq;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride >>= 1u) {
        if (lid < stride) {
            partial[lid] += partial[lid + stride];
        }
        workgroupBarrier();
    }
    let inv_rms = 1.0 / sqrt(partial[0] / f32(p.cols) + p.eps);
    for (var c = lid; c < p.cols; c += WG) {
        var g = w[c];
        if (p.unit_offset == 1u) {
            g = 1.0 + g;
        }
        var bias = 0.0;
        if (p.has_bias == 1u) {
            bias = b[c];
        }
        out[out_row + c] = x[x_row + c] * inv_rms * g + bias;
    }
}
