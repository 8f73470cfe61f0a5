//! The decoder, written once against the Backend trait. Llama, Mistral,
//! Qwen2/3 and Gemma 1/2/3 differ only in switches read from the config:
//! q/k/v bias, q/k norm, sliding windows and local rope, rope scaling, tied
//! embeddings, the MLP activation, (1+w) norms, sandwich norms, embedding
//! scale, attention scale and soft-capping.
//!
//! Per layer (pre-norm residual blocks; `out_norm`s only with sandwich norms):
//!   h = x + out_norm(o_proj(attention(rope(q_norm(q_proj(norm(x)))), rope(k_norm(k_proj(..))), v_proj(..))))
//!   x = h + out_norm(down_proj(act(gate_proj(norm(h))) * up_proj(norm(h))))

use crate::backend::{Backend, BackendExt};
use crate::config::ModelConfig;
use crate::error::Result;
use crate::kv_cache::KvCache;
use crate::model::batch::BatchLayout;
use crate::model::rope::RopeTable;
use crate::model::weights::{Attn, DecoderWeights, IndexerWeights, LayerWeights, Linear, MlaWeights, Mlp};
use crate::ops::{
    Add, Argmax, Attention, Concat, GatherRows, Glu, IndexTopk, KvStore, Matmul, MoeCombine, MoeMatmul, Op, RmsNorm,
    Rope, RopeStyle, Sample, Scale, Softcap,
};
use crate::sampler::DevicePick;
use crate::tensor::Tensor;

/// Every input of one step on the device, shared by every layer; kept and
/// rewritten by recorded steps (`model/recorded.rs`).
pub(crate) struct StepTensors {
    ids: Tensor,
    positions: Tensor,
    token_seq: Tensor,
    slots: Tensor,
    block_tables: Tensor,
    /// None when no logits are wanted
    logit_rows: Option<Tensor>,
    /// MLA's per-head products run as `moe_matmul` with every head chosen
    /// by every token: [T, 2 * heads], weights 1 then ids 0..heads.
    pub head_route: Option<Tensor>,
}

impl StepTensors {
    pub fn upload(b: &dyn Backend, batch: &BatchLayout, config: &ModelConfig) -> Result<Self> {
        let t = batch.token_ids.len();
        let seqs = batch.block_tables.len() / batch.max_blocks;
        let rows = &batch.logit_rows;
        Ok(StepTensors {
            ids: b.upload_u32(&[t], &batch.token_ids)?,
            positions: b.upload_u32(&[t], &batch.positions)?,
            token_seq: b.upload_u32(&[t], &batch.token_seq)?,
            slots: b.upload_u32(&[t], &batch.slots)?,
            block_tables: b.upload_u32(&[seqs, batch.max_blocks], &batch.block_tables)?,
            logit_rows: if rows.is_empty() { None } else { Some(b.upload_u32(&[rows.len()], rows)?) },
            head_route: match &config.mla {
                Some(_) => {
                    let h = config.num_heads;
                    let row = (0..2 * h).map(|i| if i < h { 1.0 } else { (i - h) as f32 });
                    let route: Vec<f32> = std::iter::repeat_n(row, t).flatten().collect();
                    Some(b.upload_f32(&[t, 2 * h], &route)?)
                }
                None => None,
            },
        })
    }

    /// Overwrites every input with `batch`'s, which has the uploaded shapes.
    pub fn write(&self, b: &dyn Backend, batch: &BatchLayout) -> Result<()> {
        let w = |t: &Tensor, v: &[u32]| b.write(t, bytemuck::cast_slice(v));
        w(&self.ids, &batch.token_ids)?;
        w(&self.positions, &batch.positions)?;
        w(&self.token_seq, &batch.token_seq)?;
        w(&self.slots, &batch.slots)?;
        w(&self.block_tables, &batch.block_tables)?;
        match &self.logit_rows {
            Some(rows) => w(rows, &batch.logit_rows),
            None => Ok(()),
        }
    }
}

/// How ids are picked from the logits on the device.
pub(crate) enum IdPick<'a> {
    /// greedy: the `argmax` op
    Argmax,
    /// the `sample` op, with its per-row temperature and uniform
    Sample(&'a PickInputs),
}

impl IdPick<'_> {
    /// The op and its inputs, given the logits.
    fn op<'t>(&'t self, logits: &'t Tensor) -> (Op, Vec<&'t Tensor>) {
        match self {
            IdPick::Argmax => (Op::Argmax(Argmax), vec![logits]),
            IdPick::Sample(p) => (Op::Sample(Sample), vec![logits, &p.temperature, &p.uniform]),
        }
    }
}

/// The `sample` op's per-row inputs on the device, [logit_rows] each.
pub(crate) struct PickInputs {
    temperature: Tensor,
    uniform: Tensor,
}

impl PickInputs {
    pub fn upload(b: &dyn Backend, picks: &[DevicePick]) -> Result<Self> {
        let (t, u) = Self::columns(picks);
        Ok(PickInputs { temperature: b.upload_f32(&[t.len()], &t)?, uniform: b.upload_f32(&[u.len()], &u)? })
    }

    /// Overwrites both with `picks`, as many as uploaded.
    pub fn write(&self, b: &dyn Backend, picks: &[DevicePick]) -> Result<()> {
        let (t, u) = Self::columns(picks);
        b.write(&self.temperature, bytemuck::cast_slice(&t))?;
        b.write(&self.uniform, bytemuck::cast_slice(&u))
    }

    fn columns(picks: &[DevicePick]) -> (Vec<f32>, Vec<f32>) {
        picks.iter().map(|p| (p.temperature, p.uniform)).unzip()
    }
}

/// The indexer key's LayerNorm epsilon (fixed in DeepSeek's and
/// transformers' code, not in the config).
const INDEXER_NORM_EPS: f32 = 1e-6;

pub(crate) struct Decoder<'a> {
    pub config: &'a ModelConfig,
    pub backend: &'a dyn Backend,
    pub weights: &'a DecoderWeights,
    pub rope_global: &'a RopeTable,
    /// Used by sliding-window layers when present (Gemma 3).
    pub rope_local: Option<&'a RopeTable>,
    /// Multiplies the embeddings (Gemma: sqrt(hidden) in the weights' dtype).
    pub embed_scale: Option<f32>,
}

impl Decoder<'_> {
    /// Runs the batch through the model, writing its keys and values into
    /// the cache, and returns logits [logit_rows, vocab] as host f32.
    pub fn forward(&self, batch: &BatchLayout, cache: &KvCache) -> Result<Vec<f32>> {
        let step = StepTensors::upload(self.backend, batch, self.config)?;
        match self.logits(&step, cache, None)? {
            Some(logits) => self.backend.read_f32(&logits),
            None => Ok(Vec::new()),
        }
    }

    /// [`Decoder::forward`], then `pick` on the device: only the ids
    /// [logit_rows] come back to the host.
    pub fn forward_ids(&self, batch: &BatchLayout, cache: &KvCache, pick: &IdPick) -> Result<Vec<u32>> {
        let step = StepTensors::upload(self.backend, batch, self.config)?;
        match self.logits(&step, cache, None)? {
            Some(logits) => {
                let (op, inputs) = pick.op(&logits);
                self.backend.read_u32(&self.backend.run(&op, &inputs)?)
            }
            None => Ok(Vec::new()),
        }
    }

    /// The step's ops, ending in `logits` [logit_rows, vocab] and, with
    /// `ids`, the ids `ids.1` picks from them: what a recorded step records
    /// (only `alloc` and `execute` calls, into tensors that outlive it).
    pub fn logits_into(
        &self,
        step: &StepTensors,
        cache: &KvCache,
        logits: &Tensor,
        ids: Option<(&Tensor, &IdPick)>,
    ) -> Result<()> {
        self.logits(step, cache, Some(logits))?;
        match ids {
            Some((ids, pick)) => {
                let (op, inputs) = pick.op(logits);
                self.backend.execute(&op, &inputs, ids)
            }
            None => Ok(()),
        }
    }

    /// The forward pass up to the logits [logit_rows, vocab], left on the
    /// device (in `into` when given); `None` (after waiting for the cache
    /// writes) when no row is wanted.
    fn logits(&self, step: &StepTensors, cache: &KvCache, into: Option<&Tensor>) -> Result<Option<Tensor>> {
        let b = self.backend;
        let mut x = b.run(&Op::GatherRows(GatherRows), &[&self.weights.embed, &step.ids])?; // (T, hidden)
        if let Some(factor) = self.embed_scale {
            x = b.run(&Op::Scale(Scale { factor }), &[&x])?;
        }
        for (l, layer) in self.weights.layers.iter().enumerate() {
            x = self.layer(l, layer, &x, step, cache)?;
        }
        let Some(rows) = &step.logit_rows else {
            b.sync()?;
            return Ok(None);
        };
        let x = b.run(&Op::GatherRows(GatherRows), &[&x, rows])?; // (R, hidden)
        let x = self.norm(&x, &self.weights.final_norm)?;
        // the last op writes `into`
        let last = |op: &Op, inputs: &[&Tensor]| match into {
            Some(out) => b.execute(op, inputs, out).map(|()| out.clone()),
            None => b.run(op, inputs),
        };
        let lm_head = Op::Matmul(Matmul);
        let logits = match self.config.final_logit_softcap {
            Some(cap) => {
                let logits = b.run(&lm_head, &[&x, self.weights.lm_head_weight()])?; // (R, vocab)
                last(&Op::Softcap(Softcap { cap }), &[&logits])?
            }
            None => last(&lm_head, &[&x, self.weights.lm_head_weight()])?,
        };
        Ok(Some(logits))
    }

    fn layer(&self, l: usize, w: &LayerWeights, x: &Tensor, step: &StepTensors, cache: &KvCache) -> Result<Tensor> {
        let b = self.backend;
        let c = self.config;
        let h = self.norm(x, &w.attn_in_norm)?;
        let a = match &w.attn {
            Attn::Mha { .. } => self.mha(l, w, &h, step, cache)?,
            Attn::Mla(m) => self.mla(l, m, &h, step, cache)?,
        };
        let a = self.linear(&a, &w.o)?;
        let a = self.maybe_norm(a, w.attn_out_norm.as_ref())?;
        let x = b.run(&Op::Add(Add), &[x, &a])?;

        let h = self.norm(&x, &w.mlp_in_norm)?;
        let m = match &w.mlp {
            Mlp::Dense { gate, up, down } => self.gated(&h, [gate, up, down])?,
            Mlp::Experts(e) => {
                let moe = c.moe.as_ref().expect("expert weights come from a MoE config");
                let logits = self.linear(&h, &e.router)?; // (T, experts)
                let mut inputs = vec![&logits];
                inputs.extend(&e.choice_bias);
                let route = b.run(&Op::MoeRoute(moe.route.clone()), &inputs)?; // (T, 2K)
                let (gate, up) = (
                    self.per_route(moe.experts, &h, &e.gate, &route)?,
                    self.per_route(moe.experts, &h, &e.up, &route)?,
                ); // (T*K, I)
                let m = b.run(&Op::Glu(Glu { activation: c.activation }), &[&gate, &up])?;
                let m = self.per_route(moe.experts, &m, &e.down, &route)?; // (T*K, hidden)
                let m = b.run(&Op::MoeCombine(MoeCombine), &[&m, &route])?; // (T, hidden)
                match &e.shared {
                    Some([gate, up, down]) => b.run(&Op::Add(Add), &[&m, &self.gated(&h, [gate, up, down])?])?,
                    None => m,
                }
            }
        };
        let m = self.maybe_norm(m, w.mlp_out_norm.as_ref())?;
        b.run(&Op::Add(Add), &[&x, &m])
    }

    /// down(act(gate(h)) * up(h))
    fn gated(&self, h: &Tensor, [gate, up, down]: [&Linear; 3]) -> Result<Tensor> {
        let (gate, up) = (self.linear(h, gate)?, self.linear(h, up)?);
        let m = self.backend.run(&Op::Glu(Glu { activation: self.config.activation }), &[&gate, &up])?;
        self.linear(&m, down)
    }

    /// `moe_matmul` of x by the stacked `w` (its bias and scales too), rows chosen by `route`.
    fn per_route(&self, experts: usize, x: &Tensor, w: &Linear, route: &Tensor) -> Result<Tensor> {
        let op = Op::MoeMatmul(MoeMatmul { experts, scaled: w.expert_scales.is_some() });
        // on the stack: this runs three times per MoE layer and step
        let mut inputs = [x, &w.weight, route, x, x];
        let mut count = 3;
        for t in w.bias.iter().chain(&w.expert_scales) {
            inputs[count] = t;
            count += 1;
        }
        self.backend.run(&op, &inputs[..count])
    }

    fn rope_table(&self, l: usize) -> &RopeTable {
        match (self.config.layer_windows[l], self.rope_local) {
            (Some(_), Some(local)) => local,
            _ => self.rope_global,
        }
    }

    fn attention(
        &self,
        l: usize,
        q: &Tensor,
        step: &StepTensors,
        cache: &KvCache,
        sinks: Option<&Tensor>,
        selected: Option<&Tensor>,
    ) -> Result<Tensor> {
        let c = self.config;
        let attention = Op::Attention(Attention {
            block_size: cache.block_size,
            scale: c.attention_scale,
            softcap: c.attention_softcap,
            window: c.layer_windows[l],
        });
        let mut inputs = vec![q, &cache.k[l], &cache.v[l], &step.block_tables, &step.token_seq, &step.positions];
        inputs.extend(sinks);
        inputs.extend(selected);
        self.backend.run(&attention, &inputs)
    }

    /// Multi-head attention: q, k, v [T, heads, d] -> [T, heads * d].
    fn mha(&self, l: usize, w: &LayerWeights, h: &Tensor, step: &StepTensors, cache: &KvCache) -> Result<Tensor> {
        let Attn::Mha { q, k, v, q_norm, k_norm } = &w.attn else { unreachable!("called for MHA layers") };
        let (b, c) = (self.backend, self.config);
        let (t, heads, kv_heads, d) = (h.shape()[0], c.num_heads, c.num_kv_heads, c.head_dim);
        let rope_table = self.rope_table(l);
        let q = self.linear(h, q)?.reshape(&[t, heads, d])?;
        let k = self.linear(h, k)?.reshape(&[t, kv_heads, d])?;
        let v = self.linear(h, v)?.reshape(&[t, kv_heads, d])?;
        let q = self.head_norm(q, q_norm.as_ref())?;
        let k = self.head_norm(k, k_norm.as_ref())?;
        let rope = Op::Rope(Rope { style: RopeStyle::Neox, attention_scale: rope_table.attention_scale });
        let q = b.run(&rope, &[&q, &step.positions, &rope_table.inv_freq])?;
        let k = b.run(&rope, &[&k, &step.positions, &rope_table.inv_freq])?;
        let store = Op::KvStore(KvStore { num_slots: cache.num_slots(), dtype: cache.dtype });
        b.execute(&store, &[&k, &step.slots], &cache.k[l])?;
        b.execute(&store, &[&v, &step.slots], &cache.v[l])?;
        self.attention(l, &q, step, cache, w.sinks.as_ref(), None)?.reshape(&[t, heads * d])
    }

    /// Multi-head latent attention, absorbed: each head's query meets the
    /// cached [latent, rotary key] rows (one kv head) as
    /// [k_absorb_h q_nope_h, rope(q_rope_h)], and its output over the same
    /// rows (values are the latent) leaves through v_absorb_h. Per-head
    /// products are `moe_matmul`s whose "experts" are the heads, every
    /// token choosing all of them (`StepTensors::head_route`).
    fn mla(&self, l: usize, w: &MlaWeights, h: &Tensor, step: &StepTensors, cache: &KvCache) -> Result<Tensor> {
        let (b, c) = (self.backend, self.config);
        let m = c.mla.as_ref().expect("MLA weights come from an MLA config");
        let (t, heads, r) = (h.shape()[0], c.num_heads, m.kv_lora_rank);
        let route = step.head_route.as_ref().expect("MLA steps upload the head route");
        let rope_table = self.rope_table(l);
        let rope = Op::Rope(Rope { style: RopeStyle::Interleaved, attention_scale: rope_table.attention_scale });
        let q_in = match &w.q_a {
            Some((q_a, norm)) => self.norm(&self.linear(h, q_a)?, norm)?,
            None => h.clone(),
        };
        let q_nope = self.linear(&q_in, &w.q_nope)?.reshape(&[t * heads, m.nope])?;
        let q_latent = self.per_route(heads, &q_nope, &w.k_absorb, route)?.reshape(&[t, heads, r])?;
        let q_rope = self.linear(&q_in, &w.q_rope)?.reshape(&[t, heads, m.rope])?;
        let q_rope = b.run(&rope, &[&q_rope, &step.positions, &rope_table.inv_freq])?;
        let q = b.run(&Op::Concat(Concat), &[&q_latent, &q_rope])?; // (T, heads, r + rope)
        let latent = self.norm(&self.linear(h, &w.kv_latent)?, &w.kv_norm)?.reshape(&[t, 1, r])?;
        let k_rope = self.linear(h, &w.kv_rope)?.reshape(&[t, 1, m.rope])?;
        let k_rope = b.run(&rope, &[&k_rope, &step.positions, &rope_table.inv_freq])?;
        let kv = b.run(&Op::Concat(Concat), &[&latent, &k_rope])?; // (T, 1, r + rope)
        b.execute(
            &Op::KvStore(KvStore { num_slots: cache.num_slots(), dtype: cache.dtype }),
            &[&kv, &step.slots],
            &cache.k[l],
        )?;
        let selected = match &w.indexer {
            Some(indexer) => Some(self.index(l, indexer, &q_in, h, step, cache)?),
            None => None,
        };
        let a = self.attention(l, &q, step, cache, None, selected.as_ref())?.reshape(&[t * heads, r + m.rope])?;
        self.per_route(heads, &a, &w.v_absorb, route)?.reshape(&[t, heads * m.v])
    }

    /// DeepSeek-V3.2's lightning indexer: caches this step's index keys
    /// and picks the positions [T, top_k] each token attends to. Its rope
    /// is rotate-half over the first `rope` dims of each head.
    fn index(
        &self,
        l: usize,
        w: &IndexerWeights,
        q_in: &Tensor,
        h: &Tensor,
        step: &StepTensors,
        cache: &KvCache,
    ) -> Result<Tensor> {
        let b = self.backend;
        let i =
            self.config.mla.as_ref().and_then(|m| m.indexer.as_ref()).expect("indexer weights come from its config");
        let t = h.shape()[0];
        let rope_table = self.rope_table(l);
        let rope = Op::Rope(Rope { style: RopeStyle::Neox, attention_scale: rope_table.attention_scale });
        let q = self.linear(q_in, &w.wq_b)?.reshape(&[t, i.heads, i.head_dim])?;
        let q = b.run(&rope, &[&q, &step.positions, &rope_table.inv_freq])?;
        // LayerNorm: wk's output is centred, so an RMS norm with a bias is it
        let layer_norm = Op::RmsNorm(RmsNorm { eps: INDEXER_NORM_EPS, unit_offset: false });
        let k = b.run(&layer_norm, &[&self.linear(h, &w.wk)?, &w.k_norm.0, &w.k_norm.1])?;
        let k = b.run(&rope, &[&k.reshape(&[t, 1, i.head_dim])?, &step.positions, &rope_table.inv_freq])?;
        let store = Op::KvStore(KvStore { num_slots: cache.num_slots(), dtype: cache.dtype });
        b.execute(&store, &[&k, &step.slots], &cache.index_k[l])?;
        let weights = self.linear(h, &w.weights_proj)?; // (T, heads)
        let pick = Op::IndexTopk(IndexTopk { block_size: cache.block_size, top_k: i.top_k });
        b.run(&pick, &[&q, &weights, &cache.index_k[l], &step.block_tables, &step.token_seq, &step.positions])
    }

    fn maybe_norm(&self, x: Tensor, w: Option<&Tensor>) -> Result<Tensor> {
        match w {
            Some(w) => self.norm(&x, w),
            None => Ok(x),
        }
    }

    fn norm(&self, x: &Tensor, w: &Tensor) -> Result<Tensor> {
        let op = Op::RmsNorm(RmsNorm { eps: self.config.rms_norm_eps, unit_offset: self.config.norm_unit_offset });
        self.backend.run(&op, &[x, w])
    }

    /// RMSNorm over each head of a [T, heads, d] tensor (Qwen3), or nothing.
    fn head_norm(&self, x: Tensor, w: Option<&Tensor>) -> Result<Tensor> {
        let Some(w) = w else { return Ok(x) };
        let shape = x.shape().to_vec();
        let rows = x.reshape(&[shape[0] * shape[1], shape[2]])?;
        self.norm(&rows, w)?.reshape(&shape)
    }

    fn linear(&self, x: &Tensor, l: &Linear) -> Result<Tensor> {
        match &l.bias {
            Some(bias) => self.backend.run(&Op::Matmul(Matmul), &[x, &l.weight, bias]),
            None => self.backend.run(&Op::Matmul(Matmul), &[x, &l.weight]),
        }
    }
}
