//! The ops a model needs and the memory its weights will take, found by
//! running its forward pass once on a backend that only records: every
//! (op, operand dtype) the decoder asks for, with the weights held as the
//! real backend would hold them (and counted at that size) but never read
//! from the checkpoint. So the load-time check asks for exactly what the
//! forward pass will run, and the memory check knows the weights' size
//! before a byte is loaded, whatever the family, its switches or `--quant`.

use std::sync::{Arc, Mutex};

use crate::backend::{Backend, validate};
use crate::config::ModelConfig;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::kv_cache::KvCache;
use crate::loader::WeightStore;
use crate::model::batch::{BatchLayout, LogitsWanted, SeqChunk};
use crate::model::decoder::Decoder;
use crate::model::quant_policy::QuantPolicy;
use crate::model::rope::RopeTable;
use crate::model::weights::WeightLoader;
use crate::ops::{Op, OpKind};
use crate::tensor::{Buffer, Tensor};

/// What a dry run of the model on `holder` finds.
pub struct Plan {
    /// Every (op, dtype) the forward pass runs, sorted. `argmax` and
    /// `sample` are not among them: without them the host picks.
    pub ops: Vec<(OpKind, DType)>,
    /// Bytes the weights will take on `holder` (quantized ones packed).
    pub weight_bytes: usize,
}

/// The model's forward pass run once on a recording backend, with the
/// weights as `holder` would hold them under `policy`.
pub fn plan(config: &ModelConfig, store: &WeightStore, policy: &QuantPolicy, holder: &dyn Backend) -> Result<Plan> {
    let trace = Trace::default();
    let weights =
        WeightLoader { store, backend: &trace, holder, policy, dry: true, progress: &|_, _| true }.load(config)?;
    let rope_global = RopeTable::new(&trace, &config.rope, config.rotary_head_dim())?;
    let rope_local =
        config.rope_local.as_ref().map(|r| RopeTable::new(&trace, r, config.rotary_head_dim())).transpose()?;
    let decoder = Decoder {
        config,
        backend: &trace,
        weights: &weights,
        rope_global: &rope_global,
        rope_local: rope_local.as_ref(),
        embed_scale: config.scale_embeddings.then_some(1.0),
    };
    let cache = KvCache::new(&trace, config, 1, 16)?;
    let chunk = SeqChunk { tokens: &[0, 0], start_pos: 0, block_table: &[0], logits: LogitsWanted::Last };
    let batch = BatchLayout::build(&[chunk], cache.block_size, cache.num_blocks)?;
    decoder.forward(&batch, &cache)?;
    let mut ops = trace.ops.into_inner().map_err(|_| Error::Backend("trace lock poisoned".into()))?;
    ops.sort_by_key(|(op, d)| (*op, d.name()));
    ops.dedup();
    Ok(Plan { ops, weight_bytes: weights.bytes() })
}

/// A backend whose tensors hold no memory and whose ops only record.
#[derive(Default)]
struct Trace {
    ops: Mutex<Vec<(OpKind, DType)>>,
}

struct NoData;

impl Buffer for NoData {
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

impl Backend for Trace {
    fn name(&self) -> &str {
        "trace"
    }

    fn device_description(&self) -> String {
        "records the ops a forward pass runs".into()
    }

    fn supports(&self, _: OpKind, _: DType) -> bool {
        true
    }

    fn alloc(&self, shape: &[usize], dtype: DType) -> Result<Tensor> {
        Ok(Tensor::from_buffer(shape.to_vec(), dtype, Arc::new(NoData)))
    }

    fn upload(&self, shape: &[usize], dtype: DType, _: &[u8]) -> Result<Tensor> {
        self.alloc(shape, dtype)
    }

    fn write(&self, _: &Tensor, _: &[u8]) -> Result<()> {
        Ok(())
    }

    fn read(&self, src: &Tensor) -> Result<Vec<u8>> {
        Ok(vec![0; src.size_bytes()])
    }

    fn execute(&self, op: &Op, inputs: &[&Tensor], out: &Tensor) -> Result<()> {
        validate(op, inputs, out)?;
        let dtype = op.kind().contract().operand_dtype(inputs, out);
        self.ops.lock().map_err(|_| Error::Backend("trace lock poisoned".into()))?.push((op.kind(), dtype));
        Ok(())
    }

    fn sync(&self) -> Result<()> {
        Ok(())
    }
}
