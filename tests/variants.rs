//! LoRA variants: rsLoRA and DoRA against PEFT, PiSSA and HiRA against their defining formulas
//! in f64, CoTo gating for each, and file round trips.

mod common;

use burn::module::{Module, Param};
use burn::tensor::{Device, Distribution, Tensor};
use coto::adapter::{AdapterFiles, RunInfo};
use coto::data::{DataOptions, prepare_dataset, read_records};
use coto::linalg::{Matrix, svd};
use coto::lora::{LoraAdapter, LoraConfig, LoraLinear, LoraVariant, initial_magnitude, pissa_init};
use coto::model::{Checkpoint, HostTensor, WeightMap, linear_from_torch};
use coto::train::{TrainConfig, Trainer, predict_texts};
use common::tiny::{synthetic_lines, temp_dir, write_tiny_bert};
use common::{assert_relative, devices, fixture, host};

/// Relative tolerance (max-norm) against PEFT's float32 results.
const TOLERANCE: f64 = 1e-5;

fn tensor(map: &WeightMap, name: &str) -> HostTensor {
    map.get_any(name).unwrap_or_else(|| panic!("fixture lacks {name}")).clone()
}

fn fixture_layer(map: &WeightMap, scaling: f64, device: &Device) -> LoraLinear {
    let base = linear_from_torch(&tensor(map, "base_weight"), Some(&tensor(map, "base_bias")), device);
    let adapter = LoraAdapter::from_tensors(
        tensor(map, "lora_A").to_tensor(device),
        tensor(map, "lora_B").to_tensor(device),
        scaling,
        0.0,
        0,
    );
    LoraLinear::new(base).with_adapter(adapter)
}

#[test]
fn rslora_matches_peft() {
    let reference = fixture("rslora_linear.safetensors");
    let config = LoraConfig { r: 4, lora_alpha: 8.0, use_rslora: true, ..LoraConfig::default() };
    assert_eq!(config.scaling(), 4.0);
    for (name, device) in devices() {
        let device = device.autodiff();
        let layer = fixture_layer(&reference, config.scaling(), &device);
        let x: Tensor<2> = tensor(&reference, "x").to_tensor(&device).require_grad();
        let y = layer.forward(x.clone(), true);
        let grads = (y.clone() * tensor(&reference, "upstream_grad").to_tensor::<2>(&device)).sum().backward();
        let adapter = layer.adapter.as_ref().unwrap();
        assert_relative("y", name, &host(y), &tensor(&reference, "y"), TOLERANCE);
        assert_relative("grad A", name, &host(adapter.lora_a.val().grad(&grads).unwrap()), &tensor(&reference, "grad_lora_A"), TOLERANCE);
        assert_relative("grad B", name, &host(adapter.lora_b.val().grad(&grads).unwrap()), &tensor(&reference, "grad_lora_B"), TOLERANCE);
        assert_relative("grad x", name, &host(x.grad(&grads).unwrap()), &tensor(&reference, "grad_x"), TOLERANCE);
    }
}

#[test]
fn dora_matches_peft() {
    let reference = fixture("dora_linear.safetensors");
    for (name, device) in devices() {
        let device = device.autodiff();
        let mut layer = fixture_layer(&reference, 2.0, &device);
        let magnitude = Param::from_tensor(tensor(&reference, "lora_magnitude_vector").to_tensor::<1>(&device));
        layer.adapter.as_mut().unwrap().magnitude = Some(magnitude);

        let x: Tensor<2> = tensor(&reference, "x").to_tensor(&device).require_grad();
        let y = layer.forward(x.clone(), true);
        let grads = (y.clone() * tensor(&reference, "upstream_grad").to_tensor::<2>(&device)).sum().backward();
        let adapter = layer.adapter.as_ref().unwrap();
        let grad_m = adapter.magnitude.as_ref().unwrap().val().grad(&grads).expect("m has a gradient");
        assert_relative("y", name, &host(y), &tensor(&reference, "y"), TOLERANCE);
        assert_relative("grad A", name, &host(adapter.lora_a.val().grad(&grads).unwrap()), &tensor(&reference, "grad_lora_A"), TOLERANCE);
        assert_relative("grad B", name, &host(adapter.lora_b.val().grad(&grads).unwrap()), &tensor(&reference, "grad_lora_B"), TOLERANCE);
        assert_relative("grad m", name, &host(grad_m), &tensor(&reference, "grad_lora_magnitude_vector"), TOLERANCE);
        assert_relative("grad x", name, &host(x.grad(&grads).unwrap()), &tensor(&reference, "grad_x"), TOLERANCE);
    }
}

#[test]
fn dora_initial_magnitude_keeps_output() {
    let reference = fixture("dora_linear.safetensors");
    let device = Device::flex();
    let mut layer = fixture_layer(&reference, 2.0, &device);
    let adapter = layer.adapter.as_mut().unwrap();
    adapter.lora_b = Param::from_tensor(Tensor::zeros([16, 4], &device));
    let magnitude = initial_magnitude(layer.base.weight.val(), layer.adapter.as_ref().unwrap());
    layer.adapter.as_mut().unwrap().magnitude = Some(Param::from_tensor(magnitude));
    let x: Tensor<2> = tensor(&reference, "x").to_tensor(&device);
    let base = host(layer.base.forward(x.clone()));
    assert_relative("DoRA at init", "flex", &host(layer.forward(x, true)), &base, 1e-6);
}

fn sample_matrix(rows: usize, cols: usize, seed: u64) -> Matrix {
    let mut rng = coto::rng::seeded(seed, 0);
    let data = (0..rows * cols).map(|_| coto::rng::standard_normal(&mut rng)).collect();
    Matrix { rows, cols, data }
}

/// PiSSA's factors hold the top-r part of `W` (`s·B·A = U_r·diag(S_r)·V_rᵀ`), and the residual
/// plus the adapter give back `W`.
#[test]
fn pissa_factors_match_definition() {
    let weight = sample_matrix(12, 9, 4);
    let (r, scaling) = (3, 2.0);
    let init = pissa_init(&weight, r, scaling);
    let decomposition = svd(&weight);
    let mut principal = Matrix::zeros(12, 9);
    for k in 0..r {
        for o in 0..12 {
            for i in 0..9 {
                let value = principal.at(o, i) + decomposition.u.at(o, k) * decomposition.s[k] * decomposition.v.at(i, k);
                principal.set(o, i, value);
            }
        }
    }
    let adapter_part = init.lora_b.matmul(&init.lora_a).scale(scaling);
    assert!(adapter_part.clone().add(&principal.clone().scale(-1.0)).frobenius() < 1e-9 * principal.frobenius());
    let rebuilt = init.residual.clone().add(&adapter_part);
    assert!(rebuilt.add(&weight.clone().scale(-1.0)).frobenius() < 1e-9 * weight.frobenius());
    // A·Aᵀ = diag(S_r / s): the rows of A are orthogonal.
    let gram = init.lora_a.matmul(&init.lora_a.transpose());
    for i in 0..r {
        for j in 0..r {
            let expected = if i == j { decomposition.s[i] / scaling } else { 0.0 };
            assert!((gram.at(i, j) - expected).abs() < 1e-9, "A·Aᵀ[{i},{j}] = {}", gram.at(i, j));
        }
    }
}

/// HiRA's output and gradients against `y = x·(W + s·W⊙(B·A))ᵀ + b` evaluated in f64.
#[test]
fn hira_matches_definition() {
    let (out, inp, r, s) = (6, 5, 2, 1.5);
    let w = sample_matrix(out, inp, 1);
    let a = sample_matrix(r, inp, 2).scale(0.3);
    let b = sample_matrix(out, r, 3).scale(0.3);
    let x = sample_matrix(4, inp, 5);
    let g = sample_matrix(4, out, 6);
    let bias: Vec<f32> = (0..out).map(|i| i as f32 * 0.1).collect();

    // f64 reference.
    let ba = b.matmul(&a);
    let mut effective = w.clone();
    for k in 0..effective.data.len() {
        effective.data[k] += s * w.data[k] * ba.data[k];
    }
    let mut y = x.matmul(&effective.transpose());
    for row in 0..4 {
        for o in 0..out {
            y.set(row, o, y.at(row, o) + bias[o] as f64);
        }
    }
    // dL/dΔW = Gᵀ·x; dΔW/d(BA) = s·W, so dL/d(BA) = s·W ⊙ Gᵀx; dB = that·Aᵀ, dA = Bᵀ·that.
    let mut d_ba = g.transpose().matmul(&x);
    for k in 0..d_ba.data.len() {
        d_ba.data[k] *= s * w.data[k];
    }
    let grad_b = d_ba.matmul(&a.transpose());
    let grad_a = b.transpose().matmul(&d_ba);

    for (name, device) in devices() {
        let device = device.autodiff();
        let to_host = |m: &Matrix| HostTensor::new(vec![m.rows, m.cols], m.to_f32());
        let base = linear_from_torch(&to_host(&w), Some(&HostTensor::new(vec![out], bias.clone())), &device);
        let mut adapter = LoraAdapter::from_tensors(to_host(&a).to_tensor(&device), to_host(&b).to_tensor(&device), s, 0.0, 0);
        adapter.hadamard = true;
        let layer = LoraLinear::new(base).with_adapter(adapter);
        let output = layer.forward(to_host(&x).to_tensor::<2>(&device), true);
        let grads = (output.clone() * to_host(&g).to_tensor::<2>(&device)).sum().backward();
        let adapter = layer.adapter.as_ref().unwrap();
        assert_relative("HiRA y", name, &host(output), &to_host(&y), 1e-5);
        assert_relative("HiRA grad A", name, &host(adapter.lora_a.val().grad(&grads).unwrap()), &to_host(&grad_a), 1e-5);
        assert_relative("HiRA grad B", name, &host(adapter.lora_b.val().grad(&grads).unwrap()), &to_host(&grad_b), 1e-5);
    }
}

#[test]
fn dropped_variant_adapters_are_base_only() {
    let reference = fixture("dora_linear.safetensors");
    for (name, device) in devices() {
        let device = device.autodiff();
        for variant in ["dora", "hira", "lora"] {
            let mut layer = fixture_layer(&reference, 2.0, &device);
            let adapter = layer.adapter.as_mut().unwrap();
            match variant {
                "dora" => {
                    let m = tensor(&reference, "lora_magnitude_vector").to_tensor::<1>(&device);
                    adapter.magnitude = Some(Param::from_tensor(m));
                }
                "hira" => adapter.hadamard = true,
                _ => {}
            }
            let x: Tensor<2> = Tensor::random([5, 24], Distribution::Normal(0.0, 1.0), &device).require_grad();
            let base = host(layer.base.forward(x.clone()));
            let dropped = layer.forward(x.clone(), false);
            assert_eq!(host(dropped.clone()).data, base.data, "{variant} on {name}: dropped output differs");
            let grads = dropped.sum().backward();
            let adapter = layer.adapter.as_ref().unwrap();
            assert!(adapter.lora_a.val().grad(&grads).is_none(), "{variant} on {name}: A got a gradient");
            assert!(adapter.lora_b.val().grad(&grads).is_none(), "{variant} on {name}: B got a gradient");
            if let Some(m) = &adapter.magnitude {
                assert!(m.val().grad(&grads).is_none(), "{variant} on {name}: m got a gradient");
            }
            // With the input needing no gradient either, nothing is recorded at all.
            let plain: Tensor<2> = Tensor::random([5, 24], Distribution::Normal(0.0, 1.0), &device);
            assert!(!layer.forward(plain, false).is_tracked(), "{variant} on {name}: dropped adapter left a node");
        }
    }
}

/// Each variant trains a few steps on the tiny model, saves, and reloads on the original base
/// with the same logits (PiSSA through PEFT's conversion to plain LoRA at rank 2r).
#[test]
fn variant_adapters_reload_with_same_logits() {
    let device = Device::flex();
    let dir = temp_dir("variants-roundtrip");
    let model = write_tiny_bert(&dir.join("model"), 6);
    let texts = ["good bright day", "a cold grim day", "the day was so so"];
    for variant in [LoraVariant::Rslora, LoraVariant::Dora, LoraVariant::Pissa, LoraVariant::Hira] {
        let lines = synthetic_lines(48, 2).join("\n");
        let records = read_records(lines.as_bytes(), "synthetic", &DataOptions::default()).unwrap();
        let dataset = prepare_dataset(records, None, 0.25, 1, "synthetic").unwrap();
        let mut config = TrainConfig {
            max_steps: Some(4),
            lr: 5e-3,
            max_length: 16,
            eval_every: 0,
            ..TrainConfig::default()
        };
        config.lora.r = 4;
        variant.apply(&mut config.lora);
        let mut trainer = Trainer::new(Checkpoint::from_dir(&model, 16).unwrap(), dataset, config.clone(), &device).unwrap();
        while !trainer.is_done() {
            trainer.step().unwrap();
        }
        let before = predict_texts(&trainer.model().valid(), trainer.tokenizer(), &texts, 4).unwrap();
        let run = RunInfo {
            coto_version: "test".into(),
            labels: trainer.labels().names().to_vec(),
            train: Some(config.clone()),
            steps: 4,
            metrics: None,
            base_model: None,
            origin: None,
        };
        let files = AdapterFiles::from_model(trainer.model(), &config.lora, run);
        let reloaded = AdapterFiles::from_bytes(&files.weights_bytes().unwrap(), &files.config_json(), files.run_json().as_deref(), &dir).unwrap();
        let checkpoint = Checkpoint::from_dir(&model, 16).unwrap();
        let (loaded, _) = reloaded.apply(&checkpoint, &device).unwrap();
        let after = predict_texts(&loaded.valid(), &checkpoint.tokenizer, &texts, 4).unwrap();
        let expected = HostTensor::new(vec![3, 2], before.logits.clone());
        let actual = HostTensor::new(vec![3, 2], after.logits.clone());
        assert_relative(&format!("{variant:?} logits"), "flex", &actual, &expected, 1e-5);
        if variant == LoraVariant::Pissa {
            assert_eq!(reloaded.config.r, 8, "PiSSA saves at rank 2r");
        }
    }
}
