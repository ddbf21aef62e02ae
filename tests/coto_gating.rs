//! A dropped CoTo adapter costs nothing and changes nothing: the layer's output is the base
//! output bit for bit, `A` and `B` get no gradient, and no autodiff node involving them exists.

mod common;

use burn::tensor::{Distribution, Tensor};
use coto::coto::Gates;
use coto::lora::{LoraAdapter, LoraConfig, LoraLinear};
use coto::model::{HostTensor, linear_from_torch};
use common::{devices, host};

fn random_layer(device: &burn::tensor::Device) -> LoraLinear {
    let mut rng = coto::rng::seeded(1, 0);
    let weight = HostTensor::new(vec![16, 24], (0..16 * 24).map(|i| ((i * 37 % 101) as f32 - 50.0) / 100.0).collect());
    let bias = HostTensor::new(vec![16], (0..16).map(|i| i as f32 / 10.0).collect());
    let base = linear_from_torch(&weight, Some(&bias), device);
    let config = LoraConfig {
        r: 4,
        ..LoraConfig::default()
    };
    let mut adapter = LoraAdapter::init(&config, 24, 16, 0, &mut rng, device);
    // A non-zero B, so that an active adapter visibly changes the output.
    adapter.lora_b = burn::module::Param::from_tensor(Tensor::random([16, 4], Distribution::Normal(0.0, 1.0), device));
    LoraLinear::new(base).with_adapter(adapter)
}

#[test]
fn dropped_adapter_output_is_base_output_bit_for_bit() {
    for (name, device) in devices() {
        let device = device.autodiff();
        let layer = random_layer(&device);
        let x: Tensor<2> = Tensor::random([5, 24], Distribution::Normal(0.0, 1.0), &device);
        let base = host(layer.base.forward(x.clone()));
        let dropped = host(layer.forward(x.clone(), false));
        let gated = host(layer.forward_gated(x.clone(), &Gates::from_vec(vec![false])));
        let active = host(layer.forward(x, true));
        assert_eq!(dropped.data, base.data, "dropped output differs from base on {name}");
        assert_eq!(gated.data, base.data, "gated-off output differs from base on {name}");
        assert_ne!(active.data, base.data, "active adapter had no effect on {name}");
    }
}

#[test]
fn dropped_adapter_gets_no_gradient() {
    for (name, device) in devices() {
        let device = device.autodiff();
        let layer = random_layer(&device);
        let x: Tensor<2> = Tensor::random([5, 24], Distribution::Normal(0.0, 1.0), &device).require_grad();
        let grads = layer.forward(x.clone(), false).sum().backward();
        let adapter = layer.adapter.as_ref().unwrap();
        assert!(adapter.lora_a.val().grad(&grads).is_none(), "A got a gradient on {name}");
        assert!(adapter.lora_b.val().grad(&grads).is_none(), "B got a gradient on {name}");
        // The input still gets the base layer's gradient: W summed over outputs.
        assert!(x.grad(&grads).is_some(), "x lost its gradient on {name}");

        let grads = layer.forward(x, true).sum().backward();
        let adapter = layer.adapter.as_ref().unwrap();
        assert!(adapter.lora_a.val().grad(&grads).is_some(), "active A got no gradient on {name}");
        assert!(adapter.lora_b.val().grad(&grads).is_some(), "active B got no gradient on {name}");
    }
}

/// With a frozen base and an input that needs no gradient, the only tracked leaves of the layer
/// are `A` and `B`. The output of an active adapter is therefore tracked (it has an autodiff
/// node), and the output of a dropped one is not: no node was recorded for the adapter branch.
#[test]
fn dropped_adapter_records_no_autodiff_node() {
    for (name, device) in devices() {
        let device = device.autodiff();
        let layer = random_layer(&device);
        let x: Tensor<2> = Tensor::random([5, 24], Distribution::Normal(0.0, 1.0), &device);
        assert!(layer.forward(x.clone(), true).is_tracked(), "active adapter left no node on {name}");
        assert!(!layer.forward(x.clone(), false).is_tracked(), "dropped adapter left a node on {name}");
        let only_base = LoraLinear::new(layer.base.clone());
        assert!(!only_base.forward(x, true).is_tracked(), "frozen base recorded a node on {name}");
    }
}
