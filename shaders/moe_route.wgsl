// moe_route (engine/src/ops/moe_route.rs): per token, scores s = softmax or
// sigmoid of its router logits, choices c = s + bias; with groups, only the
// top_groups groups whose two best c sum highest are eligible; the top_k
// eligible experts by c (descending, ties to the lower index) are written as
// their weights s (renormalized, scaled), then their ids as f32.
//
// One invocation per token row of a window of rows. Nothing is kept per
// expert, so any number of experts fits: s and c are recomputed on each pass
// over the row (one exp per expert per pass, bit-identical each time), and
// the j-th pick is the best expert ranked below pick j - 1 in the order
// (c descending, index ascending) — the reference's "best remaining".

struct Params {      // MoeRouteParams in backend-wgpu/src/ops/moe_route.rs
    rows: u32,       // tokens in this window
    experts: u32,
    top_k: u32,
    x_base: u32,
    out_base: u32,
    sigmoid: u32,    // 0: softmax
    has_bias: u32,
    renormalize: u32,
    groups: u32,     // 0: no group limit; else at most MAX_GROUPS
    top_groups: u32,
    scale: f32,
    _pad0: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read> bias: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

const WG: u32 = 64u;
const MAX_GROUPS: u32 = 256u; // the bits of `kept`
const LOWEST: f32 = -3.40282347e38; // stands in for -inf, which WGSL has no constant for

// what softmax needs of a row: its max and sum of exp(l - max)
var<private> row_max: f32;
var<private> row_sum: f32;

fn score(x_row: u32, e: u32) -> f32 {
    let l = logits[x_row + e];
    if (p.sigmoid == 1u) {
        return 1.0 / (1.0 + exp(-l));
    }
    return exp(l - row_max) / row_sum;
}

fn choice(x_row: u32, e: u32) -> f32 {
    if (p.has_bias == 1u) {
        return score(x_row, e) + bias[e];
    }
    return score(x_row, e);
}

// (c, e) ranks before (c2, e2): higher c, or equal c and lower index
fn before(c: f32, e: u32, c2: f32, e2: u32) -> bool {
    return c > c2 || (c == c2 && e < e2);
}

// the sum of the two best choices of group g, as the reference sums them
fn group_score(x_row: u32, g: u32, per: u32) -> f32 {
    var a = LOWEST;
    var b = LOWEST;
    for (var e = g * per; e < (g + 1u) * per; e++) {
        let v = choice(x_row, e);
        if (v > a) {
            b = a;
            a = v;
        } else if (v > b) {
            b = v;
        }
    }
    return a + b;
}

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let row = (wid.x + wid.y * nwg.x) * WG + lid;
    if (row >= p.rows) {
        return;
    }
    let x_row = p.x_base + row * p.experts;
    let o = p.out_base + row * 2u * p.top_k;
    if (p.sigmoid == 0u) {
        row_max = LOWEST;
        for (var e = 0u; e < p.experts; e++) {
            row_max = max(row_max, logits[x_row + e]);
        }
        row_sum = 0.0;
        for (var e = 0u; e < p.experts; e++) {
            row_sum += exp(logits[x_row + e] - row_max);
        }
    }
    // kept groups as bits (all experts eligible without groups)
    var kept: array<u32, MAX_GROUPS / 32u>;
    var per = p.experts;
    if (p.groups == 0u) {
        kept[0] = 1u;
    } else {
        per = p.experts / p.groups;
        var prev_s = 0.0;
        var prev_g = 0u;
        for (var pick = 0u; pick < p.top_groups; pick++) {
            var best_s = 0.0;
            var best_g = p.groups; // none yet
            for (var g = 0u; g < p.groups; g++) {
                let s = group_score(x_row, g, per);
                let below = pick == 0u || before(prev_s, prev_g, s, g);
                if (below && (best_g == p.groups || before(s, g, best_s, best_g))) {
                    best_s = s;
                    best_g = g;
                }
            }
            best_g = min(best_g, p.groups - 1u); // only NaN scores leave none
            kept[best_g / 32u] |= 1u << (best_g % 32u);
            prev_s = best_s;
            prev_g = best_g;
        }
    }
    var prev_c = 0.0;
    var prev_e = 0u;
    var sum = 0.0;
    for (var j = 0u; j < p.top_k; j++) {
        var best_c = 0.0;
        var best_e = p.experts; // none yet
        for (var e = 0u; e < p.experts; e++) {
            let g = e / per;
            if ((kept[g / 32u] & (1u << (g % 32u))) == 0u) {
                continue;
            }
            let c = choice(x_row, e);
            let below = j == 0u || before(prev_c, prev_e, c, e);
            if (below && (best_e == p.experts || before(c, e, best_c, best_e))) {
                best_c = c;
                best_e = e;
            }
        }
        best_e = min(best_e, p.experts - 1u); // only NaN choices leave none
        let w = score(x_row, best_e);
        out[o + j] = w;
        out[o + p.top_k + j] = f32(best_e);
        sum += w;
        prev_c = best_c;
        prev_e = best_e;
    }
    for (var j = 0u; j < p.top_k; j++) {
        var w = out[o + j];
        if (p.renormalize == 1u) {
            w /= sum;
        }
        out[o + j] = w * p.scale;
    }
}
