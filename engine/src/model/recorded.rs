//! Decode steps replayed from recordings (`Backend::begin_recording`: CUDA
//! graphs), so a step costs one launch instead of hundreds of host-side
//! `execute` calls.
//!
//! A step is recorded once per shape (sequences, block-table width, and how
//! it ends: logits, `argmax` or `sample`) on tensors that stay: the step
//! inputs, the `sample` op's temperatures and uniforms, the logits and the ids. Later steps of that shape write their inputs into those tensors
//! and replay. Only pure decode steps qualify (one token per sequence, every
//! token's logits wanted), and the block tables are padded to a power of two
//! wide, so a batch re-records only when it changes size or its longest
//! sequence crosses a power of two of blocks. The host checks `execute` made
//! when recording (ids, slots, pages) are made again on every step's inputs
//! before it replays (`BatchLayout::build` and `Model::forward` make most).
//!
//! Recordings write into one KV cache's tensors: they are kept for the cache
//! they were made with (holding its tensors, so nothing they write is freed)
//! and dropped when a step comes with another cache.

use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::backend::{BackendExt, Recording};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::kv_cache::KvCache;
use crate::model::batch::BatchLayout;
use crate::model::decoder::{Decoder, IdPick, PickInputs, StepTensors};
use crate::sampler::DevicePick;
use crate::tensor::Tensor;

/// Recordings kept; the least recently used goes first.
const MAX_RECORDINGS: usize = 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Shape {
    tokens: usize,
    max_blocks: usize,
    end: End,
}

/// What a recorded step gives back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    Logits,
    Argmax,
    Sample,
}

struct Recorded {
    shape: Shape,
    step: StepTensors,
    /// [tokens, vocab] f32
    logits: Tensor,
    /// [tokens] u32, unless the step ends in logits
    ids: Option<Tensor>,
    /// the `sample` op's inputs, when it ends in `sample`
    picks: Option<PickInputs>,
    recording: Box<dyn Recording>,
    last_used: u64,
}

/// What a replayed step gives back.
pub(crate) enum StepOutput {
    Logits(Vec<f32>),
    Ids(Vec<u32>),
}

/// The recordings of one model, for one cache.
#[derive(Default)]
struct Entries {
    list: Vec<Recorded>,
    clock: u64,
    /// The cache the recordings write into (its k and v tensors).
    cache: Vec<Tensor>,
}

impl Entries {
    /// Drops the recordings if `cache` is not theirs.
    fn use_cache(&mut self, cache: &KvCache) {
        let same = self.cache.len() == cache.k.len() + cache.v.len()
            && self.cache.iter().zip(cache.k.iter().chain(&cache.v)).all(|(a, b)| a.same_buffer(b));
        if !same {
            self.list.clear();
            self.cache = cache.k.iter().chain(&cache.v).cloned().collect();
        }
    }
}

/// The recordings of one model.
pub(crate) struct RecordedSteps {
    entries: Mutex<Entries>,
    /// Set when the backend does not record, or `FERRUM_RECORD=0`.
    off: AtomicBool,
}

impl RecordedSteps {
    pub fn new() -> Self {
        let off = std::env::var("FERRUM_RECORD").is_ok_and(|v| v == "0");
        RecordedSteps { entries: Mutex::new(Entries::default()), off: AtomicBool::new(off) }
    }

    /// Turns recording on or off (off drops the recordings).
    pub fn set_on(&self, on: bool) {
        self.off.store(!on, Ordering::Relaxed);
        if !on && let Ok(mut e) = self.entries.lock() {
            *e = Entries::default();
        }
    }

    /// How many recordings are held.
    pub fn count(&self) -> usize {
        self.entries.lock().map_or(0, |e| e.list.len())
    }

    /// Runs `batch` from a recording (made now if its shape has none), or
    /// `Ok(None)` when it does not qualify: the caller runs it op by op.
    /// `picks`: one per row, the ids to pick on the device (all greedy: the
    /// argmax); `None`: the logits.
    pub fn run(
        &self,
        dec: &Decoder,
        batch: &BatchLayout,
        cache: &KvCache,
        picks: Option<&[DevicePick]>,
    ) -> Result<Option<StepOutput>> {
        if self.off.load(Ordering::Relaxed) || !is_pure_decode(batch) {
            return Ok(None);
        }
        let b = dec.backend;
        let batch = padded(batch);
        check_slots(&batch)?;
        let end = match picks {
            None => End::Logits,
            Some(p) if p.iter().all(|p| *p == DevicePick::GREEDY) => End::Argmax,
            Some(_) => End::Sample,
        };
        let shape = Shape { tokens: batch.token_ids.len(), max_blocks: batch.max_blocks, end };
        let mut guard = self.entries.lock().map_err(|_| Error::Backend("recorded steps lock poisoned".into()))?;
        guard.use_cache(cache);
        guard.clock += 1;
        let Entries { list: entries, clock, .. } = &mut *guard;
        let i = match entries.iter().position(|e| e.shape == shape) {
            Some(i) => {
                entries[i].step.write(b, &batch)?;
                if let (Some(inputs), Some(picks)) = (&entries[i].picks, picks) {
                    inputs.write(b, picks)?;
                }
                i
            }
            None => match record(dec, &batch, cache, shape, picks).unwrap_or_else(|e| {
                // a backend that cannot capture this step: run op by op from now on
                // (an error of the step itself comes back from that run)
                eprintln!("ferrum: recording a decode step failed, running steps op by op: {e}");
                None
            }) {
                Some(r) => {
                    if entries.len() >= MAX_RECORDINGS
                        && let Some(lru) = (0..entries.len()).min_by_key(|&j| entries[j].last_used)
                    {
                        entries.swap_remove(lru);
                    }
                    entries.push(r);
                    entries.len() - 1
                }
                None => {
                    self.off.store(true, Ordering::Relaxed);
                    return Ok(None);
                }
            },
        };
        let e = &mut entries[i];
        e.last_used = *clock;
        e.recording.replay()?;
        Ok(Some(match &e.ids {
            Some(ids) => StepOutput::Ids(b.read_u32(ids)?),
            None => StepOutput::Logits(b.read_f32(&e.logits)?),
        }))
    }
}

/// Records `batch`'s step on tensors that stay; `None` if the backend does
/// not record. The step is recorded, not run: the caller replays it.
fn record(
    dec: &Decoder,
    batch: &BatchLayout,
    cache: &KvCache,
    shape: Shape,
    picks: Option<&[DevicePick]>,
) -> Result<Option<Recorded>> {
    let b = dec.backend;
    let step = StepTensors::upload(b, batch, dec.config)?;
    let logits = b.alloc(&[shape.tokens, dec.config.vocab_size], DType::F32)?;
    let ids = if shape.end == End::Logits { None } else { Some(b.alloc(&[shape.tokens], DType::U32)?) };
    let inputs = match (shape.end, picks) {
        (End::Sample, Some(p)) => Some(PickInputs::upload(b, p)?),
        _ => None,
    };
    let pick = match &inputs {
        Some(p) => IdPick::Sample(p),
        None => IdPick::Argmax,
    };
    if !b.begin_recording()? {
        return Ok(None);
    }
    let ops = dec.logits_into(&step, cache, &logits, ids.as_ref().map(|ids| (ids, &pick)));
    let recording = b.end_recording(); // always leave recording mode
    ops?;
    Ok(Some(Recorded { shape, step, logits, ids, picks: inputs, recording: recording?, last_used: 0 }))
}

/// One token per sequence, every token's logits wanted, in order.
fn is_pure_decode(batch: &BatchLayout) -> bool {
    let t = batch.token_ids.len();
    t > 0
        && batch.token_seq.iter().enumerate().all(|(i, &s)| s as usize == i)
        && batch.logit_rows.len() == t
        && batch.logit_rows.iter().enumerate().all(|(i, &r)| r as usize == i)
}

/// `batch` with its block tables padded to a power of two wide.
fn padded(batch: &BatchLayout) -> BatchLayout {
    let width = batch.max_blocks.next_power_of_two();
    let block_tables = batch
        .block_tables
        .chunks(batch.max_blocks)
        .flat_map(|row| row.iter().copied().chain(std::iter::repeat_n(0, width - row.len())))
        .collect();
    BatchLayout {
        token_ids: batch.token_ids.clone(),
        positions: batch.positions.clone(),
        token_seq: batch.token_seq.clone(),
        slots: batch.slots.clone(),
        block_tables,
        max_blocks: width,
        logit_rows: batch.logit_rows.clone(),
    }
}

/// kv_store's check, which a replay does not make: no slot written twice.
fn check_slots(batch: &BatchLayout) -> Result<()> {
    let mut seen = HashSet::with_capacity(batch.slots.len());
    match batch.slots.iter().find(|&&s| !seen.insert(s)) {
        Some(s) => Err(Error::KvCache(format!("slot {s} written twice in one step"))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(seqs: usize, max_blocks: usize) -> BatchLayout {
        BatchLayout {
            token_ids: vec![1; seqs],
            positions: (0..seqs as u32).collect(),
            token_seq: (0..seqs as u32).collect(),
            slots: (0..seqs as u32).map(|s| s * 100).collect(),
            block_tables: (0..(seqs * max_blocks) as u32).collect(),
            max_blocks,
            logit_rows: (0..seqs as u32).collect(),
        }
    }

    #[test]
    fn only_pure_decode_steps_are_recorded() {
        assert!(is_pure_decode(&layout(3, 2)));
        let mut prefill = layout(3, 2);
        prefill.token_seq = vec![0, 0, 1]; // two tokens of sequence 0
        assert!(!is_pure_decode(&prefill));
        let mut some_logits = layout(3, 2);
        some_logits.logit_rows = vec![0, 2];
        assert!(!is_pure_decode(&some_logits));
        assert!(!is_pure_decode(&BatchLayout::default()));
    }

    #[test]
    fn block_tables_are_padded_to_a_power_of_two() {
        let p = padded(&layout(2, 3));
        assert_eq!(p.max_blocks, 4);
        assert_eq!(p.block_tables, [0, 1, 2, 0, 3, 4, 5, 0]);
        assert_eq!(padded(&layout(2, 4)).block_tables, layout(2, 4).block_tables);
    }

    #[test]
    fn a_slot_written_twice_is_an_error() {
        assert!(check_slots(&layout(3, 1)).is_ok());
        let mut l = layout(3, 1);
        l.slots[2] = l.slots[0];
        assert!(check_slots(&l).is_err());
    }
}
