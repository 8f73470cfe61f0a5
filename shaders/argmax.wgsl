// argmax: out[r] = the lowest index of the largest value of row r; NaN is
// never chosen, -0 and +0 tie, an all-NaN row gives 0 (engine/src/ops/argmax.rs).
// One workgroup per row of a window of rows; x_base/out_base are where the
// window starts in its binding.
//
// No float compares: WGSL lets an implementation assume there are no NaNs or
// infinities, so each value becomes a u32 key that orders like the floats
// (NaN -> 0, below -inf), and the (key, index) pairs are reduced with "larger
// key, then smaller index". That order is total, so the tree's shape does not
// change the answer.

struct Params {      // ArgmaxParams in backend-wgpu/src/ops/argmax.rs
    rows: u32,       // rows in this window
    cols: u32,
    x_base: u32,
    out_base: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<u32>; // f32 bits
@group(0) @binding(2) var<storage, read_write> out: array<u32>;

const WG: u32 = 256u;
const NONE: u32 = 0xffffffffu; // the index of "no value yet": loses every tie
var<workgroup> keys: array<u32, WG>;
var<workgroup> idxs: array<u32, WG>;

// Order-preserving key of f32 bits: a larger float has a larger key; -0 is
// +0; NaN is 0, which no number has (-inf is 0x007fffff).
fn key_of(bits: u32) -> u32 {
    let mag = bits & 0x7fffffffu;
    if (mag > 0x7f800000u) {
        return 0u;
    }
    if (mag == 0u) {
        return 0x80000000u;
    }
    if ((bits & 0x80000000u) != 0u) {
        return ~bits;
    }
    return bits | 0x80000000u;
}

// Whether (bk, bi) beats (ak, ai).
fn beats(bk: u32, bi: u32, ak: u32, ai: u32) -> bool {
    return bk > ak || (bk == ak && bi < ai);
}

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
    var best_k = 0u;
    var best_i = NONE;
    for (var c = lid; c < p.cols; c += WG) {
        let k = key_of(x[x_row + c]);
        if (beats(k, c, best_k, best_i)) {
            best_k = k;
            best_i = c;
        }
    }
    keys[lid] = best_k;
    idxs[lid] = best_i;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride >>= 1u) {
        if (lid < stride && beats(keys[lid + stride], idxs[lid + stride], keys[lid], idxs[lid])) {
            keys[lid] = keys[lid + stride];
            idxs[lid] = idxs[lid + stride];
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        // cols >= 1 (the shape rule), so thread 0 saw column 0: never NONE
        out[p.out_base + row] = idxs[0];
    }
}
