//! Compute pipelines, compiled once per (shader, entry point, override
//! constants) and kept. Shader modules are shared between the pipelines of
//! one file. Compilation runs inside an error scope, so a bad shader is an
//! `Err` here rather than a panic or a deferred device error.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use ferrum_engine::{Error, Result};

/// How a shader uses one storage binding (bindings 1..; 0 is the params uniform).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Access {
    Read,
    ReadWrite,
}

/// Everything that makes one pipeline.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct PipelineKey {
    /// The op file stem in `ferrum_shaders`; `quant/<stem>` for
    /// `ferrum_shaders::QUANT_SHADERS`, `ggml/<stem>` for `GGML_SHADERS`.
    pub shader: &'static str,
    /// Use the `enable f16;` variant (`ferrum_shaders::F16_SHADERS`).
    pub native_f16: bool,
    pub entry: &'static str,
    /// `override` constants; all of ours are u32.
    pub constants: Vec<(&'static str, u32)>,
    /// Storage bindings 1..=n, in order.
    pub storage: &'static [Access],
}

impl PipelineKey {
    pub fn new(shader: &'static str, entry: &'static str, storage: &'static [Access]) -> Self {
        PipelineKey { shader, native_f16: false, entry, constants: Vec::new(), storage }
    }

    pub fn constant(mut self, name: &'static str, value: u32) -> Self {
        self.constants.push((name, value));
        self
    }
}

pub(crate) struct Compiled {
    pub pipeline: wgpu::ComputePipeline,
    pub layout: wgpu::BindGroupLayout,
}

/// The bytes of one params slot: dynamic uniform offsets step by this.
pub(crate) const PARAMS_SLOT: u64 = 256;

#[derive(Default)]
pub(crate) struct Pipelines {
    compiled: Mutex<HashMap<PipelineKey, Arc<Compiled>>>,
    modules: Mutex<HashMap<(&'static str, bool), wgpu::ShaderModule>>,
}

impl Pipelines {
    pub fn count(&self) -> usize {
        self.compiled.lock().map_or(0, |c| c.len())
    }

    pub fn get(&self, device: &wgpu::Device, key: &PipelineKey) -> Result<Arc<Compiled>> {
        let poisoned = || Error::Backend("pipeline cache lock poisoned".into());
        if let Some(c) = self.compiled.lock().map_err(|_| poisoned())?.get(key) {
            return Ok(c.clone());
        }
        let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let module = self.module(device, key.shader, key.native_f16)?;
        let layout = bind_group_layout(device, key.storage);
        let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some(key.shader),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let constants: Vec<(&str, f64)> = key.constants.iter().map(|&(n, v)| (n, v as f64)).collect();
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(key.shader),
            layout: Some(&pipeline_layout),
            module: &module,
            entry_point: Some(key.entry),
            compilation_options: wgpu::PipelineCompilationOptions { constants: &constants, ..Default::default() },
            cache: None,
        });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(Error::Backend(format!("compiling {}::{} {:?}: {e}", key.shader, key.entry, key.constants)));
        }
        let compiled = Arc::new(Compiled { pipeline, layout });
        self.compiled.lock().map_err(|_| poisoned())?.insert(key.clone(), compiled.clone());
        Ok(compiled)
    }

    fn module(&self, device: &wgpu::Device, stem: &'static str, native_f16: bool) -> Result<wgpu::ShaderModule> {
        let mut modules = self.modules.lock().map_err(|_| Error::Backend("shader cache lock poisoned".into()))?;
        if let Some(m) = modules.get(&(stem, native_f16)) {
            return Ok(m.clone());
        }
        let src = match (stem.strip_prefix("quant/"), stem.strip_prefix("ggml/")) {
            (Some(op), _) => ferrum_shaders::quant_source(op),
            (_, Some(op)) => ferrum_shaders::ggml_source(op),
            (None, None) => ferrum_shaders::source(stem, native_f16),
        };
        let src = src.ok_or_else(|| Error::Backend(format!("no shader {stem} (native f16: {native_f16})")))?;
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(stem),
            source: wgpu::ShaderSource::Wgsl(src.into()),
        });
        modules.insert((stem, native_f16), module.clone());
        Ok(module)
    }
}

/// Binding 0: the op's params, a dynamic offset into the uniform arena;
/// bindings 1..: storage buffers.
fn bind_group_layout(device: &wgpu::Device, storage: &[Access]) -> wgpu::BindGroupLayout {
    let stage = wgpu::ShaderStages::COMPUTE;
    let mut entries = vec![wgpu::BindGroupLayoutEntry {
        binding: 0,
        visibility: stage,
        ty: wgpu::BindingType::Buffer {
            ty: wgpu::BufferBindingType::Uniform,
            has_dynamic_offset: true,
            min_binding_size: None,
        },
        count: None,
    }];
    for (i, access) in storage.iter().enumerate() {
        entries.push(wgpu::BindGroupLayoutEntry {
            binding: i as u32 + 1,
            visibility: stage,
            ty: wgpu::BindingType::Buffer {
                ty: wgpu::BufferBindingType::Storage { read_only: *access == Access::Read },
                has_dynamic_offset: false,
                min_binding_size: None,
            },
            count: None,
        });
    }
    device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor { label: None, entries: &entries })
}
