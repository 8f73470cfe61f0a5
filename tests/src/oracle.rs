//! An independent f64 implementation of every op, so the CPU reference
//! itself is checked and not only compared with itself. It is written from
//! the math in each op's doc comment, deliberately by a different route than
//! `engine/src/ops/` where one is natural: matmul through a transposed
//! weight, rope as complex multiplication, attention over each sequence's
//! keys gathered into a dense array with an explicit causal + window mask,
//! sigmoid through tanh, argmax as the max first and its place second, sample
//! through a cumulative array.

use ferrum_engine::ops::{Activation, Attention, Op, Rope, RopeStyle};

use crate::cases::HostTensor;

/// The op's output in f64. `init_out` is the output's prior contents (kv_store).
pub fn eval(op: &Op, inputs: &[HostTensor], init_out: Option<&HostTensor>) -> Result<Vec<f64>, String> {
    let f = |i: usize| inputs[i].f64s();
    let shape = |i: usize| inputs[i].shape.clone();
    match op {
        Op::GatherRows(_) => gather_rows(&f(0), shape(0)[1], inputs[1].u32s()),
        Op::RmsNorm(p) => {
            let out = rms_norm(&f(0), &f(1), p.eps as f64, p.unit_offset);
            let cols = shape(1)[0];
            Ok(match inputs.get(2).map(|b| b.f64s()) {
                Some(b) => out.iter().enumerate().map(|(i, o)| o + b[i % cols]).collect(),
                None => out,
            })
        }
        Op::Matmul(_) => {
            let bias = inputs.get(2).map(|b| b.f64s());
            Ok(matmul(&f(0), &f(1), bias.as_deref(), [shape(0)[0], shape(1)[1], shape(1)[0]]))
        }
        Op::Rope(p) => Ok(rope(p, &f(0), inputs[1].u32s(), &f(2), shape(0)[2])),
        Op::KvStore(p) => {
            let init = init_out.ok_or("kv_store needs the cache's initial contents")?;
            kv_store(&f(0), inputs[1].u32s(), init.f64s(), p.num_slots)
        }
        Op::Attention(p) => {
            let [q, k, v, tables, seq, pos] = &inputs[..6] else {
                return Err("attention takes 6 or 7 inputs".into());
            };
            let dims = Dims { heads: q.shape[1], kv_heads: k.shape[1], d: q.shape[2], max_blocks: tables.shape[1] };
            let dtypes: Vec<_> = inputs.iter().map(|t| t.dtype).collect();
            let (sinks, selected) = Attention::optional_inputs(&dtypes).map_err(|e| e.to_string())?;
            let sinks = sinks.map(|i| inputs[i].f64s());
            let selected = selected.map(|i| (inputs[i].u32s(), inputs[i].shape[1]));
            let (q, k, v) = (q.f64s(), k.f64s(), v.f64s());
            let keys = (tables.u32s(), seq.u32s(), pos.u32s());
            attention(p, dims, &q, &k, &v, keys, sinks.as_deref(), selected)
        }
        Op::IndexTopk(p) => {
            let [q, w, k, tables, seq, pos] = inputs else { return Err("index_topk takes 6 inputs".into()) };
            let (heads, d) = (q.shape[1], q.shape[2]);
            let page = |s: usize, j: usize| -> Option<usize> {
                let block = *tables.u32s().get(s * tables.shape[1] + j / p.block_size)?;
                Some(block as usize * p.block_size + j % p.block_size)
            };
            Ok(index_topk(p.top_k, heads, d, &q.f64s(), &w.f64s(), &k.f64s(), seq.u32s(), pos.u32s(), page)?)
        }
        Op::Glu(p) => Ok(f(0).iter().zip(f(1)).map(|(&g, u)| glu(p.activation, g, u)).collect()),
        Op::Add(_) => Ok(f(0).iter().zip(f(1)).map(|(a, b)| a + b).collect()),
        Op::Scale(p) => Ok(f(0).iter().map(|x| p.factor as f64 * x).collect()),
        Op::Softcap(p) => Ok(f(0).iter().map(|&x| softcap(p.cap as f64, x)).collect()),
        Op::Argmax(_) => Ok(argmax(&f(0), shape(0)[1])),
        Op::Sample(_) => Ok(sample(&f(0), shape(0)[1], &f(1), &f(2))),
        Op::MoeRoute(p) => Ok(moe_route(p, &f(0), inputs.get(1).map(|b| b.f64s()).as_deref(), shape(0)[1])),
        Op::MoeMatmul(p) => {
            let (bias, scale) = p.optional(inputs);
            let (bias, scale) = (bias.map(|b| b.f64s()), scale.map(|s| s.f64s()));
            let (bias, scale) = (bias.as_deref(), scale.as_deref());
            Ok(moe_matmul(p.experts, &f(0), &f(1), &f(2), [bias, scale], [shape(0)[1], shape(2)[1] / 2]))
        }
        Op::MoeCombine(_) => Ok(moe_combine(&f(0), &f(1), shape(1)[1] / 2)),
        // by columns: out column c is a's c, else b's c - m
        Op::Concat(_) => {
            let (m, n) = (*shape(0).last().unwrap_or(&1), *shape(1).last().unwrap_or(&1));
            let (a, b) = (f(0), f(1));
            let rows = a.len() / m.max(1);
            Ok((0..rows * (m + n))
                .map(|i| {
                    if i % (m + n) < m {
                        a[i / (m + n) * m + i % (m + n)]
                    } else {
                        b[i / (m + n) * n + i % (m + n) - m]
                    }
                })
                .collect())
        }
    }
}

/// Per token: scores by softmax (through the log-sum-exp) or sigmoid (through
/// tanh), experts ranked by a stable sort of score + bias (groups first
/// ranked by the sum of their two best and cut to the top ones), then the
/// first k of the ranking.
fn moe_route(p: &ferrum_engine::ops::MoeRoute, logits: &[f64], bias: Option<&[f64]>, experts: usize) -> Vec<f64> {
    let k = p.top_k;
    let mut out = Vec::new();
    for row in logits.chunks(experts) {
        let scores: Vec<f64> = match p.scoring {
            ferrum_engine::ops::RouterScoring::Softmax => {
                let m = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let lse = m + row.iter().map(|&l| (l - m).exp()).sum::<f64>().ln();
                row.iter().map(|&l| (l - lse).exp()).collect()
            }
            ferrum_engine::ops::RouterScoring::Sigmoid => row.iter().map(|&l| 0.5 * (1.0 + (l / 2.0).tanh())).collect(),
        };
        let choice: Vec<f64> = (0..experts).map(|e| scores[e] + bias.map_or(0.0, |b| b[e])).collect();
        let mut eligible: Vec<usize> = (0..experts).collect();
        if let Some(g) = p.groups {
            let per = experts / g.groups;
            let mut ranked_groups: Vec<(usize, f64)> = (0..g.groups)
                .map(|i| {
                    let mut c = choice[i * per..(i + 1) * per].to_vec();
                    c.sort_by(|a, b| b.total_cmp(a));
                    (i, c[0] + c[1])
                })
                .collect();
            ranked_groups.sort_by(|a, b| b.1.total_cmp(&a.1)); // stable: ties keep the lower group first
            let kept: Vec<usize> = ranked_groups[..g.top_groups].iter().map(|&(i, _)| i).collect();
            eligible.retain(|e| kept.contains(&(e / per)));
        }
        eligible.sort_by(|&a, &b| choice[b].total_cmp(&choice[a]));
        let chosen = &eligible[..k];
        let sum: f64 = chosen.iter().map(|&e| scores[e]).sum();
        let norm = if p.renormalize { sum } else { 1.0 };
        out.extend(chosen.iter().map(|&e| scores[e] / norm * p.scale as f64));
        out.extend(chosen.iter().map(|&e| e as f64));
    }
    out
}

/// Each (token, choice) row through its expert's own [n, k] block, cut out
/// of the stack and multiplied by the transposed-weight matmul above, then
/// scaled by the expert's scale before its bias is added.
fn moe_matmul(
    experts: usize,
    x: &[f64],
    w: &[f64],
    route: &[f64],
    [bias, scale]: [Option<&[f64]>; 2],
    [k, top_k]: [usize; 2],
) -> Vec<f64> {
    let n = w.len() / k / experts;
    let tokens = route.len() / (2 * top_k);
    let per_choice = x.len() / k != tokens;
    let mut out = Vec::new();
    for t in 0..tokens {
        for j in 0..top_k {
            let e = route[t * 2 * top_k + top_k + j] as usize;
            let r = if per_choice { t * top_k + j } else { t };
            let block = &w[e * n * k..(e + 1) * n * k];
            let s = scale.map_or(1.0, |s| s[e]);
            let y = matmul(&x[r * k..(r + 1) * k], block, None, [1, k, n]);
            out.extend(y.iter().enumerate().map(|(c, y)| y * s + bias.map_or(0.0, |b| b[e * n + c])));
        }
    }
    out
}

fn moe_combine(y: &[f64], route: &[f64], top_k: usize) -> Vec<f64> {
    let tokens = route.len() / (2 * top_k);
    let n = y.len() / (tokens * top_k).max(1);
    (0..tokens)
        .flat_map(|t| {
            (0..n).map(move |c| (0..top_k).map(|j| route[t * 2 * top_k + j] * y[(t * top_k + j) * n + c]).sum::<f64>())
        })
        .collect()
}

/// Per row: softmax(x / t) in f64 (NaN as -inf), then the first column whose
/// cumulative weight passes u (clamped into [0, 1]) of the total: a running
/// sum compared in place, where the engine's kernels scan; the last column of
/// weight > 0 when none does (u NaN, or at the top). A temperature that is
/// not finite and positive, or a row with no finite max, is the argmax.
fn sample(x: &[f64], cols: usize, t: &[f64], u: &[f64]) -> Vec<f64> {
    x.chunks(cols)
        .zip(t.iter().zip(u))
        .map(|(row, (&t, &u))| {
            let z: Vec<f64> = row.iter().map(|&v| if v.is_nan() { f64::NEG_INFINITY } else { v / t }).collect();
            let m = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            if !(t > 0.0 && t.is_finite() && m.is_finite()) {
                return argmax(row, cols)[0];
            }
            let w: Vec<f64> = z.iter().map(|&v| (v - m).exp()).collect();
            let target = u.clamp(0.0, 1.0) * w.iter().sum::<f64>();
            let cum: Vec<f64> = w
                .iter()
                .scan(0.0, |acc, &v| {
                    *acc += v;
                    Some(*acc)
                })
                .collect();
            let last_positive = w.iter().rposition(|&v| v > 0.0).unwrap_or(0);
            cum.iter().position(|&c| c > target).unwrap_or(last_positive) as f64
        })
        .collect()
}

/// Per row: the max of the values that are not NaN, then the first place
/// holding it (== makes -0 and +0 one value); 0 when the row has no number.
/// Two passes, where the engine keeps a running best.
fn argmax(x: &[f64], cols: usize) -> Vec<f64> {
    x.chunks(cols)
        .map(|row| {
            let max = row.iter().copied().filter(|v| !v.is_nan()).reduce(f64::max);
            let at = max.and_then(|m| row.iter().position(|&v| v == m));
            at.unwrap_or(0) as f64
        })
        .collect()
}

fn gather_rows(table: &[f64], cols: usize, ids: &[u32]) -> Result<Vec<f64>, String> {
    let mut out = Vec::with_capacity(ids.len() * cols);
    for &id in ids {
        let row = table.get(id as usize * cols..(id as usize + 1) * cols).ok_or(format!("id {id} out of range"))?;
        out.extend_from_slice(row);
    }
    Ok(out)
}

fn rms_norm(x: &[f64], w: &[f64], eps: f64, unit_offset: bool) -> Vec<f64> {
    let cols = w.len();
    let mut out = Vec::with_capacity(x.len());
    if cols == 0 {
        return out;
    }
    for row in x.chunks(cols) {
        let rms = (row.iter().map(|v| v * v).sum::<f64>() / cols as f64 + eps).sqrt();
        for (v, g) in row.iter().zip(w) {
            let gain = if unit_offset { 1.0 + g } else { *g };
            out.push(v / rms * gain);
        }
    }
    out
}

/// x (m, k), w (n, k): transpose w to (k, n), then accumulate rows of
/// `x[i, kk] * wt[kk, :]` (the i-k-j order, unlike the engine's dot products).
fn matmul(x: &[f64], w: &[f64], bias: Option<&[f64]>, [m, k, n]: [usize; 3]) -> Vec<f64> {
    let mut wt = vec![0.0; k * n];
    for j in 0..n {
        for kk in 0..k {
            wt[kk * n + j] = w[j * k + kk];
        }
    }
    let mut out = Vec::with_capacity(m * n);
    for i in 0..m {
        let mut acc = bias.map_or_else(|| vec![0.0; n], <[f64]>::to_vec);
        for kk in 0..k {
            let a = x[i * k + kk];
            for (o, b) in acc.iter_mut().zip(&wt[kk * n..(kk + 1) * n]) {
                *o += a * b;
            }
        }
        out.extend(acc);
    }
    out
}

/// Each rotated pair is a complex number z = a + ib, multiplied by
/// `s * e^(i theta)`. The angle `p * inv_freq` is rounded to f32 first,
/// as transformers computes it (`inv_freq @ position_ids` in float32) and as
/// the op defines it; cos, sin and the product are f64.
fn rope(p: &Rope, x: &[f64], positions: &[u32], inv_freq: &[f64], head_dim: usize) -> Vec<f64> {
    let half = inv_freq.len();
    let heads_per_token = x.len() / (positions.len() * head_dim).max(1);
    let mut out = x.to_vec();
    if head_dim == 0 {
        return out;
    }
    for (head, chunk) in out.chunks_mut(head_dim).enumerate() {
        let pos = positions[head / heads_per_token];
        for (i, &f) in inv_freq.iter().enumerate() {
            let theta = (pos as f32 * f as f32) as f64;
            let (re_i, im_i) = match p.style {
                RopeStyle::Neox => (i, i + half),
                RopeStyle::Interleaved => (2 * i, 2 * i + 1),
            };
            let (re, im) = complex_mul((chunk[re_i], chunk[im_i]), (theta.cos(), theta.sin()));
            chunk[re_i] = p.attention_scale as f64 * re;
            chunk[im_i] = p.attention_scale as f64 * im;
        }
    }
    out
}

fn complex_mul((a, b): (f64, f64), (c, d): (f64, f64)) -> (f64, f64) {
    (a * c - b * d, a * d + b * c)
}

fn kv_store(src: &[f64], slots: &[u32], mut cache: Vec<f64>, num_slots: usize) -> Result<Vec<f64>, String> {
    let row = cache.len() / num_slots;
    for (t, &slot) in slots.iter().enumerate() {
        let dst =
            cache.get_mut(slot as usize * row..(slot as usize + 1) * row).ok_or(format!("slot {slot} out of range"))?;
        dst.copy_from_slice(&src[t * row..(t + 1) * row]);
    }
    Ok(cache)
}

#[derive(Clone, Copy)]
struct Dims {
    heads: usize,
    kv_heads: usize,
    d: usize,
    max_blocks: usize,
}

/// For each sequence: gather its keys and values for positions 0..ctx into
/// dense (ctx, kv_heads, d) arrays, then every query of that sequence
/// attends over all ctx positions with masked ones set to -inf.
#[allow(clippy::too_many_arguments)]
fn attention(
    p: &Attention,
    Dims { heads, kv_heads, d, max_blocks }: Dims,
    q: &[f64],
    k_cache: &[f64],
    v_cache: &[f64],
    (tables, token_seq, positions): (&[u32], &[u32], &[u32]),
    sinks: Option<&[f64]>,
    selected: Option<(&[u32], usize)>,
) -> Result<Vec<f64>, String> {
    let bs = p.block_size;
    let row = kv_heads * d;
    let mut out = vec![0.0; q.len()];
    let seqs = tables.len() / max_blocks;
    for s in 0..seqs {
        let tokens: Vec<usize> = (0..token_seq.len()).filter(|&t| token_seq[t] as usize == s).collect();
        let Some(ctx) = tokens.iter().map(|&t| positions[t] as usize + 1).max() else {
            continue;
        };
        // dense (ctx, kv_heads, d) keys and values of sequence s
        let (mut keys, mut values) = (Vec::with_capacity(ctx * row), Vec::with_capacity(ctx * row));
        for j in 0..ctx {
            let block = *tables
                .get(s * max_blocks + j / bs)
                .filter(|_| j / bs < max_blocks)
                .ok_or("position past block table")?;
            let slot = block as usize * bs + j % bs;
            keys.extend_from_slice(k_cache.get(slot * row..(slot + 1) * row).ok_or("slot out of range")?);
            values.extend_from_slice(&v_cache[slot * row..(slot + 1) * row]);
        }
        for &t in &tokens {
            let pos = positions[t] as usize;
            let listed = |j: usize| selected.is_none_or(|(sel, n)| sel[t * n..][..n].contains(&(j as u32)));
            let visible = |j: usize| j <= pos && p.window.is_none_or(|w| pos - j < w) && listed(j);
            for h in 0..heads {
                let kvh = h * kv_heads / heads; // the group query head h belongs to
                let qv = &q[(t * heads + h) * d..][..d];
                let mut scores: Vec<f64> = (0..ctx)
                    .map(|j| {
                        if !visible(j) {
                            return f64::NEG_INFINITY;
                        }
                        let kv = &keys[j * row + kvh * d..][..d];
                        let s = p.scale as f64 * qv.iter().zip(kv).map(|(a, b)| a * b).sum::<f64>();
                        p.softcap.map_or(s, |cap| cap as f64 * (s / cap as f64).tanh())
                    })
                    .collect();
                // a sink is one more score whose weight is then dropped (as transformers does)
                scores.extend(sinks.map(|s| s[h]));
                let weights = &softmax(&scores)[..ctx];
                let o = &mut out[(t * heads + h) * d..][..d];
                for (j, w) in weights.iter().enumerate().filter(|(_, w)| **w > 0.0) {
                    for (oo, vv) in o.iter_mut().zip(&values[j * row + kvh * d..][..d]) {
                        *oo += w * vv;
                    }
                }
            }
        }
    }
    Ok(out)
}

/// exp(-inf) = 0 takes masked positions out.
fn softmax(scores: &[f64]) -> Vec<f64> {
    let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
    let sum: f64 = e.iter().sum();
    e.iter().map(|v| v / sum).collect()
}

/// sigmoid(x) = (1 + tanh(x/2)) / 2, and gelu_tanh(x) = x * sigmoid(2u)
/// with u the tanh argument: the same functions as the engine's, another way.
/// The clamped SwiGLU clamps by min/max in f64.
pub fn glu(act: Activation, x: f64, up: f64) -> f64 {
    let sigmoid = |z: f64| 0.5 * (1.0 + (0.5 * z).tanh());
    match act {
        Activation::Silu => x * sigmoid(x) * up,
        Activation::GeluTanh => {
            let u = (2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x);
            x * sigmoid(2.0 * u) * up
        }
        Activation::SwigluClamped { alpha, limit } => {
            let (alpha, limit) = (alpha as f64, limit as f64);
            let g = if x > limit { limit } else { x };
            let up = up.max(-limit).min(limit);
            g * sigmoid(alpha * g) * (up + 1.0)
        }
    }
}

/// cap * tanh(x / cap), with tanh(y) = 1 - 2 / (e^(2y) + 1), which stays
/// exact at both tails (e^(2y) -> inf gives 1, -> 0 gives -1).
pub fn softcap(cap: f64, x: f64) -> f64 {
    cap * (1.0 - 2.0 / ((2.0 * x / cap).exp() + 1.0))
}

/// Per token: every position's score in f64, then each position ranked by
/// how many score higher (or as high and come earlier); those ranked under
/// k are kept, in position order, and -1 (the harness's reading of
/// u32::MAX) pads the row.
#[allow(clippy::too_many_arguments)]
fn index_topk(
    k: usize,
    heads: usize,
    d: usize,
    q: &[f64],
    w: &[f64],
    keys: &[f64],
    token_seq: &[u32],
    positions: &[u32],
    page: impl Fn(usize, usize) -> Option<usize>,
) -> Result<Vec<f64>, String> {
    let mut out = Vec::new();
    for (t, (&s, &pos)) in token_seq.iter().zip(positions).enumerate() {
        let scores = (0..=pos as usize)
            .map(|j| {
                let slot = page(s as usize, j).ok_or("position past block table")?;
                let key = keys.get(slot * d..(slot + 1) * d).ok_or("slot out of range")?;
                Ok((0..heads)
                    .map(|h| {
                        let dot: f64 = q[(t * heads + h) * d..][..d].iter().zip(key).map(|(a, b)| a * b).sum();
                        w[t * heads + h] * dot.max(0.0)
                    })
                    .sum::<f64>())
            })
            .collect::<Result<Vec<f64>, String>>()?;
        let rank = |j: usize| {
            (0..scores.len()).filter(|&i| scores[i] > scores[j] || (scores[i] == scores[j] && i < j)).count()
        };
        let kept: Vec<f64> = (0..scores.len()).filter(|&j| rank(j) < k).map(|j| j as f64).collect();
        out.extend(kept.iter().copied().chain(std::iter::repeat(-1.0)).take(k));
    }
    Ok(out)
}
