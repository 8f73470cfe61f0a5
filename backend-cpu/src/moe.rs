//! moe_matmul on the CPU: the (token, choice) rows are grouped by expert,
//! so each chosen expert's weights stream through the matmul kernels once
//! per step (`matmul_rows` on its rows of the stack), however many tokens
//! chose it. A per-expert scale multiplies an expert's results before its
//! bias is added.

use ferrum_engine::cpu::CpuData;
use ferrum_engine::ops::{MoeDims, MoeMatmul};
use ferrum_engine::{Error, Result};

use crate::Ctx;
use crate::matmul;
use crate::repack::Repacked;

/// Buffers kept between steps, so a decode step allocates nothing.
#[derive(Default)]
pub struct Scratch {
    /// choice rows (t * K + j), sorted by expert
    order: Vec<usize>,
    /// expert e's rows are `order[starts[e]..starts[e + 1]]`
    starts: Vec<usize>,
    fill: Vec<usize>,
    /// one expert's activation rows and results
    xs: Vec<f32>,
    ys: Vec<f32>,
    /// the router's scores and choices
    pub route: Vec<f32>,
}

/// A stack of expert weights as the backend holds it.
pub enum Stack<'a> {
    Data(&'a CpuData),
    Repacked(&'a Repacked),
}

#[allow(clippy::too_many_arguments)]
pub fn moe_matmul(
    ctx: &Ctx,
    p: &MoeMatmul,
    x: &[f32],
    w: Stack,
    route: &[f32],
    [bias, scale]: [Option<&[f32]>; 2],
    d: MoeDims,
    out: &mut [f32],
) -> Result<()> {
    // a bounds check, so made on replays too
    p.check_route(route, d.top_k)?;
    let (kk, k, n) = (d.top_k, d.k, d.n);
    let mut guard = ctx.moe.lock().map_err(|_| Error::Backend("cpu moe scratch lock poisoned".into()))?;
    let s = &mut *guard;
    // a counting sort of the choices by expert
    s.starts.clear();
    s.starts.resize(p.experts + 1, 0);
    let expert = |row: usize| route[(row / kk) * 2 * kk + kk + row % kk] as usize;
    let rows = d.tokens * kk;
    for row in 0..rows {
        s.starts[expert(row) + 1] += 1;
    }
    for e in 0..p.experts {
        s.starts[e + 1] += s.starts[e];
    }
    s.fill.clear();
    s.fill.extend_from_slice(&s.starts[..p.experts]);
    s.order.resize(rows, 0);
    for row in 0..rows {
        let e = expert(row);
        s.order[s.fill[e]] = row;
        s.fill[e] += 1;
    }
    for e in 0..p.experts {
        let chosen = &s.order[s.starts[e]..s.starts[e + 1]];
        if chosen.is_empty() {
            continue;
        }
        let m = chosen.len();
        s.xs.resize(m * k, 0.0);
        s.ys.resize(m * n, 0.0);
        for (i, &row) in chosen.iter().enumerate() {
            let r = if d.per_choice { row } else { row / kk };
            s.xs[i * k..(i + 1) * k].copy_from_slice(&x[r * k..(r + 1) * k]);
        }
        let b = bias.map(|b| &b[e * n..(e + 1) * n]);
        // with a scale, the bias is added after it
        let fused_bias = if scale.is_some() { None } else { b };
        let (xs, ys) = (&s.xs[..m * k], &mut s.ys[..m * n]);
        match w {
            Stack::Data(w) => matmul::matmul_rows(ctx, xs, w, e * n, fused_bias, [m, k, n], ys)?,
            Stack::Repacked(w) => matmul::repacked(ctx, xs, w, e * n, fused_bias, [m, k, n], ys)?,
        }
        if let Some(scale) = scale {
            for y in ys.chunks_exact_mut(n) {
                y.iter_mut().for_each(|v| *v *= scale[e]);
                if let Some(b) = b {
                    y.iter_mut().zip(b).for_each(|(v, b)| *v += b);
                }
            }
        }
        for (i, &row) in chosen.iter().enumerate() {
            out[row * n..(row + 1) * n].copy_from_slice(&ys[i * n..(i + 1) * n]);
        }
    }
    Ok(())
}
