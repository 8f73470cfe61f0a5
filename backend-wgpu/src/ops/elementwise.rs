//! add, scale, softcap and glu: one invocation per element, over flat
//! windows of at most one binding (see `window::flat_windows`).

use ferrum_engine::ops::{Activation, Glu, Scale, Softcap};
use ferrum_engine::{Result, Tensor};

use super::{Ctx, bytes, u32_of};
use crate::encoder::Dispatch;
use crate::pipelines::{Access, PipelineKey};
use crate::window::{flat_windows, groups_2d};

use Access::{Read, ReadWrite};

/// Mirrors `Params` in shaders/add.wgsl.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub(super) struct AddParams {
    n: u32,
    _pad: [u32; 3],
}

/// Mirrors `Params` in shaders/glu.wgsl.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub(super) struct GluParams {
    n: u32,
    alpha: f32,
    limit: f32,
    _pad: u32,
}

/// Mirrors `Params` in shaders/scale.wgsl.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub(super) struct ScaleParams {
    n: u32,
    factor: f32,
    _pad: [u32; 2],
}

/// Mirrors `Params` in shaders/softcap.wgsl.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub(super) struct SoftcapParams {
    n: u32,
    cap: f32,
    _pad: [u32; 2],
}

const WG: u64 = 256; // @workgroup_size of every elementwise shader

/// One dispatch per flat window; `params(n)` makes the window's params.
fn plan(key: PipelineKey, tensors: &[&Tensor], ctx: &Ctx, params: impl Fn(u32) -> Vec<u8>) -> Result<Vec<Dispatch>> {
    let per_tensor = tensors.iter().map(|t| flat_windows(t, &ctx.limits)).collect::<Result<Vec<_>>>()?;
    let mut dispatches = Vec::new();
    for w in 0..per_tensor[0].len() {
        let n = per_tensor[0][w].0;
        dispatches.push(Dispatch {
            pipeline: key.clone(),
            params: params(u32_of(n, "elements in a window")?),
            bindings: per_tensor.iter().map(|windows| windows[w].1.clone()).collect(),
            groups: groups_2d((n as u64).div_ceil(WG), &ctx.limits)?,
        });
    }
    Ok(dispatches)
}

pub(super) fn add(inputs: &[&Tensor], out: &Tensor, ctx: &Ctx) -> Result<Vec<Dispatch>> {
    let key = PipelineKey::new("add", "main", &[Read, Read, ReadWrite]);
    plan(key, &[inputs[0], inputs[1], out], ctx, |n| bytes(&AddParams { n, _pad: [0; 3] }))
}

pub(super) fn glu(p: &Glu, inputs: &[&Tensor], out: &Tensor, ctx: &Ctx) -> Result<Vec<Dispatch>> {
    let (activation, alpha, limit) = match p.activation {
        Activation::Silu => (0, 0.0, 0.0),
        Activation::GeluTanh => (1, 0.0, 0.0),
        Activation::SwigluClamped { alpha, limit } => (2, alpha, limit),
    };
    let key = PipelineKey::new("glu", "main", &[Read, Read, ReadWrite]).constant("ACTIVATION", activation);
    plan(key, &[inputs[0], inputs[1], out], ctx, |n| bytes(&GluParams { n, alpha, limit, _pad: 0 }))
}

pub(super) fn scale(p: &Scale, inputs: &[&Tensor], out: &Tensor, ctx: &Ctx) -> Result<Vec<Dispatch>> {
    let key = PipelineKey::new("scale", "main", &[Read, ReadWrite]);
    plan(key, &[inputs[0], out], ctx, |n| bytes(&ScaleParams { n, factor: p.factor, _pad: [0; 2] }))
}

pub(super) fn softcap(p: &Softcap, inputs: &[&Tensor], out: &Tensor, ctx: &Ctx) -> Result<Vec<Dispatch>> {
    let key = PipelineKey::new("softcap", "main", &[Read, ReadWrite]);
    plan(key, &[inputs[0], out], ctx, |n| bytes(&SoftcapParams { n, cap: p.cap, _pad: [0; 2] }))
}
