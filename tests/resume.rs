//! Checkpoints and resume: a run stopped at step k and resumed from its checkpoint on disk ends
//! with the same adapter as an uninterrupted run, and interrupted saves lose nothing.

mod common;

use coto::adapter::{AdapterFiles, RunInfo, load_adapter, save_adapter, stage_file, WEIGHTS_FILE};
use coto::data::{DataOptions, prepare_dataset, read_records};
use coto::model::Checkpoint;
use coto::train::{TrainConfig, Trainer, TrainerSnapshot, latest_checkpoint, load_checkpoint, save_checkpoint, trainable_params};
use common::devices;
use common::tiny::{synthetic_lines, temp_dir, write_tiny_bert};

/// Held while a test trains on the GPU: burn's GPU dropout draws from one generator per device,
/// shared by all threads, so a concurrent test's draws would change a run that must repeat.
static GPU_GENERATOR: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn new_trainer(device: &burn::tensor::Device, model_dir: &std::path::Path) -> Trainer {
    let lines = synthetic_lines(96, 4).join("\n");
    let records = read_records(lines.as_bytes(), "synthetic", &DataOptions::default()).unwrap();
    let dataset = prepare_dataset(records, None, 0.25, 6, "synthetic").unwrap();
    let config = TrainConfig {
        lr: 4e-3,
        batch_size: 8,
        grad_accum_steps: 2,
        epochs: 3,
        max_steps: Some(12),
        max_length: 16,
        eval_every: 0,
        seed: 6,
        lora: coto::lora::LoraConfig {
            lora_dropout: 0.1,
            ..Default::default()
        },
        ..TrainConfig::default()
    };
    Trainer::new(Checkpoint::from_dir(model_dir, 16).unwrap(), dataset, config, device).unwrap()
}

fn finish(trainer: &mut Trainer) {
    while !trainer.is_done() {
        trainer.step().unwrap();
    }
}

#[test]
fn resumed_run_matches_uninterrupted_run() {
    let _generator = GPU_GENERATOR.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    for (name, device) in devices() {
        let dir = temp_dir(&format!("resume-{name}"));
        let model = write_tiny_bert(&dir.join("model"), 2);

        let mut uninterrupted = new_trainer(&device, &model);
        finish(&mut uninterrupted);
        let expected = trainable_params(uninterrupted.model());

        // Stop after 5 of 12 steps (mid-epoch, with gradient accumulation), save to disk, and
        // continue in a fresh trainer as a new process would.
        let mut first = new_trainer(&device, &model);
        for _ in 0..5 {
            first.step().unwrap();
        }
        let output = dir.join("run");
        save_checkpoint(&output, &first.snapshot(), &serde_json::json!({}), &[], 2).unwrap();
        drop(first);

        let (snapshot, _) = load_checkpoint(&latest_checkpoint(&output).unwrap()).unwrap();
        assert_eq!(snapshot.state.step, 5);
        let mut resumed = new_trainer(&device, &model);
        resumed.restore(&snapshot).unwrap();
        finish(&mut resumed);
        let actual = trainable_params(resumed.model());

        assert_eq!(actual.names(), expected.names());
        for tensor in expected.names() {
            let (a, e) = (actual.get_any(tensor).unwrap(), expected.get_any(tensor).unwrap());
            if name == "flex" {
                assert_eq!(a.data, e.data, "{tensor} differs after resuming on {name}");
            } else {
                // GPU kernels may order reductions differently between launches.
                common::assert_relative(tensor, name, a, e, 1e-5);
            }
        }
    }
}

/// The web page's recovery from a lost GPU: the state after step 5, read without blocking and
/// kept as bytes, continues on the CPU. From a CPU run it ends exactly where an uninterrupted
/// run ends. A GPU run draws its dropout masks from another generator, so from a GPU run the
/// test checks that the CPU trainer starts from exactly the saved parameters and finishes.
#[test]
fn state_bytes_continue_on_the_cpu() {
    let dir = temp_dir("state-bytes");
    let model = write_tiny_bert(&dir.join("model"), 2);
    let cpu = burn::tensor::Device::flex();
    let mut uninterrupted = new_trainer(&cpu, &model);
    finish(&mut uninterrupted);
    let expected = trainable_params(uninterrupted.model());

    let _generator = GPU_GENERATOR.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    for (name, device) in devices() {
        let mut first = new_trainer(&device, &model);
        for _ in 0..5 {
            first.step().unwrap();
        }
        let saved = first.snapshot();
        let bytes = coto::device::block_on(first.snapshot_async()).unwrap().to_bytes().unwrap();
        drop(first);

        let snapshot = TrainerSnapshot::from_bytes(&bytes, std::path::Path::new("state")).unwrap();
        assert_eq!(snapshot.state, saved.state, "state read back on {name}");
        let mut resumed = new_trainer(&cpu, &model);
        resumed.restore(&snapshot).unwrap();
        assert_eq!(resumed.step_count(), 5);
        let restored = trainable_params(resumed.model());
        for tensor in saved.params.names() {
            let (a, e) = (restored.get_any(tensor).unwrap(), saved.params.get_any(tensor).unwrap());
            assert_eq!(a.data, e.data, "{tensor} changed on its way from {name} to the CPU");
        }
        for tensor in saved.moments.names() {
            let (a, e) = (snapshot.moments.get_any(tensor).unwrap(), saved.moments.get_any(tensor).unwrap());
            assert_eq!(a.data, e.data, "moment {tensor} changed on its way from {name}");
        }
        finish(&mut resumed);
        assert_eq!(resumed.step_count(), 12);

        if name == "flex" {
            let actual = trainable_params(resumed.model());
            assert_eq!(actual.names(), expected.names());
            for tensor in expected.names() {
                let (a, e) = (actual.get_any(tensor).unwrap(), expected.get_any(tensor).unwrap());
                assert_eq!(a.data, e.data, "{tensor} differs after continuing from saved bytes");
            }
        }
    }

    let error = TrainerSnapshot::from_bytes(b"not a state", std::path::Path::new("state.bin")).unwrap_err();
    assert!(error.to_string().contains("state.bin"), "{error}");
}

#[test]
fn old_checkpoints_are_pruned_and_latest_is_found() {
    let (_, device) = devices().remove(0);
    let dir = temp_dir("prune-checkpoints");
    let model = write_tiny_bert(&dir.join("model"), 2);
    let mut trainer = new_trainer(&device, &model);
    let output = dir.join("run");
    for _ in 0..4 {
        trainer.step().unwrap();
        save_checkpoint(&output, &trainer.snapshot(), &serde_json::json!({}), &[], 2).unwrap();
    }
    let mut kept: Vec<String> = std::fs::read_dir(output.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    kept.sort();
    assert_eq!(kept, vec!["step-00000003", "step-00000004"]);
    assert!(latest_checkpoint(&output).unwrap().ends_with("step-00000004"));
}

#[test]
fn interrupted_save_leaves_previous_adapter_loadable() {
    let (_, device) = devices().remove(0);
    let dir = temp_dir("interrupted-save");
    let model = write_tiny_bert(&dir.join("model"), 2);
    let mut trainer = new_trainer(&device, &model);
    trainer.step().unwrap();
    let run = RunInfo {
        coto_version: "test".into(),
        labels: trainer.labels().names().to_vec(),
        train: None,
        steps: 1,
        metrics: None,
        base_model: None,
        origin: None,
    };
    let output = dir.join("adapter");
    let first = AdapterFiles::from_model(trainer.model(), &trainer.config().lora, run.clone());
    save_adapter(&first, &output).unwrap();

    // The second save stops after writing its temporary file, before the rename.
    finish(&mut trainer);
    let second = AdapterFiles::from_model(trainer.model(), &trainer.config().lora, run);
    let staged = stage_file(&output.join(WEIGHTS_FILE), &second.weights_bytes().unwrap()).unwrap();
    std::mem::forget(staged);

    let loaded = load_adapter(&output).unwrap();
    assert_eq!(loaded.weights_bytes().unwrap(), first.weights_bytes().unwrap());
}
