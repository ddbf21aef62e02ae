//! The LoRA layer against PEFT: output and gradients of `loss = sum(y * upstream_grad)` for a
//! `Linear(24 -> 16)` with `r = 4`, `lora_alpha = 8`, computed by PEFT in PyTorch.

mod common;

use burn::tensor::Tensor;
use coto::lora::{LoraAdapter, LoraLinear};
use coto::model::linear_from_torch;
use common::{assert_relative, devices, fixture, host};

/// Relative tolerance (max-norm) against PEFT's float32 results.
const TOLERANCE: f64 = 1e-5;

#[test]
fn output_and_gradients_match_peft() {
    let reference = fixture("lora_linear.safetensors");
    let get = |name: &str| reference.get(name, &shape_of(&reference, name)).unwrap().clone();

    for (name, device) in devices() {
        let device = device.autodiff();
        // On wgpu the layer runs the fused WGSL kernels (`shaders/`), so they meet PEFT too.
        assert_eq!(coto::kernels::kernels_apply(&device), name == "wgpu", "kernel choice on {name}");
        let base = linear_from_torch(&get("base_weight"), Some(&get("base_bias")), &device);
        let adapter = LoraAdapter::from_tensors(
            get("lora_A").to_tensor(&device),
            get("lora_B").to_tensor(&device),
            8.0 / 4.0,
            0.0,
            0,
        );
        let layer = LoraLinear::new(base).with_adapter(adapter);

        let x: Tensor<2> = get("x").to_tensor(&device).require_grad();
        let upstream: Tensor<2> = get("upstream_grad").to_tensor(&device);
        let y = layer.forward(x.clone(), true);
        let grads = (y.clone() * upstream).sum().backward();

        let adapter = layer.adapter.as_ref().unwrap();
        let grad_a = adapter.lora_a.val().grad(&grads).expect("A has a gradient");
        let grad_b = adapter.lora_b.val().grad(&grads).expect("B has a gradient");
        let grad_x = x.grad(&grads).expect("x has a gradient");

        assert_relative("y", name, &host(y), &get("y"), TOLERANCE);
        assert_relative("grad A", name, &host(grad_a), &get("grad_lora_A"), TOLERANCE);
        assert_relative("grad B", name, &host(grad_b), &get("grad_lora_B"), TOLERANCE);
        assert_relative("grad x", name, &host(grad_x), &get("grad_x"), TOLERANCE);
        assert!(
            layer.base.weight.val().grad(&grads).is_none(),
            "frozen base weight got a gradient on {name}"
        );
    }
}

#[test]
fn dropped_adapter_matches_peft_base_output() {
    let reference = fixture("lora_linear.safetensors");
    let get = |name: &str| reference.get(name, &shape_of(&reference, name)).unwrap().clone();
    for (name, device) in devices() {
        let base = linear_from_torch(&get("base_weight"), Some(&get("base_bias")), &device);
        let adapter = LoraAdapter::from_tensors(
            get("lora_A").to_tensor(&device),
            get("lora_B").to_tensor(&device),
            2.0,
            0.0,
            0,
        );
        let layer = LoraLinear::new(base).with_adapter(adapter);
        let y = layer.forward(get("x").to_tensor::<2>(&device), false);
        assert_relative("y (adapter off)", name, &host(y), &get("y_adapter_dropped"), TOLERANCE);
    }
}

#[test]
fn merge_equals_unmerged_forward_and_unmerge_restores() {
    let reference = fixture("lora_linear.safetensors");
    let get = |name: &str| reference.get(name, &shape_of(&reference, name)).unwrap().clone();
    for (name, device) in devices() {
        let base = linear_from_torch(&get("base_weight"), Some(&get("base_bias")), &device);
        let adapter = LoraAdapter::from_tensors(
            get("lora_A").to_tensor(&device),
            get("lora_B").to_tensor(&device),
            2.0,
            0.0,
            0,
        );
        let layer = LoraLinear::new(base).with_adapter(adapter);
        let x: Tensor<2> = get("x").to_tensor(&device);
        let original_weight = host(layer.base.weight.val());

        let merged = layer.merge();
        assert!(merged.is_merged());
        assert_relative("merged y", name, &host(merged.forward(x.clone(), true)), &get("y"), TOLERANCE);

        let restored = merged.unmerge();
        assert!(!restored.is_merged());
        assert_relative("restored weight", name, &host(restored.base.weight.val()), &original_weight, 1e-6);

        // ΔW in PyTorch's [out, in] layout is scaling · B·A.
        let delta = host(restored.delta_weight().unwrap());
        let (a, b) = (get("lora_A"), get("lora_B"));
        let mut expected = vec![0f32; 16 * 24];
        for o in 0..16 {
            for i in 0..24 {
                let dot: f64 = (0..4).map(|k| b.data[o * 4 + k] as f64 * a.data[k * 24 + i] as f64).sum();
                expected[o * 24 + i] = (2.0 * dot) as f32;
            }
        }
        let expected = coto::model::HostTensor::new(vec![16, 24], expected);
        assert_relative("delta_weight", name, &delta, &expected, 1e-6);
    }
}

fn shape_of(map: &coto::model::WeightMap, name: &str) -> Vec<usize> {
    let _ = map;
    match name {
        "base_weight" => vec![16, 24],
        "base_bias" => vec![16],
        "lora_A" | "grad_lora_A" => vec![4, 24],
        "lora_B" | "grad_lora_B" => vec![16, 4],
        "x" | "grad_x" => vec![5, 24],
        _ => vec![5, 16],
    }
}
