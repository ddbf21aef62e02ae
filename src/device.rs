//! Choosing the compute device: a hardware GPU through wgpu when one exists, else burn's CPU
//! backend (flex).

use std::fmt;

#[cfg(not(target_arch = "wasm32"))]
use burn::tensor::DeviceKind;
use burn::tensor::Device;
use serde::{Deserialize, Serialize};

#[cfg(not(target_arch = "wasm32"))]
use crate::error::{CotoError, Result};

/// The device requested on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum DeviceChoice {
    /// A hardware GPU through wgpu if one exists; the CPU when wgpu finds only a software
    /// adapter (such as Mesa's llvmpipe) or none.
    #[default]
    Auto,
    /// wgpu, whatever adapter it finds (a software one included).
    Gpu,
    /// burn's CPU backend.
    Cpu,
}

/// A chosen device and a description for logs and reports.
#[derive(Debug, Clone)]
pub struct ComputeDevice {
    /// The burn device (without autodiff; the trainer adds it).
    pub device: Device,
    /// `cpu` or `wgpu`.
    pub backend: &'static str,
    /// The adapter: name, graphics API and type.
    pub adapter: String,
}

impl fmt::Display for ComputeDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.backend, self.adapter)
    }
}

/// A wgpu adapter as reported by the driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdapterSummary {
    /// The adapter's name.
    pub name: String,
    /// Graphics API, e.g. `Vulkan`.
    pub api: String,
    /// `DiscreteGpu`, `IntegratedGpu`, `VirtualGpu`, `Cpu` (software) or `Other`.
    pub kind: String,
    /// Whether the adapter is software rendering on the CPU.
    pub is_software: bool,
}

impl fmt::Display for AdapterSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}, {}, {}", self.name, self.api, self.kind)
    }
}

/// The CPU device.
pub fn cpu_device() -> ComputeDevice {
    ComputeDevice {
        device: Device::flex(),
        backend: "cpu",
        adapter: format!("burn flex, {} threads", std::thread::available_parallelism().map_or(1, |n| n.get())),
    }
}

/// Resolves `choice` to a device, logging the adapter, its API and its type.
#[cfg(not(target_arch = "wasm32"))]
pub fn select_device(choice: DeviceChoice) -> Result<ComputeDevice> {
    if choice == DeviceChoice::Cpu {
        let selected = cpu_device();
        tracing::info!(backend = selected.backend, adapter = %selected.adapter, "compute device");
        return Ok(selected);
    }
    let adapters = list_adapters();
    let best = adapters.iter().max_by_key(|a| (preference(&a.kind), api_preference(&a.api))).cloned();
    let selected = match (choice, best) {
        (DeviceChoice::Cpu, _) => unreachable!("handled above"),
        (DeviceChoice::Auto, Some(adapter)) if !adapter.is_software => wgpu_device(&adapter),
        (DeviceChoice::Auto, found) => {
            match found {
                Some(adapter) => tracing::info!(%adapter, "only a software GPU adapter found; running on the CPU, which is faster"),
                None => tracing::info!("no GPU adapter found"),
            }
            cpu_device()
        }
        (DeviceChoice::Gpu, Some(adapter)) => wgpu_device(&adapter),
        (DeviceChoice::Gpu, None) => {
            return Err(CotoError::Device(
                "--device gpu: wgpu found no adapter; install a Vulkan, Metal or DX12 driver \
                 (on Debian: mesa-vulkan-drivers), or use --device cpu"
                    .into(),
            ));
        }
    };
    tracing::info!(backend = selected.backend, adapter = %selected.adapter, "compute device");
    Ok(selected)
}

#[cfg(not(target_arch = "wasm32"))]
fn wgpu_device(adapter: &AdapterSummary) -> ComputeDevice {
    ComputeDevice {
        device: Device::wgpu(DeviceKind::DefaultDevice),
        backend: "wgpu",
        adapter: adapter.to_string(),
    }
}

/// Ranks adapter types the way wgpu's high-performance preference does.
#[cfg(not(target_arch = "wasm32"))]
fn preference(kind: &str) -> u8 {
    match kind {
        "DiscreteGpu" => 4,
        "IntegratedGpu" => 3,
        "VirtualGpu" => 2,
        "Other" => 1,
        _ => 0,
    }
}

/// Among adapters of one type, the graphics API burn's wgpu device picks first (Vulkan, then
/// Metal, DX12, OpenGL), so that the adapter reported is the one that runs.
#[cfg(not(target_arch = "wasm32"))]
fn api_preference(api: &str) -> u8 {
    match api {
        "Vulkan" => 4,
        "Metal" => 3,
        "Dx12" => 2,
        "Gl" => 1,
        _ => 0,
    }
}

/// Every adapter wgpu can see on this machine.
#[cfg(not(target_arch = "wasm32"))]
pub fn list_adapters() -> Vec<AdapterSummary> {
    use burn::tensor::wgpu::wgpu;

    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle());
    let adapters = block_on(instance.enumerate_adapters(wgpu::Backends::all()));
    adapters
        .into_iter()
        .map(|adapter| {
            let info = adapter.get_info();
            AdapterSummary {
                name: info.name,
                api: format!("{:?}", info.backend),
                kind: format!("{:?}", info.device_type),
                is_software: info.device_type == wgpu::DeviceType::Cpu,
            }
        })
        .collect()
}

/// Drives a future to completion on this thread, polling it in a loop. Native wgpu resolves
/// adapter enumeration and readbacks without an executor, so this suits native callers.
#[cfg(not(target_arch = "wasm32"))]
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let mut context = std::task::Context::from_waker(std::task::Waker::noop());
    loop {
        if let std::task::Poll::Ready(output) = future.as_mut().poll(&mut context) {
            return output;
        }
        std::thread::yield_now();
    }
}
