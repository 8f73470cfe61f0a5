// sample: out[r] = the column of row r drawn from softmax(x / t) by inverse
// CDF in column order, with t = temperature[r] and u = uniforms[r] clamped
// into [0, 1]; t not a finite positive number, or a row with no finite
// max of x / t, gives the argmax; NaN has weight 0 (engine/src/ops/sample.rs).
// One workgroup per row of a window of rows; the *_base are where the window
// starts in its binding.
//
// No float compares on values that may be NaN or infinite (WGSL lets an
// implementation assume there are none): NaN and the infinities are told by
// their bits, and maxima are taken over u32 keys that order like the floats
// (NaN -> 0, below -inf), as in argmax.wgsl.
//
// Sampling: m = the max of x / t (an atomicMax of keys); each thread owns a
// contiguous segment of the row and sums its weights w = exp(x / t - m);
// thread 0 scans the 256 segment sums sequentially into offsets, so the
// running sum is offsets[i] + (the segment's own running sum), which ends
// at exactly offsets[i + 1] (the same f32 additions): the CDF is monotone
// across segments and the one thread with offsets[i] <= u * Z < offsets[i + 1]
// holds the first crossing. When there is none (u * Z at the very top, or u
// NaN) the answer is the last column of weight > 0.

struct Params {      // SampleParams in backend-wgpu/src/ops/sample.rs
    rows: u32,       // rows in this window
    cols: u32,
    x_base: u32,
    t_base: u32,
    u_base: u32,
    out_base: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<u32>;           // f32 bits
@group(0) @binding(2) var<storage, read> temperature: array<u32>; // f32 bits
@group(0) @binding(3) var<storage, read> uniforms: array<u32>;    // f32 bits
@group(0) @binding(4) var<storage, read_write> out: array<u32>;

const WG: u32 = 256u;
const NONE: u32 = 0xffffffffu; // no column (yet): loses every min
const POS_INF: u32 = 0x7f800000u;
// keys of -inf and +inf: a max key strictly between them is a finite max
const KEY_NEG_INF: u32 = 0x007fffffu;
const KEY_POS_INF: u32 = 0xff800000u;

var<workgroup> m_key: atomic<u32>;     // max key of x / t
var<workgroup> m_key_u: u32;           // m_key, published for a uniform branch
var<workgroup> best_key: atomic<u32>;  // argmax: the max key of x
var<workgroup> best_idx: atomic<u32>;  // argmax: its lowest column
var<workgroup> found: atomic<u32>;     // the first column past u * Z
var<workgroup> last_pos: atomic<u32>;  // 1 + the last column of weight > 0; 0: none
var<workgroup> offsets: array<f32, 257>; // segment sums, scanned in place: offsets[i] = sum of segments < i

fn is_nan(bits: u32) -> bool {
    return (bits & 0x7fffffffu) > POS_INF;
}

// Order-preserving key of f32 bits: a larger float has a larger key; -0 is
// +0; NaN is 0, which no number has (-inf is 0x007fffff).
fn key_of(bits: u32) -> u32 {
    let mag = bits & 0x7fffffffu;
    if (mag > POS_INF) {
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

// The f32 bits of a key that is not 0 (-0 comes back as +0).
fn bits_of_key(key: u32) -> u32 {
    if (key >= 0x80000000u) {
        return key & 0x7fffffffu;
    }
    return ~key;
}

// exp(x / t - m), 0 for NaN. Below -104 exp underflows to 0 in f32 anyway
// (this also covers -inf, which exp need not handle).
fn weight(bits: u32, t: f32, m: f32) -> f32 {
    if (is_nan(bits)) {
        return 0.0;
    }
    let d = bitcast<f32>(bits) / t - m;
    if (d < -104.0) {
        return 0.0;
    }
    return exp(d);
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
    if (lid == 0u) {
        atomicStore(&m_key, 0u);
        atomicStore(&best_key, 0u);
        atomicStore(&best_idx, NONE);
        atomicStore(&found, NONE);
        atomicStore(&last_pos, 0u);
    }
    workgroupBarrier();

    let t_bits = temperature[p.t_base + row];
    let t = bitcast<f32>(t_bits);
    // finite and > 0: sign clear, not +0, exponent not all ones
    let sampling = t_bits != 0u && t_bits < POS_INF;
    if (sampling) {
        var local_key = 0u;
        for (var c = lid; c < p.cols; c += WG) {
            let bits = x[x_row + c];
            if (!is_nan(bits)) {
                local_key = max(local_key, key_of(bitcast<u32>(bitcast<f32>(bits) / t)));
            }
        }
        atomicMax(&m_key, local_key);
        workgroupBarrier();
        if (lid == 0u) {
            m_key_u = atomicLoad(&m_key);
        }
        let mk = workgroupUniformLoad(&m_key_u);
        if (mk > KEY_NEG_INF && mk < KEY_POS_INF) {
            let m = bitcast<f32>(bits_of_key(mk));
            // pass A: this thread's segment [begin, end)
            let seg = (p.cols + WG - 1u) / WG;
            let begin = min(lid * seg, p.cols);
            let end = min(begin + seg, p.cols);
            var s = 0.0;
            var last = 0u;
            for (var c = begin; c < end; c++) {
                let w = weight(x[x_row + c], t, m);
                s += w;
                if (w > 0.0) {
                    last = c + 1u;
                }
            }
            offsets[lid + 1u] = s;
            atomicMax(&last_pos, last);
            workgroupBarrier();
            if (lid == 0u) {
                var acc = 0.0;
                offsets[0] = 0.0;
                for (var i = 1u; i <= WG; i++) {
                    acc += offsets[i];
                    offsets[i] = acc;
                }
            }
            workgroupBarrier();
            // pass B: u clamped into [0, 1] by its bits; NaN finds no column
            let u_bits = uniforms[p.u_base + row];
            if (!is_nan(u_bits)) {
                var u = bitcast<f32>(u_bits);
                if ((u_bits & 0x80000000u) != 0u) {
                    u = 0.0; // negative, -0 or -inf
                } else if (u_bits >= 0x3f800000u) {
                    u = 1.0; // 1 or more, +inf
                }
                let goal = u * offsets[WG];
                let lo = offsets[lid];
                if (lo <= goal && goal < offsets[lid + 1u]) {
                    var run = 0.0;
                    for (var c = begin; c < end; c++) {
                        run += weight(x[x_row + c], t, m);
                        if (lo + run > goal) {
                            atomicMin(&found, c);
                            break;
                        }
                    }
                }
            }
            workgroupBarrier();
            if (lid == 0u) {
                var pick = atomicLoad(&found);
                if (pick == NONE) {
                    // m is finite, so its column has weight 1: last_pos > 0
                    pick = max(atomicLoad(&last_pos), 1u) - 1u;
                }
                out[p.out_base + row] = pick;
            }
            return;
        }
    }

    // the argmax of x: each thread's best (key, lowest column), then the max
    // key, then the lowest column among the threads that hold it
    var bk = 0u;
    var bi = NONE;
    for (var c = lid; c < p.cols; c += WG) {
        let k = key_of(x[x_row + c]);
        if (k > bk || (k == bk && c < bi)) {
            bk = k;
            bi = c;
        }
    }
    atomicMax(&best_key, bk);
    workgroupBarrier();
    if (bk == atomicLoad(&best_key)) {
        atomicMin(&best_idx, bi);
    }
    workgroupBarrier();
    if (lid == 0u) {
        // cols >= 1 (the shape rule), so thread 0 saw column 0: never NONE
        out[p.out_base + row] = atomicLoad(&best_idx);
    }
}
