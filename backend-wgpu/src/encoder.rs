//! The pending batch: ops are recorded into one command encoder and nothing
//! is submitted until the host waits (`read` or `sync`), so a forward pass is
//! one submit and one read-back of its logits (or of its greedy ids).
//!
//! Each dispatch's params go into a slot of a uniform arena (256-byte slots,
//! bound with a dynamic offset); the arena's bytes are written with one queue
//! write per chunk just before the submit that reads them. Arena chunks are
//! reused by the next batch: queue writes and submits run in order.
//!
//! Bind groups are cached by (layout, arena chunk, storage ranges): pooled
//! buffers come back to the same roles step after step, so a decode step
//! mostly reuses last step's bind groups. The cache is emptied when it grows
//! past a bound or when the pool frees a buffer (a cached bind group would
//! keep its memory alive).

use std::collections::HashMap;

use ferrum_engine::{Error, Result};

use crate::pipelines::{PARAMS_SLOT, PipelineKey, Pipelines};
use crate::window::Binding;

/// One compute dispatch, as an op plans it.
pub(crate) struct Dispatch {
    pub pipeline: PipelineKey,
    /// The op's `#[repr(C)]` params, as bytes (at most `PARAMS_SLOT`).
    pub params: Vec<u8>,
    /// Storage bindings 1..=n.
    pub bindings: Vec<Binding>,
    pub groups: [u32; 3],
}

/// Slots per arena chunk: 256 dispatches per 64 KiB buffer.
const SLOTS_PER_CHUNK: u64 = 256;
/// Most cached bind groups before the cache starts over.
const MAX_BIND_GROUPS: usize = 16384;

/// What a bind group binds: its layout, the arena chunk, and the storage ranges.
#[derive(PartialEq, Eq, Hash)]
struct BindKey {
    layout: wgpu::BindGroupLayout,
    chunk: usize,
    storage: Vec<(wgpu::Buffer, u64, u64)>,
}

struct ArenaChunk {
    buffer: wgpu::Buffer,
    bytes: Vec<u8>,
}

/// Counts of the work that reached the GPU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// `queue.submit` calls.
    pub submits: u64,
    /// Buffers copied back and mapped for the host.
    pub readbacks: u64,
    /// Bytes those read-backs brought to the host.
    pub readback_bytes: u64,
    /// Compute dispatches recorded.
    pub dispatches: u64,
    /// Bind groups created (the rest came from the cache).
    pub bind_groups: u64,
}

#[derive(Default)]
pub(crate) struct Recorder {
    encoder: Option<wgpu::CommandEncoder>,
    arena: Vec<ArenaChunk>,
    /// Chunks in use by the pending batch.
    used_chunks: usize,
    bind_groups: HashMap<BindKey, wgpu::BindGroup>,
    /// `BufferPool::freed` when the cache was last emptied.
    freed_seen: u64,
    pub stats: Stats,
}

impl Recorder {
    pub fn encoder(&mut self, device: &wgpu::Device) -> &mut wgpu::CommandEncoder {
        self.encoder.get_or_insert_with(|| {
            device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("ferrum batch") })
        })
    }

    pub fn has_pending(&self) -> bool {
        self.encoder.is_some()
    }

    /// Stores `params` in the arena: (chunk index, dynamic offset).
    fn push_params(&mut self, device: &wgpu::Device, params: &[u8]) -> Result<(usize, u32)> {
        if params.len() as u64 > PARAMS_SLOT {
            return Err(Error::Backend(format!("params of {} bytes exceed a slot", params.len())));
        }
        let full = |c: &ArenaChunk| c.bytes.len() as u64 >= SLOTS_PER_CHUNK * PARAMS_SLOT;
        if self.used_chunks == 0 || full(&self.arena[self.used_chunks - 1]) {
            if self.used_chunks == self.arena.len() {
                let buffer = device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("ferrum params"),
                    size: SLOTS_PER_CHUNK * PARAMS_SLOT,
                    usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                });
                self.arena.push(ArenaChunk { buffer, bytes: Vec::new() });
            }
            self.arena[self.used_chunks].bytes.clear();
            self.used_chunks += 1;
        }
        let chunk = &mut self.arena[self.used_chunks - 1];
        let offset = chunk.bytes.len();
        chunk.bytes.extend_from_slice(params);
        chunk.bytes.resize(offset + PARAMS_SLOT as usize, 0);
        Ok((self.used_chunks - 1, offset as u32))
    }

    /// Records `dispatches` as one compute pass. `pool_freed` is the pool's
    /// count of freed buffers (see the module doc).
    pub fn record(
        &mut self,
        device: &wgpu::Device,
        pipelines: &Pipelines,
        dispatches: &[Dispatch],
        pool_freed: u64,
    ) -> Result<()> {
        if pool_freed != self.freed_seen || self.bind_groups.len() > MAX_BIND_GROUPS {
            self.bind_groups.clear();
            self.freed_seen = pool_freed;
        }
        // Everything that can fail happens before the pass begins.
        let mut ready = Vec::with_capacity(dispatches.len());
        for d in dispatches.iter().filter(|d| d.groups.iter().all(|&g| g > 0)) {
            let compiled = pipelines.get(device, &d.pipeline)?;
            let (chunk, offset) = self.push_params(device, &d.params)?;
            let key = BindKey {
                layout: compiled.layout.clone(),
                chunk,
                storage: d.bindings.iter().map(|b| (b.buffer.clone(), b.offset, b.size)).collect(),
            };
            let group = match self.bind_groups.get(&key) {
                Some(g) => g.clone(),
                None => {
                    let g = bind_group(device, &compiled.layout, &self.arena[chunk].buffer, &d.bindings);
                    self.stats.bind_groups += 1;
                    self.bind_groups.insert(key, g.clone());
                    g
                }
            };
            ready.push((compiled, group, offset, d.groups));
        }
        if ready.is_empty() {
            return Ok(());
        }
        let mut pass = self
            .encoder(device)
            .begin_compute_pass(&wgpu::ComputePassDescriptor { label: None, timestamp_writes: None });
        for (compiled, group, offset, [x, y, z]) in &ready {
            pass.set_pipeline(&compiled.pipeline);
            pass.set_bind_group(0, group, &[*offset]);
            pass.dispatch_workgroups(*x, *y, *z);
        }
        drop(pass);
        self.stats.dispatches += ready.len() as u64;
        Ok(())
    }

    /// Submits the pending batch, if any: the arena's params first, then the
    /// commands, in one submit.
    pub fn flush(&mut self, queue: &wgpu::Queue) {
        let Some(encoder) = self.encoder.take() else { return };
        for chunk in &self.arena[..self.used_chunks] {
            queue.write_buffer(&chunk.buffer, 0, &chunk.bytes);
        }
        self.used_chunks = 0;
        queue.submit([encoder.finish()]);
        self.stats.submits += 1;
    }
}

/// Binding 0: a params slot of the arena chunk; then the storage ranges.
fn bind_group(
    device: &wgpu::Device,
    layout: &wgpu::BindGroupLayout,
    params: &wgpu::Buffer,
    storage: &[Binding],
) -> wgpu::BindGroup {
    let mut entries = vec![wgpu::BindGroupEntry {
        binding: 0,
        resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
            buffer: params,
            offset: 0,
            size: wgpu::BufferSize::new(PARAMS_SLOT),
        }),
    }];
    for (i, b) in storage.iter().enumerate() {
        entries.push(wgpu::BindGroupEntry {
            binding: i as u32 + 1,
            resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                buffer: &b.buffer,
                offset: b.offset,
                size: wgpu::BufferSize::new(b.size),
            }),
        });
    }
    device.create_bind_group(&wgpu::BindGroupDescriptor { label: None, layout, entries: &entries })
}
