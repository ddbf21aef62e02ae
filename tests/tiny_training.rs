//! Training end to end on a tiny random BERT with CoTo: the loss falls on each device, the
//! schedule advances, adapters outside the draw keep their values, and runs are reproducible.

mod common;

use coto::coto::{Method, Mode};
use coto::data::{DataOptions, prepare_dataset, read_records};
use coto::model::Checkpoint;
use coto::train::{TrainConfig, Trainer};
use common::devices;
use common::tiny::{synthetic_lines, temp_dir, write_tiny_bert};

fn trainer(device: &burn::tensor::Device, method: Method, steps: usize, seed: u64) -> Trainer {
    let dir = write_tiny_bert(&temp_dir(&format!("tiny-bert-{seed}")), 3);
    let checkpoint = Checkpoint::from_dir(&dir, 16).unwrap();
    let lines = synthetic_lines(160, 11).join("\n");
    let records = read_records(lines.as_bytes(), "synthetic", &DataOptions::default()).unwrap();
    let dataset = prepare_dataset(records, None, 0.2, seed, "synthetic").unwrap();
    let config = TrainConfig {
        method,
        lr: 3e-3,
        batch_size: 16,
        max_steps: Some(steps),
        epochs: 100,
        max_length: 16,
        eval_every: 0,
        seed,
        lora: coto::lora::LoraConfig {
            target_modules: vec!["query".into(), "value".into(), "output.dense".into()],
            ..Default::default()
        },
        ..TrainConfig::default()
    };
    Trainer::new(checkpoint, dataset, config, device).unwrap()
}

#[test]
fn coto_training_lowers_the_loss() {
    for (name, device) in devices() {
        let mut trainer = trainer(&device, Method::Coto, 60, 5);
        let before = trainer.evaluate().unwrap().metrics;
        let mut p_values = Vec::new();
        while !trainer.is_done() {
            let report = trainer.step().unwrap();
            assert!(report.active_groups.iter().any(|&on| on), "step {} had no group on", report.step);
            p_values.push(report.p);
        }
        let after = trainer.evaluate().unwrap().metrics;
        println!("{name}: validation loss {:.4} -> {:.4}, accuracy {:.3}", before.loss, after.loss, after.accuracy);
        assert!(after.loss < before.loss * 0.8, "loss did not fall on {name}: {} -> {}", before.loss, after.loss);
        assert!(after.accuracy > 0.8, "accuracy {} on {name}", after.accuracy);
        assert!((p_values[0] - 0.1).abs() < 1e-12, "first step's p was {}", p_values[0]);
        assert_eq!(*p_values.last().unwrap(), 1.0);
        assert!(p_values.windows(2).all(|w| w[1] >= w[0]), "p fell during training");
    }
}

#[test]
fn dropped_adapters_keep_their_values() {
    let (_, device) = devices().remove(0);
    let mut trainer = trainer(&device, Method::Coto, 40, 8);
    // Find a step with a non-zero learning rate (the first warm-up step has lr 0) whose draw
    // leaves some adapter off, and check that exactly the active adapters moved.
    let mut checked = false;
    while !trainer.is_done() && !checked {
        let gates = trainer.gates().gates(Mode::Train);
        let before = adapter_values(&trainer);
        let report = trainer.step().unwrap();
        if report.lr == 0.0 || gates.count_active() == gates.as_slice().len() {
            continue;
        }
        let after = adapter_values(&trainer);
        for (index, (b, a)) in before.iter().zip(&after).enumerate() {
            if gates.is_active(index) {
                assert_ne!(b, a, "active adapter {index} did not move at step {}", report.step);
            } else {
                assert_eq!(b, a, "dropped adapter {index} moved at step {}", report.step);
            }
        }
        checked = true;
    }
    assert!(checked, "no step with a dropped adapter in 40 steps");
}

#[test]
fn same_seed_gives_same_adapter() {
    let (_, device) = devices().remove(0);
    let run = |seed| {
        let mut trainer = trainer(&device, Method::Coto, 8, seed);
        while !trainer.is_done() {
            trainer.step().unwrap();
        }
        adapter_values(&trainer)
    };
    let (first, second) = (run(21), run(21));
    assert!(first == second, "two runs with seed 21 ended with different adapters");
}

/// Every adapter's A and B, flattened, in gate order.
fn adapter_values(trainer: &Trainer) -> Vec<Vec<f32>> {
    let mut values = Vec::new();
    for layer in &trainer.model().bert.encoder.layer {
        for (_, linear) in layer.linears() {
            if let Some(adapter) = &linear.adapter {
                let mut v = common::host(adapter.lora_a.val()).data;
                v.extend(common::host(adapter.lora_b.val()).data);
                values.push((adapter.index, v));
            }
        }
    }
    values.sort_by_key(|(index, _)| *index);
    values.into_iter().map(|(_, v)| v).collect()
}
