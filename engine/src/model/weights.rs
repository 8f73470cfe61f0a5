//! The decoder's weights, read from a checkpoint by their Hugging Face names,
//! checked against the config, and uploaded to the backend.

use crate::backend::{Backend, BackendExt};
use crate::config::ModelConfig;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::loader::{RawTensor, StDtype, WeightStore};
use crate::model::prequantized;
use crate::model::quant_policy::QuantPolicy;
use crate::ops::OpKind;
use crate::quant::{QuantFormat, QuantizedMatrix};
use crate::tensor::Tensor;

/// How a weight matrix is held on the backend. The load-time op check and
/// the loader both follow it, so they never disagree.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Held {
    /// Stored quantized in a Hugging Face checkpoint, read as stored.
    Prequantized(QuantFormat),
    /// Quantized on load (`--quant`).
    Quantized(QuantFormat),
    /// A GGUF block format kept packed, where the backend runs every op
    /// the weight is used in on it.
    Packed(QuantFormat),
    /// A float dtype: as stored, or f32 for GGUF blocks a backend cannot run.
    Float(DType),
}

impl Held {
    pub fn dtype(self) -> DType {
        match self {
            Held::Prequantized(f) | Held::Quantized(f) | Held::Packed(f) => DType::Quant(f),
            Held::Float(d) => d,
        }
    }

    /// How matrix `prefix.weight` is held when `uses` run on it; `policy`
    /// applies to linear layers only (`linear`).
    pub fn of(
        store: &WeightStore,
        policy: &QuantPolicy,
        backend: &dyn Backend,
        prefix: &str,
        linear: bool,
        uses: &[OpKind],
    ) -> Result<Held> {
        let name = format!("{prefix}.weight");
        if linear && let Some(stored) = prequantized::stored_format(store, prefix)? {
            return Ok(Held::Prequantized(stored));
        }
        if linear && let Some(format) = policy.format_for(&name) {
            return Ok(Held::Quantized(format));
        }
        if let Some(f) = store.stored_quant(&name)
            && uses.iter().all(|&op| backend.supports(op, DType::Quant(f)))
        {
            return Ok(Held::Packed(f));
        }
        Ok(Held::Float(stored_float_dtype(&name, store.dtype_of(&name)?)?))
    }
}

/// A linear layer: weight [out, in] in its stored dtype, optional f32 bias.
pub struct Linear {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
    /// Memory the weight takes on its backend (packed size when quantized).
    pub weight_bytes: usize,
}

/// Llama-style layers norm before attention and before the MLP; Gemma 2
/// and 3 also norm each block's output ("sandwich" norms).
pub struct LayerWeights {
    pub attn_in_norm: Tensor,
    pub attn_out_norm: Option<Tensor>,
    pub q: Linear,
    pub k: Linear,
    pub v: Linear,
    pub o: Linear,
    pub q_norm: Option<Tensor>,
    pub k_norm: Option<Tensor>,
    /// [heads] learned sink logits (gpt-oss)
    pub sinks: Option<Tensor>,
    pub mlp_in_norm: Tensor,
    pub mlp_out_norm: Option<Tensor>,
    pub mlp: Mlp,
}

/// A layer's feed-forward block.
pub enum Mlp {
    /// gated: down(act(gate(x)) * up(x))
    Dense { gate: Linear, up: Linear, down: Linear },
    /// A mixture of experts: a router [experts, hidden] and each projection
    /// of every expert stacked into one matrix [experts * out, in].
    Experts { router: Linear, gate: Linear, up: Linear, down: Linear },
}

impl Mlp {
    fn linears(&self) -> Vec<&Linear> {
        match self {
            Mlp::Dense { gate, up, down } => vec![gate, up, down],
            Mlp::Experts { router, gate, up, down } => vec![router, gate, up, down],
        }
    }
}

pub struct DecoderWeights {
    pub embed: Tensor,
    /// Memory the embedding takes on its backend (packed size when quantized).
    pub embed_bytes: usize,
    pub layers: Vec<LayerWeights>,
    pub final_norm: Tensor,
    /// `None` when tied to the embedding.
    pub lm_head: Option<Linear>,
}

impl DecoderWeights {
    /// Bytes of every weight as held on the backend.
    pub fn bytes(&self) -> usize {
        let norms = |l: &LayerWeights| {
            [
                Some(&l.attn_in_norm),
                l.attn_out_norm.as_ref(),
                Some(&l.mlp_in_norm),
                l.mlp_out_norm.as_ref(),
                l.q_norm.as_ref(),
                l.k_norm.as_ref(),
                l.sinks.as_ref(),
            ]
            .into_iter()
            .flatten()
            .map(Tensor::size_bytes)
            .sum::<usize>()
        };
        let linears = |l: &LayerWeights| {
            [&l.q, &l.k, &l.v, &l.o]
                .into_iter()
                .chain(l.mlp.linears())
                .map(|x| x.weight_bytes + x.bias.as_ref().map_or(0, Tensor::size_bytes))
                .sum::<usize>()
        };
        self.embed_bytes
            + self.final_norm.size_bytes()
            + self.lm_head.as_ref().map_or(0, |l| l.weight_bytes)
            + self.layers.iter().map(|l| norms(l) + linears(l)).sum::<usize>()
    }

    pub fn lm_head_weight(&self) -> &Tensor {
        self.lm_head.as_ref().map_or(&self.embed, |l| &l.weight)
    }
}

/// Loads by name with shape checks; norms and biases become f32.
pub struct WeightLoader<'a> {
    pub store: &'a WeightStore,
    /// Where the weights go.
    pub backend: &'a dyn Backend,
    /// The backend that will run them, which decides how each is held
    /// ([`Held::of`]): `backend` itself, except in a dry run.
    pub holder: &'a dyn Backend,
    pub policy: &'a QuantPolicy,
    /// Makes each weight in its held dtype and shape without reading the
    /// checkpoint (the op trace, `model/trace.rs`).
    pub dry: bool,
}

impl WeightLoader<'_> {
    pub fn load(&self, config: &ModelConfig) -> Result<DecoderWeights> {
        let h = config.hidden_size;
        let q_out = config.num_heads * config.head_dim;
        let kv_out = config.num_kv_heads * config.head_dim;
        let mut layers = Vec::with_capacity(config.num_layers);
        for l in 0..config.num_layers {
            let p = format!("model.layers.{l}");
            let qk_norm = |name: &str| -> Result<Option<Tensor>> {
                config
                    .qk_norm
                    .then(|| self.vector(&format!("{p}.self_attn.{name}.weight"), config.head_dim))
                    .transpose()
            };
            let norm = |name: &str| self.vector(&format!("{p}.{name}.weight"), h);
            let (attn_out_norm, mlp_in_norm, mlp_out_norm) = if config.sandwich_norms {
                (
                    Some(norm("post_attention_layernorm")?),
                    norm("pre_feedforward_layernorm")?,
                    Some(norm("post_feedforward_layernorm")?),
                )
            } else {
                (None, norm("post_attention_layernorm")?, None)
            };
            layers.push(LayerWeights {
                attn_in_norm: norm("input_layernorm")?,
                attn_out_norm,
                q: self.linear(&format!("{p}.self_attn.q_proj"), q_out, h, config.qkv_bias)?,
                k: self.linear(&format!("{p}.self_attn.k_proj"), kv_out, h, config.qkv_bias)?,
                v: self.linear(&format!("{p}.self_attn.v_proj"), kv_out, h, config.qkv_bias)?,
                o: self.linear(&format!("{p}.self_attn.o_proj"), h, q_out, config.o_bias)?,
                q_norm: qk_norm("q_norm")?,
                k_norm: qk_norm("k_norm")?,
                sinks: config
                    .attention_sinks
                    .then(|| self.vector(&format!("{p}.self_attn.sinks"), config.num_heads))
                    .transpose()?,
                mlp_in_norm,
                mlp_out_norm,
                mlp: self.mlp(config, l)?,
            });
        }
        let lm_head = if tied_lm_head(config, self.store) {
            None
        } else {
            Some(self.linear("lm_head", config.vocab_size, h, false)?)
        };
        let embed = self.weight("model.embed_tokens", config.vocab_size, h, embed_uses(config, self.store))?;
        Ok(DecoderWeights {
            embed: embed.weight,
            embed_bytes: embed.weight_bytes,
            layers,
            final_norm: self.vector("model.norm.weight", h)?,
            lm_head,
        })
    }

    fn mlp(&self, config: &ModelConfig, l: usize) -> Result<Mlp> {
        let (p, h) = (format!("model.layers.{l}.mlp"), config.hidden_size);
        match &config.moe {
            Some(moe) if moe.is_moe_layer(l) => {
                let (e, i) = (moe.experts, moe.expert_intermediate);
                let experts = |proj: &str, out: usize, inp: usize| -> Result<Linear> {
                    let prefix = format!("{p}.experts.{proj}");
                    Ok(Linear {
                        bias: moe.biases.then(|| self.vector(&format!("{prefix}.bias"), e * out)).transpose()?,
                        ..self.weight(&prefix, e * out, inp, &[OpKind::MoeMatmul])?
                    })
                };
                Ok(Mlp::Experts {
                    router: self.linear(&format!("{p}.gate"), e, h, moe.biases)?,
                    gate: experts("gate_proj", i, h)?,
                    up: experts("up_proj", i, h)?,
                    down: experts("down_proj", h, i)?,
                })
            }
            _ => {
                let (i, bias) = (config.intermediate_size, config.mlp_bias);
                Ok(Mlp::Dense {
                    gate: self.linear(&format!("{p}.gate_proj"), i, h, bias)?,
                    up: self.linear(&format!("{p}.up_proj"), i, h, bias)?,
                    down: self.linear(&format!("{p}.down_proj"), h, i, bias)?,
                })
            }
        }
    }

    fn raw(&self, name: &str, shape: &[usize]) -> Result<RawTensor<'_>> {
        let raw = self.store.get(name)?;
        if raw.shape != shape {
            return Err(Error::Weight {
                name: name.into(),
                msg: format!("shape {:?}, the config implies {shape:?}", raw.shape),
            });
        }
        Ok(raw)
    }

    /// A matrix kept in its stored float dtype.
    fn matrix(&self, name: &str, rows: usize, cols: usize) -> Result<Tensor> {
        let raw = self.raw(name, &[rows, cols])?;
        let dtype = stored_float_dtype(name, raw.dtype)?;
        let t = self.backend.upload(&[rows, cols], dtype, &raw.bytes)?;
        self.store.release(name);
        Ok(t)
    }

    fn linear(&self, prefix: &str, out: usize, inp: usize, bias: bool) -> Result<Linear> {
        Ok(Linear {
            bias: bias.then(|| self.vector(&format!("{prefix}.bias"), out)).transpose()?,
            ..self.weight(prefix, out, inp, &[OpKind::Matmul])?
        })
    }

    /// Matrix `prefix.weight` [out, inp] held as [`Held::of`] says (a
    /// linear layer's when `uses` is matmul alone), without its bias.
    fn weight(&self, prefix: &str, out: usize, inp: usize, uses: &[OpKind]) -> Result<Linear> {
        let name = format!("{prefix}.weight");
        // linear layers (experts included) follow the quantization policy
        let linear = matches!(uses, [OpKind::Matmul] | [OpKind::MoeMatmul]);
        let held = Held::of(self.store, self.policy, self.holder, prefix, linear, uses)?;
        if self.dry {
            return Ok(Linear { weight: self.backend.alloc(&[out, inp], held.dtype())?, bias: None, weight_bytes: 0 });
        }
        let upload = |m: QuantizedMatrix| -> Result<Linear> {
            if [m.rows(), m.cols()] != [out, inp] {
                return Err(Error::Weight {
                    name: name.clone(),
                    msg: format!("shape [{}, {}], the config implies [{out}, {inp}]", m.rows(), m.cols()),
                });
            }
            Ok(Linear { weight_bytes: m.storage_bytes(), weight: self.backend.upload_quantized(&m)?, bias: None })
        };
        match held {
            Held::Prequantized(stored) => upload(prequantized::load(self.store, prefix, stored, out, inp)?),
            Held::Packed(_) => {
                let linear = upload(self.store.quantized(&name)?);
                // the backend copied the blocks or reads them through the mmap,
                // which faults released pages back in from the file: safe either way
                self.store.release(&name);
                linear
            }
            Held::Quantized(format) => {
                let raw = self.raw(&name, &[out, inp])?;
                let values = widen_to_f32(&name, &raw)?;
                let packed = QuantizedMatrix::quantize(format, &values, out, inp).map_err(|e| Error::Weight {
                    name: name.clone(),
                    msg: format!("cannot quantize to {format}: {e}"),
                })?;
                self.store.release(&name);
                upload(packed)
            }
            Held::Float(_) => {
                let weight = self.matrix(&name, out, inp)?;
                Ok(Linear { weight_bytes: weight.size_bytes(), weight, bias: None })
            }
        }
    }

    /// A vector widened to f32 (norm gains, biases).
    fn vector(&self, name: &str, len: usize) -> Result<Tensor> {
        if self.dry {
            return self.backend.alloc(&[len], DType::F32);
        }
        let raw = self.raw(name, &[len])?;
        let values = widen_to_f32(name, &raw)?;
        self.backend.upload_f32(&[len], &values)
    }
}

/// Whether the output projection is the embedding table.
pub(crate) fn tied_lm_head(config: &ModelConfig, store: &WeightStore) -> bool {
    config.tie_word_embeddings || !store.contains("lm_head.weight")
}

/// The ops the embedding table is used in: looked up, and multiplied when
/// it is the output projection too.
pub(crate) fn embed_uses(config: &ModelConfig, store: &WeightStore) -> &'static [OpKind] {
    if tied_lm_head(config, store) { &[OpKind::GatherRows, OpKind::Matmul] } else { &[OpKind::GatherRows] }
}

/// The engine dtype a stored float weight keeps.
pub fn stored_float_dtype(name: &str, dtype: StDtype) -> Result<DType> {
    match dtype {
        StDtype::F32 => Ok(DType::F32),
        StDtype::F16 => Ok(DType::F16),
        StDtype::BF16 => Ok(DType::BF16),
        other => Err(Error::Weight {
            name: name.into(),
            msg: format!("stored as {}, which is not supported yet (f32, f16, bf16)", other.name()),
        }),
    }
}

pub fn widen_to_f32(name: &str, raw: &RawTensor<'_>) -> Result<Vec<f32>> {
    Ok(match raw.dtype {
        StDtype::F32 => bytemuck::pod_collect_to_vec(&raw.bytes),
        StDtype::F16 => bytemuck::pod_collect_to_vec::<u8, half::f16>(&raw.bytes).into_iter().map(f32::from).collect(),
        StDtype::BF16 => {
            bytemuck::pod_collect_to_vec::<u8, half::bf16>(&raw.bytes).into_iter().map(f32::from).collect()
        }
        other => {
            return Err(Error::Weight {
                name: name.into(),
                msg: format!("stored as {}, expected a float type", other.name()),
            });
        }
    })
}
