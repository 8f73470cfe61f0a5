//! glu: the gated activation of a gated MLP.
//!
//! `out[i] = act(gate[i]) * up[i]`, with
//! `silu(x) = x / (1 + exp(-x))` (Llama, Mistral, Qwen) or
//! `gelu_tanh(x) = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))` (Gemma);
//! gpt-oss's clamped SwiGLU is
//! `g = min(gate, limit)`, `out = (clamp(up, -limit, limit) + 1) * g / (1 + exp(-alpha g))`.

use super::{Contract, TensorSpec, expect_dtype, expect_inputs};
use crate::dtype::DType;
use crate::error::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Activation {
    Silu,
    GeluTanh,
    /// gpt-oss (`swiglu_alpha`, `swiglu_limit`)
    SwigluClamped {
        alpha: f32,
        limit: f32,
    },
}

impl Activation {
    /// `act(gate) * up`
    pub fn glu(self, gate: f32, up: f32) -> f32 {
        match self {
            Activation::Silu => gate / (1.0 + (-gate).exp()) * up,
            Activation::GeluTanh => {
                let c = (2.0f32 / std::f32::consts::PI).sqrt();
                0.5 * gate * (1.0 + (c * (gate + 0.044715 * gate * gate * gate)).tanh()) * up
            }
            Activation::SwigluClamped { alpha, limit } => {
                let g = gate.min(limit);
                (up.clamp(-limit, limit) + 1.0) * (g / (1.0 + (-alpha * g).exp()))
            }
        }
    }
}

/// Inputs: gate, up f32 of the same shape. Output: that shape, f32.
#[derive(Clone, Debug, PartialEq)]
pub struct Glu {
    pub activation: Activation,
}

impl Glu {
    /// What every backend honours: f32 activations.
    pub const CONTRACT: Contract = Contract::F32;

    const NAME: &'static str = "glu";

    pub fn output_spec(&self, inputs: &[TensorSpec]) -> Result<TensorSpec> {
        expect_inputs(Self::NAME, inputs, 2)?;
        expect_dtype(Self::NAME, "gate", &inputs[0], &[DType::F32])?;
        expect_dtype(Self::NAME, "up", &inputs[1], &[DType::F32])?;
        if inputs[0].shape != inputs[1].shape {
            return Err(Error::op(
                Self::NAME,
                format!("gate {:?} and up {:?} differ", inputs[0].shape, inputs[1].shape),
            ));
        }
        Ok(inputs[0].clone())
    }

    /// gate (n,), up (n,) -> out (n,)
    pub fn reference(&self, gate: &[f32], up: &[f32], out: &mut [f32]) {
        for i in 0..out.len() {
            out[i] = self.activation.glu(gate[i], up[i]);
        }
    }
}
