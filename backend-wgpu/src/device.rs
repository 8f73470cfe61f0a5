//! Finding an adapter and opening a device on it.
//!
//! Adapters are enumerated here, never through `WGPU_ADAPTER_NAME` (wgpu's
//! helper panics when the name matches nothing). `WGPU_BACKEND` picks the
//! graphics API as usual; `FERRUM_WGPU_ADAPTER` (a case-insensitive part of
//! the adapter name) picks among several adapters, and matching none is an
//! error that lists them.

use std::sync::{Arc, Mutex};

use wgpu::{Adapter, Backends, DeviceType, DownlevelFlags, Features, Instance};

/// A device ready for compute, with what it can do.
pub(crate) struct Gpu {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    pub limits: wgpu::Limits,
    /// `enable f16;` shaders can run (Features::SHADER_F16).
    pub native_f16: bool,
    /// `unpack2x16float` is available (every WebGPU adapter; some GL ones lack it).
    pub f16_in_f32: bool,
    /// Errors wgpu reported outside an error scope, drained at the next wait.
    pub errors: Arc<Mutex<Vec<String>>>,
    /// Why the device was lost, once it is.
    pub lost: Arc<Mutex<Option<String>>>,
}

/// The graphics APIs to search: `WGPU_BACKEND` when set, else the primary ones.
fn backends() -> Backends {
    Backends::from_env().unwrap_or(Backends::PRIMARY)
}

fn instance() -> Instance {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
    desc.backends = backends();
    Instance::new(desc)
}

/// Real GPUs first; a CPU (software) adapter last.
fn rank(t: DeviceType) -> u8 {
    match t {
        DeviceType::DiscreteGpu => 0,
        DeviceType::IntegratedGpu => 1,
        DeviceType::VirtualGpu => 2,
        DeviceType::Other => 3,
        DeviceType::Cpu => 4,
    }
}

pub(crate) fn type_name(t: DeviceType) -> &'static str {
    match t {
        DeviceType::DiscreteGpu => "discrete GPU",
        DeviceType::IntegratedGpu => "integrated GPU",
        DeviceType::VirtualGpu => "virtual GPU",
        DeviceType::Other => "other",
        DeviceType::Cpu => "software (CPU)",
    }
}

/// Every adapter that can run compute shaders, best first.
fn compute_adapters(instance: &Instance) -> Vec<Adapter> {
    let mut adapters: Vec<Adapter> = pollster::block_on(instance.enumerate_adapters(backends()))
        .into_iter()
        .filter(|a| a.get_downlevel_capabilities().flags.contains(DownlevelFlags::COMPUTE_SHADERS))
        .collect();
    adapters.sort_by_key(|a| rank(a.get_info().device_type));
    adapters
}

/// One line per adapter: name, type, API, and the limits that shape our kernels.
pub fn describe_adapters() -> Result<Vec<String>, String> {
    let adapters = compute_adapters(&instance());
    if adapters.is_empty() {
        return Err(no_adapter_reason());
    }
    Ok(adapters
        .iter()
        .map(|a| {
            let (info, l) = (a.get_info(), a.limits());
            let f16 = if a.features().contains(Features::SHADER_F16) { "yes" } else { "no" };
            format!(
                "{} ({}, {:?}, {}): max binding {} MiB, max buffer {} MiB, {} storage buffers/stage, \
                 workgroup storage {} KiB, {} invocations/workgroup, shader f16 {f16}",
                info.name,
                type_name(info.device_type),
                info.backend,
                info.driver_info,
                l.max_storage_buffer_binding_size >> 20,
                l.max_buffer_size >> 20,
                l.max_storage_buffers_per_shader_stage,
                l.max_compute_workgroup_storage_size >> 10,
                l.max_compute_invocations_per_workgroup,
            )
        })
        .collect())
}

fn no_adapter_reason() -> String {
    format!(
        "no WebGPU adapter with compute shaders for backends {:?} (no GPU driver or Vulkan loader? \
         on Debian, lavapipe is `apt-get install mesa-vulkan-drivers libvulkan1`)",
        backends()
    )
}

/// The best adapter (or the one `FERRUM_WGPU_ADAPTER` names), refused when it
/// is a software one and `allow_software` is false.
fn choose(allow_software: bool) -> Result<Adapter, String> {
    let adapters = compute_adapters(&instance());
    let names = || adapters.iter().map(|a| a.get_info().name).collect::<Vec<_>>().join(", ");
    let chosen = match std::env::var("FERRUM_WGPU_ADAPTER") {
        Ok(want) => {
            let want_lc = want.to_lowercase();
            let found = adapters.iter().find(|a| a.get_info().name.to_lowercase().contains(&want_lc));
            found.ok_or_else(|| format!("FERRUM_WGPU_ADAPTER={want:?} matches no adapter; adapters: {}", names()))?
        }
        Err(_) => adapters.first().ok_or_else(no_adapter_reason)?,
    };
    let info = chosen.get_info();
    if info.device_type == DeviceType::Cpu && !allow_software {
        return Err(format!("only a software adapter is present ({}); ask for --backend wgpu to use it", info.name));
    }
    Ok(chosen.clone())
}

/// Opens a device on the chosen adapter with all its limits, and SHADER_F16
/// when it has it and `want_f16` allows.
pub(crate) fn open(allow_software: bool, want_f16: bool) -> Result<Gpu, String> {
    let adapter = choose(allow_software)?;
    let info = adapter.get_info();
    let native_f16 = want_f16 && adapter.features().contains(Features::SHADER_F16);
    let desc = wgpu::DeviceDescriptor {
        label: Some("ferrum"),
        required_features: if native_f16 { Features::SHADER_F16 } else { Features::empty() },
        required_limits: adapter.limits(),
        ..Default::default()
    };
    let (device, queue) =
        pollster::block_on(adapter.request_device(&desc)).map_err(|e| format!("{}: request_device: {e}", info.name))?;
    // wgpu's default handler panics; errors become Err at the next wait instead.
    let errors = Arc::new(Mutex::new(Vec::new()));
    let sink = errors.clone();
    device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
        if let Ok(mut v) = sink.lock() {
            v.push(e.to_string());
        }
    }));
    let lost = Arc::new(Mutex::new(None));
    let lost_sink = lost.clone();
    device.set_device_lost_callback(move |reason, msg| {
        if let Ok(mut l) = lost_sink.lock() {
            *l = Some(format!("{reason:?}: {msg}"));
        }
    });
    let f16_in_f32 = adapter.get_downlevel_capabilities().flags.contains(DownlevelFlags::SHADER_F16_IN_F32);
    Ok(Gpu { limits: device.limits(), device, queue, info, native_f16, f16_in_f32, errors, lost })
}

impl Gpu {
    /// `Err` once the device is lost or wgpu reported an error; drains the errors.
    pub fn check(&self) -> Result<(), String> {
        if let Some(why) = self.lost.lock().map_err(|_| "lock poisoned")?.as_ref() {
            return Err(format!("device lost ({why})"));
        }
        let mut errors = self.errors.lock().map_err(|_| "lock poisoned")?;
        if errors.is_empty() {
            return Ok(());
        }
        let all = std::mem::take(&mut *errors);
        Err(format!("wgpu: {}", all.join("; ")))
    }

    pub fn description(&self) -> String {
        let i = &self.info;
        let f16 = if self.native_f16 { "native f16" } else { "f16 unpacked from u32" };
        format!(
            "{} ({}, {:?}, {}; max binding {} MiB; {f16})",
            i.name,
            type_name(i.device_type),
            i.backend,
            i.driver_info,
            self.limits.max_storage_buffer_binding_size >> 20
        )
    }
}
