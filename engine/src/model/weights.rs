//! The decoder's weights, read from a checkpoint by their Hugging Face names,
//! checked against the config, and uploaded to the backend.

use crate::backend::{Backend, BackendExt};
use crate::config::{IndexerConfig, MlaConfig, ModelConfig};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::loader::{RawTensor, StDtype, WeightStore};
use crate::model::prequantized;
use crate::model::quant_policy::QuantPolicy;
use crate::ops::OpKind;
use crate::quant::experts::quantize_experts;
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

    /// Bytes a [rows, cols] matrix takes held this way.
    pub fn bytes(self, rows: usize, cols: usize) -> usize {
        match self {
            Held::Prequantized(f) | Held::Quantized(f) | Held::Packed(f) => f.storage_bytes(rows, cols),
            Held::Float(d) => rows * cols * d.size_bytes(),
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
    /// A stack of experts only: [experts] f32 that multiply each expert's
    /// products (NVFP4 experts stored each with its own tensor scale).
    pub expert_scales: Option<Tensor>,
    /// Memory the weight takes on its backend (packed size when quantized).
    pub weight_bytes: usize,
}

/// Llama-style layers norm before attention and before the MLP; Gemma 2
/// and 3 also norm each block's output ("sandwich" norms).
pub struct LayerWeights {
    pub attn_in_norm: Tensor,
    pub attn_out_norm: Option<Tensor>,
    pub attn: Attn,
    pub o: Linear,
    /// [heads] learned sink logits (gpt-oss)
    pub sinks: Option<Tensor>,
    pub mlp_in_norm: Tensor,
    pub mlp_out_norm: Option<Tensor>,
    pub mlp: Mlp,
}

/// How a layer makes its queries, keys and values.
#[allow(clippy::large_enum_variant)] // one per layer: the common variant stays inline
pub enum Attn {
    /// Multi-head (grouped-query) attention, with optional per-head q/k norms.
    Mha { q: Linear, k: Linear, v: Linear, q_norm: Option<Tensor>, k_norm: Option<Tensor> },
    /// Multi-head latent attention (DeepSeek), in the absorbed form.
    Mla(Box<MlaWeights>),
}

/// MLA's projections, cut at load so no op has to slice: per head h, the
/// query's no-position part meets the cached latent through `k_absorb`
/// (`kv_b_proj`'s key rows for h, transposed: the latent's view of q), and
/// the attention's output over the latent leaves through `v_absorb` (its
/// value rows for h, padded with zeros over the rotary columns).
pub struct MlaWeights {
    /// `q_a_proj` and `q_a_layernorm` when the query has a low rank
    pub q_a: Option<(Linear, Tensor)>,
    /// [heads * nope, q_in] and [heads * rope, q_in]: `q_b_proj` (or `q_proj`) split
    pub q_nope: Linear,
    pub q_rope: Linear,
    /// [kv_lora_rank, hidden] and [rope, hidden]: `kv_a_proj_with_mqa` split
    pub kv_latent: Linear,
    pub kv_rope: Linear,
    /// `kv_a_layernorm` [kv_lora_rank]
    pub kv_norm: Tensor,
    /// [heads * kv_lora_rank, nope] and [heads * v, kv_lora_rank + rope]
    pub k_absorb: Linear,
    pub v_absorb: Linear,
    /// DeepSeek-V3.2's lightning indexer
    pub indexer: Option<IndexerWeights>,
}

/// The lightning indexer's projections. Its key's LayerNorm is `k_norm`
/// with a bias after `wk`, whose rows were made to sum to zero at load:
/// that subtracts each key's mean, the part of LayerNorm an RMS norm lacks.
pub struct IndexerWeights {
    /// [heads * head_dim, q_lora_rank], from the query's low-rank input
    pub wq_b: Linear,
    /// [head_dim, hidden], centred
    pub wk: Linear,
    /// the LayerNorm's gain and bias [head_dim]
    pub k_norm: (Tensor, Tensor),
    /// [heads, hidden]: each head's weight in a token's score
    pub weights_proj: Linear,
}

impl Attn {
    fn linears(&self) -> Vec<&Linear> {
        match self {
            Attn::Mha { q, k, v, .. } => vec![q, k, v],
            Attn::Mla(m) => {
                let q_a = m.q_a.as_ref().map(|(l, _)| l);
                let indexer = m.indexer.iter().flat_map(|i| [&i.wq_b, &i.wk, &i.weights_proj]);
                q_a.into_iter()
                    .chain([&m.q_nope, &m.q_rope, &m.kv_latent, &m.kv_rope, &m.k_absorb, &m.v_absorb])
                    .chain(indexer)
                    .collect()
            }
        }
    }

    fn norms(&self) -> Vec<&Tensor> {
        match self {
            Attn::Mha { q_norm, k_norm, .. } => q_norm.iter().chain(k_norm).collect(),
            Attn::Mla(m) => {
                let indexer = m.indexer.iter().flat_map(|i| [&i.k_norm.0, &i.k_norm.1]);
                m.q_a.iter().map(|(_, n)| n).chain([&m.kv_norm]).chain(indexer).collect()
            }
        }
    }
}

/// A layer's feed-forward block.
#[allow(clippy::large_enum_variant)] // one per layer: the common variant stays inline
pub enum Mlp {
    /// gated: down(act(gate(x)) * up(x))
    Dense { gate: Linear, up: Linear, down: Linear },
    /// A mixture of experts: a router [experts, hidden] and each projection
    /// of every expert stacked into one matrix [experts * out, in].
    Experts(Box<ExpertWeights>),
}

pub struct ExpertWeights {
    pub router: Linear,
    /// [experts] added to the scores for choosing only (DeepSeek)
    pub choice_bias: Option<Tensor>,
    pub gate: Linear,
    pub up: Linear,
    pub down: Linear,
    /// The shared experts: a dense gated MLP every token runs (DeepSeek).
    pub shared: Option<[Linear; 3]>,
}

impl Mlp {
    fn linears(&self) -> Vec<&Linear> {
        match self {
            Mlp::Dense { gate, up, down } => vec![gate, up, down],
            Mlp::Experts(e) => {
                [&e.router, &e.gate, &e.up, &e.down].into_iter().chain(e.shared.iter().flatten()).collect()
            }
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
                l.sinks.as_ref(),
            ]
            .into_iter()
            .flatten()
            .chain(l.attn.norms())
            .map(Tensor::size_bytes)
            .sum::<usize>()
        };
        let linears = |l: &LayerWeights| {
            [&l.o]
                .into_iter()
                .chain(l.attn.linears())
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
    /// Told (layers loaded, layers) after each layer; false stops the load
    /// with [`crate::Error::Cancelled`].
    pub progress: &'a dyn Fn(usize, usize) -> bool,
}

impl WeightLoader<'_> {
    pub fn load(&self, config: &ModelConfig) -> Result<DecoderWeights> {
        let h = config.hidden_size;
        // what o_proj takes: the heads' values
        let o_in = config.num_heads * config.mla.as_ref().map_or(config.head_dim, |m| m.v);
        let mut layers = Vec::with_capacity(config.num_layers);
        for l in 0..config.num_layers {
            let p = format!("model.layers.{l}");
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
                attn: match &config.mla {
                    Some(m) => Attn::Mla(Box::new(self.mla(config, m, &p)?)),
                    None => self.mha(config, &p)?,
                },
                o: self.linear(&format!("{p}.self_attn.o_proj"), h, o_in, config.o_bias)?,
                sinks: config
                    .attention_sinks
                    .then(|| self.vector(&format!("{p}.self_attn.sinks"), config.num_heads))
                    .transpose()?,
                mlp_in_norm,
                mlp_out_norm,
                mlp: self.mlp(config, l)?,
            });
            if !(self.progress)(l + 1, config.num_layers) {
                return Err(crate::Error::Cancelled);
            }
        }
        let lm_head = if tied_lm_head(config, self.store) {
            None
        } else {
            Some(self.linear("lm_head", config.vocab_size, h, false)?)
        };
        let embed = self.weight("model.embed_tokens", config.vocab_size, h, embed_uses(config, self.store), 1)?;
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
                    let stack = self.weight(&prefix, e * out, inp, &[OpKind::MoeMatmul], e)?;
                    if let Some(s) = &stack.expert_scales
                        && s.shape() != [e]
                    {
                        let msg = format!("{} tensor scales for {e} experts", s.shape()[0]);
                        return Err(Error::Weight { name: format!("{prefix}.weight"), msg });
                    }
                    Ok(Linear {
                        bias: moe.biases.then(|| self.vector(&format!("{prefix}.bias"), e * out)).transpose()?,
                        ..stack
                    })
                };
                let shared = |i: usize| -> Result<[Linear; 3]> {
                    let s = format!("{p}.shared_experts");
                    Ok([
                        self.linear(&format!("{s}.gate_proj"), i, h, false)?,
                        self.linear(&format!("{s}.up_proj"), i, h, false)?,
                        self.linear(&format!("{s}.down_proj"), h, i, false)?,
                    ])
                };
                Ok(Mlp::Experts(Box::new(ExpertWeights {
                    router: self.linear(&format!("{p}.gate"), e, h, moe.biases)?,
                    choice_bias: moe
                        .choice_bias
                        .then(|| self.vector(&format!("{p}.gate.e_score_correction_bias"), e))
                        .transpose()?,
                    gate: experts("gate_proj", i, h)?,
                    up: experts("up_proj", i, h)?,
                    down: experts("down_proj", h, i)?,
                    shared: moe.shared_intermediate.map(shared).transpose()?,
                })))
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

    fn mha(&self, config: &ModelConfig, p: &str) -> Result<Attn> {
        let (h, d) = (config.hidden_size, config.head_dim);
        let (q_out, kv_out) = (config.num_heads * d, config.num_kv_heads * d);
        let qk_norm = |name: &str| -> Result<Option<Tensor>> {
            config.qk_norm.then(|| self.vector(&format!("{p}.self_attn.{name}.weight"), d)).transpose()
        };
        Ok(Attn::Mha {
            q: self.linear(&format!("{p}.self_attn.q_proj"), q_out, h, config.qkv_bias)?,
            k: self.linear(&format!("{p}.self_attn.k_proj"), kv_out, h, config.qkv_bias)?,
            v: self.linear(&format!("{p}.self_attn.v_proj"), kv_out, h, config.qkv_bias)?,
            q_norm: qk_norm("q_norm")?,
            k_norm: qk_norm("k_norm")?,
        })
    }

    /// MLA's weights, cut as `MlaWeights` says: the query's and kv_a's parts
    /// are rows of the stored matrices, held as stored; the absorbed
    /// products are kv_b transposed per head, in kv_b's float dtype (f32 when
    /// it is quantized).
    fn mla(&self, config: &ModelConfig, m: &MlaConfig, p: &str) -> Result<MlaWeights> {
        let (h, heads, r) = (config.hidden_size, config.num_heads, m.kv_lora_rank);
        let a = format!("{p}.self_attn");
        let (q_in, q_a) = match m.q_lora_rank {
            Some(qr) => {
                let q_a = self.linear(&format!("{a}.q_a_proj"), qr, h, config.qkv_bias)?;
                (qr, Some((q_a, self.vector(&format!("{a}.q_a_layernorm.weight"), qr)?)))
            }
            None => (h, None),
        };
        let q_name = if m.q_lora_rank.is_some() { "q_b_proj" } else { "q_proj" };
        let qk = m.nope + m.rope;
        let q = format!("{a}.{q_name}");
        let q_nope: Vec<usize> = (0..heads).flat_map(|hd| hd * qk..hd * qk + m.nope).collect();
        let q_rope: Vec<usize> = (0..heads).flat_map(|hd| hd * qk + m.nope..(hd + 1) * qk).collect();
        let kv_a = format!("{a}.kv_a_proj_with_mqa");
        let latent: Vec<usize> = (0..r).collect();
        let rope: Vec<usize> = (r..r + m.rope).collect();
        let (k_absorb, v_absorb) = self.absorbed(m, heads, &a)?;
        // kv_b's (or k_b's) float dtype holds its values exactly, transposed or not
        let source = if self.store.contains(&format!("{a}.kv_b_proj.weight")) { "kv_b_proj" } else { "k_b_proj" };
        let absorbed = match Held::of(self.store, self.policy, self.holder, &format!("{a}.{source}"), true, &[])? {
            Held::Float(dtype) => dtype,
            _ => DType::F32,
        };
        let [q_nope, q_rope] = self.weight_parts(&q, heads * qk, q_in, [&q_nope, &q_rope])?;
        let [kv_latent, kv_rope] = self.weight_parts(&kv_a, r + m.rope, h, [&latent, &rope])?;
        Ok(MlaWeights {
            q_a,
            q_nope,
            q_rope,
            kv_latent,
            kv_rope,
            kv_norm: self.vector(&format!("{a}.kv_a_layernorm.weight"), r)?,
            k_absorb: self.float_linear(heads * r, m.nope, k_absorb, absorbed)?,
            v_absorb: self.float_linear(heads * m.v, r + m.rope, v_absorb, absorbed)?,
            indexer: match (&m.indexer, m.q_lora_rank) {
                (Some(i), Some(qr)) => Some(self.indexer(h, qr, i, &format!("{a}.indexer"))?),
                _ => None,
            },
        })
    }

    /// `k_absorb` [heads * r, nope] and `v_absorb` [heads * v, r + rope]
    /// (empty in a dry run): cut from `kv_b_proj` [heads * (nope + v), r],
    /// or as GGUF files store them, `k_b_proj` (already per head [r, nope])
    /// and `v_b_proj` [heads * v, r].
    fn absorbed(&self, m: &MlaConfig, heads: usize, a: &str) -> Result<(Vec<f32>, Vec<f32>)> {
        let r = m.kv_lora_rank;
        let (mut k_absorb, mut v_absorb) = (Vec::new(), Vec::new());
        let kv_b_name = format!("{a}.kv_b_proj.weight");
        if !self.store.contains(&kv_b_name) {
            let k_b = self.host_f32(&format!("{a}.k_b_proj.weight"), heads * r, m.nope)?;
            let v_b = self.host_f32(&format!("{a}.v_b_proj.weight"), heads * m.v, r)?;
            for row in v_b.chunks_exact(r) {
                v_absorb.extend(row.iter().copied().chain(std::iter::repeat_n(0.0, m.rope)));
            }
            return Ok((k_b, v_absorb));
        }
        let kvb = m.nope + m.v;
        let kv_b = self.host_f32(&kv_b_name, heads * kvb, r)?;
        if !self.dry {
            k_absorb.reserve(heads * r * m.nope);
            for hd in 0..heads {
                // kv_b's key rows of head hd, [nope, r], transposed to [r, nope]
                for c in 0..r {
                    k_absorb.extend((0..m.nope).map(|d| kv_b[(hd * kvb + d) * r + c]));
                }
                for d in 0..m.v {
                    v_absorb.extend_from_slice(&kv_b[(hd * kvb + m.nope + d) * r..][..r]);
                    v_absorb.extend(std::iter::repeat_n(0.0, m.rope));
                }
            }
        }
        Ok((k_absorb, v_absorb))
    }

    /// The lightning indexer's weights; `wk`'s rows are centred (each
    /// column less its mean over the rows), so its output has mean zero.
    fn indexer(&self, h: usize, q_lora_rank: usize, i: &IndexerConfig, p: &str) -> Result<IndexerWeights> {
        let mut wk = self.host_f32(&format!("{p}.wk.weight"), i.head_dim, h)?;
        if !wk.is_empty() {
            for c in 0..h {
                let mean = (0..i.head_dim).map(|r| wk[r * h + c] as f64).sum::<f64>() / i.head_dim as f64;
                (0..i.head_dim).for_each(|r| wk[r * h + c] = (wk[r * h + c] as f64 - mean) as f32);
            }
        }
        Ok(IndexerWeights {
            wq_b: self.linear(&format!("{p}.wq_b"), i.heads * i.head_dim, q_lora_rank, false)?,
            wk: self.float_linear(i.head_dim, h, wk, DType::F32)?,
            k_norm: (
                self.vector(&format!("{p}.k_norm.weight"), i.head_dim)?,
                self.vector(&format!("{p}.k_norm.bias"), i.head_dim)?,
            ),
            weights_proj: self.linear(&format!("{p}.weights_proj"), i.heads, h, false)?,
        })
    }

    /// Matrix `name` [rows, cols] widened (or, stored quantized, dequantized)
    /// to f32 on the host; empty in a dry run. A linear the policy quantizes
    /// holds its quantized values, as it would loaded from `ferrum quantize`'s
    /// output.
    fn host_f32(&self, name: &str, rows: usize, cols: usize) -> Result<Vec<f32>> {
        if self.dry {
            let _ = self.store.dtype_of(name)?; // it must exist
            return Ok(Vec::new());
        }
        let prefix = name.strip_suffix(".weight").unwrap_or(name);
        if let Some(stored) = prequantized::stored_format(self.store, prefix)? {
            return Ok(prequantized::load(self.store, prefix, stored, rows, cols)?.single(name)?.dequantize());
        }
        let mut values = widen_to_f32(name, &self.raw(name, &[rows, cols])?)?;
        self.store.release(name);
        if let Some(format) = self.policy.format_for(name) {
            let quantized = QuantizedMatrix::quantize(format, &values, rows, cols)
                .map_err(|e| Error::Weight { name: name.into(), msg: format!("cannot quantize to {format}: {e}") })?;
            values = quantized.dequantize();
        }
        Ok(values)
    }

    /// A matrix made on the host, as a linear layer without bias, held in
    /// `dtype` (f32, or a narrower float the caller knows holds every value).
    fn float_linear(&self, rows: usize, cols: usize, values: Vec<f32>, dtype: DType) -> Result<Linear> {
        let weight = match dtype {
            _ if self.dry => self.backend.alloc(&[rows, cols], dtype)?,
            DType::F16 => {
                let bytes: Vec<u8> = values.iter().flat_map(|&v| half::f16::from_f32(v).to_le_bytes()).collect();
                self.backend.upload(&[rows, cols], dtype, &bytes)?
            }
            DType::BF16 => {
                let bytes: Vec<u8> = values.iter().flat_map(|&v| half::bf16::from_f32(v).to_le_bytes()).collect();
                self.backend.upload(&[rows, cols], dtype, &bytes)?
            }
            _ => self.backend.upload_f32(&[rows, cols], &values)?,
        };
        Ok(Linear { weight_bytes: weight.size_bytes(), weight, bias: None, expert_scales: None })
    }

    /// Two parts of linear `prefix`'s matrix [out, inp], each some of its
    /// rows, held as the whole would be (a float as stored, a quantized one
    /// still packed: see `QuantizedMatrix::select_rows`), so a projection is
    /// cut into parts without being widened, and read (or quantized) once.
    fn weight_parts(&self, prefix: &str, out: usize, inp: usize, parts: [&[usize]; 2]) -> Result<[Linear; 2]> {
        let name = format!("{prefix}.weight");
        let linear =
            |weight: Tensor, weight_bytes: usize| Linear { weight, weight_bytes, bias: None, expert_scales: None };
        let [a, b] = if self.dry {
            // the whole's dry run checks the shapes and says the format
            let dtype = match self.weight(prefix, out, inp, &[OpKind::Matmul], 1)?.weight.dtype() {
                DType::Quant(f) => DType::Quant(f.of_selected_rows()),
                d => d,
            };
            parts.map(|rows| {
                let bytes = match dtype {
                    DType::Quant(f) => f.storage_bytes(rows.len(), inp),
                    d => rows.len() * inp * d.size_bytes(),
                };
                Ok(linear(self.backend.alloc(&[rows.len(), inp], dtype)?, bytes))
            })
        } else {
            let whole = match Held::of(self.store, self.policy, self.holder, prefix, true, &[OpKind::Matmul])? {
                Held::Float(dtype) => {
                    let raw = self.raw(&name, &[out, inp])?;
                    let row = inp * dtype.size_bytes();
                    let cut = parts.map(|rows| {
                        let bytes: Vec<u8> =
                            rows.iter().flat_map(|&r| &raw.bytes[r * row..(r + 1) * row]).copied().collect();
                        Ok(linear(self.backend.upload(&[rows.len(), inp], dtype, &bytes)?, rows.len() * row))
                    });
                    self.store.release(&name);
                    let [a, b] = cut;
                    return Ok([a?, b?]);
                }
                Held::Prequantized(f) => prequantized::load(self.store, prefix, f, out, inp)?.single(&name)?,
                Held::Packed(_) => self.store.quantized(&name)?,
                Held::Quantized(format) => {
                    let values = widen_to_f32(&name, &self.raw(&name, &[out, inp])?)?;
                    QuantizedMatrix::quantize(format, &values, out, inp).map_err(|e| Error::Weight {
                        name: name.clone(),
                        msg: format!("cannot quantize to {format}: {e}"),
                    })?
                }
            };
            if [whole.rows(), whole.cols()] != [out, inp] {
                let msg = format!("shape [{}, {}], the config implies [{out}, {inp}]", whole.rows(), whole.cols());
                return Err(Error::Weight { name, msg });
            }
            self.store.release(&name);
            parts.map(|rows| {
                let part = whole.select_rows(rows)?;
                Ok(linear(self.backend.upload_quantized(&part)?, part.storage_bytes()))
            })
        };
        Ok([a?, b?])
    }

    fn raw(&self, name: &str, shape: &[usize]) -> Result<RawTensor<'_>> {
        self.check_shape(name, shape)?;
        self.store.get(name)
    }

    /// The stored shape is the one the config implies: checked before any
    /// data is read, so an absurd config allocates nothing.
    fn check_shape(&self, name: &str, shape: &[usize]) -> Result<()> {
        let stored = self.store.shape_of(name)?;
        if stored != shape {
            return Err(Error::Weight {
                name: name.into(),
                msg: format!("shape {stored:?}, the config implies {shape:?}"),
            });
        }
        Ok(())
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
            ..self.weight(prefix, out, inp, &[OpKind::Matmul], 1)?
        })
    }

    /// Matrix `prefix.weight` [out, inp] held as [`Held::of`] says (a
    /// linear layer's when `uses` is matmul alone), without its bias.
    /// A stack of `experts` (more than one) is quantized an expert at a time.
    fn weight(&self, prefix: &str, out: usize, inp: usize, uses: &[OpKind], experts: usize) -> Result<Linear> {
        let name = format!("{prefix}.weight");
        // linear layers (experts included) follow the quantization policy
        let linear = matches!(uses, [OpKind::Matmul] | [OpKind::MoeMatmul]);
        let held = Held::of(self.store, self.policy, self.holder, prefix, linear, uses)?;
        if self.dry {
            if !matches!(held, Held::Prequantized(_)) {
                self.check_shape(&name, &[out, inp])?;
            }
            if let Held::Quantized(format) = held {
                format.check_shape(out, inp).map_err(|e| Error::Weight {
                    name: name.clone(),
                    msg: format!("cannot quantize to {format}: {e}"),
                })?;
            }
            let held = match held {
                Held::Prequantized(f) => {
                    Held::Prequantized(prequantized::exact_format(self.store, prefix, f, out, inp)?)
                }
                other => other,
            };
            let weight = self.backend.alloc(&[out, inp], held.dtype())?;
            return Ok(Linear { weight, bias: None, expert_scales: None, weight_bytes: held.bytes(out, inp) });
        }
        let upload = |m: QuantizedMatrix| -> Result<Linear> {
            if [m.rows(), m.cols()] != [out, inp] {
                return Err(Error::Weight {
                    name: name.clone(),
                    msg: format!("shape [{}, {}], the config implies [{out}, {inp}]", m.rows(), m.cols()),
                });
            }
            let weight = self.backend.upload_quantized(&m)?;
            Ok(Linear { weight_bytes: m.storage_bytes(), weight, bias: None, expert_scales: None })
        };
        match held {
            Held::Prequantized(stored) => {
                let stored = prequantized::load(self.store, prefix, stored, out, inp)?;
                let expert_scales = match stored.expert_scales {
                    Some(s) if uses == [OpKind::MoeMatmul] => Some(self.backend.upload_f32(&[s.len()], &s)?),
                    Some(s) => {
                        return Err(Error::Weight {
                            name,
                            msg: format!("has {} tensor scales, but is not a stack of experts", s.len()),
                        });
                    }
                    None => None,
                };
                Ok(Linear { expert_scales, ..upload(stored.matrix)? })
            }
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
                let (packed, expert_scales) = quantize_experts(format, &values, experts, out, inp).map_err(|e| {
                    Error::Weight { name: name.clone(), msg: format!("cannot quantize to {format}: {e}") }
                })?;
                self.store.release(&name);
                let expert_scales = expert_scales.map(|s| self.backend.upload_f32(&[s.len()], &s)).transpose()?;
                Ok(Linear { expert_scales, ..upload(packed)? })
            }
            Held::Float(_) => {
                let weight = self.matrix(&name, out, inp)?;
                Ok(Linear { weight_bytes: weight.size_bytes(), weight, bias: None, expert_scales: None })
            }
        }
    }

    /// A vector widened to f32 (norm gains, biases).
    fn vector(&self, name: &str, len: usize) -> Result<Tensor> {
        if self.dry {
            self.check_shape(name, &[len])?;
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
