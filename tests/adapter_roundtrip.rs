//! Adapter files: a trained classifier saved in PEFT's format and loaded back gives the same
//! logits, and the config carries the keys PEFT requires.

mod common;

use burn::module::Module;
use coto::adapter::{AdapterFiles, RunInfo, head_tensor_name, lora_tensor_name};
use coto::data::{DataOptions, prepare_dataset, read_records};
use coto::model::Checkpoint;
use coto::train::{TrainConfig, Trainer, predict_texts};
use common::tiny::{synthetic_lines, temp_dir, write_tiny_bert};

#[test]
fn saved_adapter_reloads_with_same_logits() {
    let device = burn::tensor::Device::flex();
    let dir = write_tiny_bert(&temp_dir("roundtrip"), 4);
    let lines = synthetic_lines(64, 2).join("\n");
    let records = read_records(lines.as_bytes(), "synthetic", &DataOptions::default()).unwrap();
    let dataset = prepare_dataset(records, None, 0.25, 1, "synthetic").unwrap();
    let config = TrainConfig {
        max_steps: Some(6),
        lr: 5e-3,
        max_length: 16,
        eval_every: 0,
        ..TrainConfig::default()
    };
    let mut trainer = Trainer::new(Checkpoint::from_dir(&dir, 16).unwrap(), dataset, config.clone(), &device).unwrap();
    while !trainer.is_done() {
        trainer.step().unwrap();
    }
    let texts = ["good bright day", "a cold grim day", "the day was so so"];
    let before = predict_texts(&trainer.model().valid(), trainer.tokenizer(), &texts, 8).unwrap();

    let run = RunInfo {
        coto_version: "test".into(),
        labels: trainer.labels().names().to_vec(),
        train: Some(config.clone()),
        steps: trainer.step_count(),
        metrics: None,
        base_model: None,
        origin: None,
    };
    let files = AdapterFiles::from_model(trainer.model(), &config.lora, run);
    let weights = files.weights_bytes().unwrap();
    let config_json = files.config_json();
    let run_json = files.run_json().unwrap();

    let loaded = AdapterFiles::from_bytes(&weights, &config_json, Some(&run_json), &dir).unwrap();
    let checkpoint = Checkpoint::from_dir(&dir, 16).unwrap();
    let (model, labels) = loaded.apply(&checkpoint, &device).unwrap();
    assert_eq!(labels.names(), trainer.labels().names());
    let after = predict_texts(&model, &checkpoint.tokenizer, &texts, 8).unwrap();
    assert_eq!(before.logits, after.logits, "reloaded adapter changed the logits");

    // PEFT's tensor names and shapes.
    let a = loaded.weights.get_any(&lora_tensor_name("encoder.layer.1.attention.self.value", "lora_A")).unwrap();
    assert_eq!(a.shape, vec![8, common::tiny::HIDDEN]);
    let head = loaded.weights.get_any(&head_tensor_name("weight")).unwrap();
    assert_eq!(head.shape, vec![2, common::tiny::HIDDEN]);
    assert_eq!(
        lora_tensor_name("encoder.layer.0.attention.self.query", "lora_A"),
        "base_model.model.bert.encoder.layer.0.attention.self.query.lora_A.weight"
    );

    let json: serde_json::Value = serde_json::from_str(&config_json).unwrap();
    for key in ["peft_type", "task_type", "r", "lora_alpha", "lora_dropout", "target_modules", "modules_to_save", "bias"] {
        assert!(json.get(key).is_some(), "adapter_config.json lacks `{key}`");
    }
    assert_eq!(json["peft_type"], "LORA");
    assert_eq!(json["task_type"], "SEQ_CLS");
}
