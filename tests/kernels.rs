//! The WGSL LoRA kernels against composed burn operations on wgpu (Mesa's llvmpipe in CI):
//! output and the gradients of x, A and B for shapes that are and are not multiples of the
//! 64-wide workgroups, ranks 1 to 64, a batch of one, with and without adapter dropout, and with
//! the adapter dropped by its gate.

mod common;

use burn::module::Param;
use burn::tensor::{Device, DeviceKind, Distribution, Tensor};
use coto::lora::{LoraAdapter, LoraLinear};
use coto::model::HostTensor;
use common::{assert_relative, host};

/// Relative tolerance (max-norm) between the kernels and the composed operations in f32.
const TOLERANCE: f64 = 1e-4;

fn wgpu() -> Option<Device> {
    if std::env::var_os("COTO_SKIP_WGPU").is_some() {
        eprintln!("COTO_SKIP_WGPU is set; skipping the kernel tests");
        return None;
    }
    Some(Device::wgpu(DeviceKind::DefaultDevice).autodiff())
}

fn random<const D: usize>(shape: [usize; D], device: &Device) -> Tensor<D> {
    Tensor::random(shape, Distribution::Normal(0.0, 1.0), device)
}

/// Runs one case: the fused layer (the default on wgpu) against the same math composed from
/// burn operations, forward and backward.
fn check(batch: usize, seq: usize, inputs: usize, outputs: usize, rank: usize, device: &Device) {
    let name = format!("[{batch}, {seq}, {inputs}] -> {outputs}, r {rank}");
    let weight = random([inputs, outputs], device).detach().mul_scalar(0.2);
    let bias = random([outputs], device).detach();
    let lora_a = random([rank, inputs], device).detach().mul_scalar(0.3);
    let lora_b = random([outputs, rank], device).detach().mul_scalar(0.3);
    let x_values = random([batch, seq, inputs], device).detach();
    let upstream = random([batch, seq, outputs], device).detach();
    let scaling = 1.7;

    // The fused path, through the LoRA layer.
    let base = burn::nn::Linear {
        weight: Param::from_tensor(weight.clone()),
        bias: Some(Param::from_tensor(bias.clone())),
    };
    let adapter = LoraAdapter::from_tensors(lora_a.clone(), lora_b.clone(), scaling, 0.0, 0);
    let layer = LoraLinear::new(base).with_adapter(adapter);
    let x = x_values.clone().require_grad();
    let y = layer.forward(x.clone(), true);
    let grads = (y.clone() * upstream.clone()).sum().backward();
    let adapter = layer.adapter.as_ref().unwrap();
    let fused = [
        host(y),
        host(x.grad(&grads).unwrap()),
        host(adapter.lora_a.val().grad(&grads).unwrap()),
        host(adapter.lora_b.val().grad(&grads).unwrap()),
    ];

    // The same layer composed from burn's operations.
    let x = x_values.require_grad();
    let a = lora_a.require_grad();
    let b = lora_b.require_grad();
    let base_output = x.clone().matmul(weight.unsqueeze::<3>()) + bias.unsqueeze::<3>();
    let hidden = x.clone().matmul(a.clone().transpose().unsqueeze::<3>());
    let y = base_output + hidden.matmul(b.clone().transpose().unsqueeze::<3>()) * scaling;
    let grads = (y.clone() * upstream).sum().backward();
    let composed = [
        host(y),
        host(x.grad(&grads).unwrap()),
        host(a.grad(&grads).unwrap()),
        host(b.grad(&grads).unwrap()),
    ];

    for (what, (actual, expected)) in ["y", "grad x", "grad A", "grad B"].iter().zip(fused.iter().zip(&composed)) {
        assert_relative(&format!("{what} of {name}"), "wgpu", actual, expected, TOLERANCE);
    }
}

/// One test function, so that the global kernel switch flipped by the dropout case never
/// overlaps the other cases.
#[test]
fn kernels_match_composed_operations() {
    let Some(device) = wgpu() else { return };
    // Multiples of the 64-wide workgroups and ragged edges, a batch of one, ranks 1 to 64.
    check(2, 16, 32, 48, 4, &device);
    check(3, 7, 37, 19, 1, &device);
    check(1, 1, 24, 40, 8, &device);
    check(1, 5, 70, 96, 64, &device);
    check(2, 9, 384, 1536, 8, &device);
    // More token rows than one dispatch dimension allows (65 535): the epilogues stride over
    // rows and the factor gradients use more, longer chunks.
    check(1, 66_000, 8, 6, 2, &device);
    check_dropout(&device);
    check_dropped(&device);
}

/// Checks a dropped adapter (gate off): the output is the base linear's, and A and B get no gradient
/// at all, not a zero one.
fn check_dropped(device: &Device) {
    let weight = random([37, 19], device).detach();
    let bias = random([19], device).detach();
    let base = burn::nn::Linear { weight: Param::from_tensor(weight.clone()), bias: Some(Param::from_tensor(bias.clone())) };
    let adapter = LoraAdapter::from_tensors(random([4, 37], device).detach(), random([19, 4], device).detach(), 2.0, 0.0, 0);
    let layer = LoraLinear::new(base).with_adapter(adapter);
    let x = random([3, 7, 37], device).detach().require_grad();
    let y = layer.forward(x.clone(), false);
    let expected = x.clone().matmul(weight.unsqueeze::<3>()) + bias.unsqueeze::<3>();
    assert_relative("y (adapter dropped)", "wgpu", &host(y.clone()), &host(expected), TOLERANCE);
    let grads = y.sum().backward();
    let adapter = layer.adapter.as_ref().unwrap();
    assert!(adapter.lora_a.val().grad(&grads).is_none(), "a dropped adapter's A got a gradient");
    assert!(adapter.lora_b.val().grad(&grads).is_none(), "a dropped adapter's B got a gradient");
    assert!(x.grad(&grads).is_some(), "the input lost its gradient through the base linear");
}

fn check_dropout(device: &Device) {
    let device = device.clone();
    // With dropout the adapter's input differs from the base's, so the two input gradients take
    // separate paths. A fixed seed makes both runs draw the same mask.
    let weight = random([20, 12], &device).detach();
    let lora_a = random([4, 20], &device).detach();
    let lora_b = random([12, 4], &device).detach();
    let x_values = random([6, 20], &device).detach();
    let run = |fused: bool| -> Vec<HostTensor> {
        coto::kernels::set_fused_kernels(fused);
        device.seed(3);
        coto::model::seed_masks(3);
        let base = burn::nn::Linear { weight: Param::from_tensor(weight.clone()), bias: None };
        let adapter = LoraAdapter::from_tensors(lora_a.clone(), lora_b.clone(), 2.0, 0.5, 0);
        let layer = LoraLinear::new(base).with_adapter(adapter);
        let x = x_values.clone().require_grad();
        let y = layer.forward(x.clone(), true);
        let grads = y.clone().sum().backward();
        let adapter = layer.adapter.as_ref().unwrap();
        vec![
            host(y),
            host(x.grad(&grads).unwrap()),
            host(adapter.lora_a.val().grad(&grads).unwrap()),
            host(adapter.lora_b.val().grad(&grads).unwrap()),
        ]
    };
    let fused = run(true);
    let composed = run(false);
    coto::kernels::set_fused_kernels(true);
    for (what, (actual, expected)) in ["y", "grad x", "grad A", "grad B"].iter().zip(fused.iter().zip(&composed)) {
        assert_relative(what, "wgpu with dropout", actual, expected, TOLERANCE);
    }
}
