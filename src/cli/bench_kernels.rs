//! `coto bench --kernels`: the fused WGSL LoRA kernels against the same layer composed from
//! burn operations, for the LoRA layer alone at MiniLM's shapes and for a full training step.

use std::time::Instant;

use anyhow::{Result, bail};
use burn::module::Param;
use burn::nn::Linear;
use burn::tensor::{Device, Distribution, Tensor};
use coto::kernels::set_fused_kernels;
use coto::lora::{LoraAdapter, LoraLinear};

use coto::device::ComputeDevice;

/// One layer shape: `tokens × inputs → outputs`.
#[derive(Debug, Clone, Copy)]
pub struct LayerShape {
    pub tokens: usize,
    pub inputs: usize,
    pub outputs: usize,
}

/// Milliseconds per forward pass and per forward plus backward pass.
#[derive(Debug, Clone, Copy)]
struct LayerTiming {
    forward_ms: f64,
    train_ms: f64,
}

/// The three ways to run one layer shape.
#[derive(Debug, Clone, Copy, PartialEq)]
enum LayerPath {
    /// The frozen base linear with no adapter: the cost floor.
    Base,
    /// Base plus LoRA from burn's generated kernels (`x·W + b + s·(x·Aᵀ)·Bᵀ`, op by op).
    Composed,
    /// Base plus LoRA through `shaders/lora_*.wgsl`.
    Fused,
}

/// Times the LoRA layer alone for each shape and prints one table per shape.
pub fn bench_layers(device: &ComputeDevice, shapes: &[LayerShape], rank: usize, warmup: usize, steps: usize) -> Result<()> {
    require_wgpu(device)?;
    println!("LoRA layer alone, r {rank}, {steps} timed passes after {warmup} warm-up; device {device}");
    println!(
        "{:<24} {:<9} {:>12} {:>16} {:>12}",
        "shape", "path", "forward ms", "fwd + bwd ms", "vs base"
    );
    for &shape in shapes {
        let mut base_train_ms = None;
        for path in [LayerPath::Base, LayerPath::Composed, LayerPath::Fused] {
            let timing = time_layer(&device.device, shape, rank, path, warmup, steps)?;
            let base = *base_train_ms.get_or_insert(timing.train_ms);
            println!(
                "{:<24} {:<9} {:>12.3} {:>16.3} {:>11.2}x",
                format!("{} × {} → {}", shape.tokens, shape.inputs, shape.outputs),
                format!("{path:?}").to_lowercase(),
                timing.forward_ms,
                timing.train_ms,
                timing.train_ms / base
            );
        }
    }
    set_fused_kernels(true);
    Ok(())
}

/// Runs `train` with the fused kernels off, then on, and returns `(composed, fused)`.
pub fn compare_training<T>(device: &ComputeDevice, mut train: impl FnMut() -> Result<T>) -> Result<(T, T)> {
    require_wgpu(device)?;
    set_fused_kernels(false);
    let composed = train();
    set_fused_kernels(true);
    let fused = train()?;
    Ok((composed?, fused))
}

fn require_wgpu(device: &ComputeDevice) -> Result<()> {
    if device.device.clone().without_autodiff() == Device::flex() {
        bail!("invalid device {device} for --kernels: the WGSL kernels run on wgpu devices only; pass --device gpu");
    }
    Ok(())
}

fn time_layer(device: &Device, shape: LayerShape, rank: usize, path: LayerPath, warmup: usize, steps: usize) -> Result<LayerTiming> {
    let device = device.clone().autodiff();
    let random = |dims: [usize; 2], std: f64| Tensor::<2>::random(dims, Distribution::Normal(0.0, std), &device).detach();
    let base = Linear {
        weight: Param::from_tensor(random([shape.inputs, shape.outputs], 0.05)),
        bias: Some(Param::from_tensor(Tensor::zeros([shape.outputs], &device))),
    };
    let mut layer = LoraLinear::new(base);
    if path != LayerPath::Base {
        let adapter = LoraAdapter::from_tensors(random([rank, shape.inputs], 0.05), random([shape.outputs, rank], 0.05), 2.0, 0.0, 0);
        layer.attach(adapter);
    }
    set_fused_kernels(path == LayerPath::Fused);
    let x = random([shape.tokens, shape.inputs], 1.0);

    let forward = |x: Tensor<2>| layer.forward(x, true);
    let train = |x: Tensor<2>| {
        let x = x.require_grad();
        let _gradients = forward(x.clone()).sum().backward();
    };
    let forward_ms = time(&device, warmup, steps, || {
        let _ = forward(x.clone());
    })?;
    let train_ms = time(&device, warmup, steps, || train(x.clone()))?;
    Ok(LayerTiming { forward_ms, train_ms })
}

/// Returns the mean milliseconds of `work` over `steps` runs after `warmup` runs, synchronising the device
/// before the clock starts and after it stops.
fn time(device: &Device, warmup: usize, steps: usize, mut work: impl FnMut()) -> Result<f64> {
    for _ in 0..warmup {
        work();
    }
    sync(device)?;
    let started = Instant::now();
    for _ in 0..steps {
        work();
    }
    sync(device)?;
    Ok(1000.0 * started.elapsed().as_secs_f64() / steps as f64)
}

fn sync(device: &Device) -> Result<()> {
    device.sync().map_err(|e| anyhow::anyhow!("device sync failed: {e:?}"))
}
