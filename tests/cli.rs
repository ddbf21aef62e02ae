//! The `coto` binary end to end: training on real data, embeddings, and clear errors for bad
//! input paths and columns.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use coto::assets::{self, MINILM, SMS_SPAM};
use common::tiny::{synthetic_lines, temp_dir, write_tiny_bert};

fn coto(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_coto"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("the coto binary runs")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn train_on_real_data_slice_writes_adapter_and_lowers_loss() {
    let model = assets::ensure(&MINILM).unwrap();
    let data = assets::ensure(&SMS_SPAM).unwrap().join(SMS_SPAM.files[0].name);
    let dir = temp_dir("cli-train");
    let slice: Vec<String> = std::fs::read_to_string(&data).unwrap().lines().take(200).map(str::to_string).collect();
    let slice_path = dir.join("slice.tsv");
    std::fs::write(&slice_path, slice.join("\n")).unwrap();
    let output_dir = dir.join("out");

    let output = coto(&[
        "train", "--model", path(&model), "--data", path(&slice_path), "--output", path(&output_dir),
        "--device", "cpu", "--epochs", "2", "--max-steps", "16", "--lr", "2e-3", "--eval-every", "0", "--seed", "3",
    ]);
    assert!(output.status.success(), "coto train failed: {}", stderr(&output));

    for file in ["adapter_model.safetensors", "adapter_config.json", "coto_run.json", "metrics.jsonl"] {
        assert!(output_dir.join(file).is_file(), "{file} was not written");
    }
    let losses: Vec<f64> = std::fs::read_to_string(output_dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
        .filter(|v| v["kind"] == "step")
        .map(|v| v["loss"].as_f64().unwrap())
        .collect();
    assert_eq!(losses.len(), 16);
    let first: f64 = losses[..4].iter().sum::<f64>() / 4.0;
    let last: f64 = losses[12..].iter().sum::<f64>() / 4.0;
    assert!(last < first, "training loss did not fall: first steps {first:.4}, last steps {last:.4}");

    let run: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(output_dir.join("coto_run.json")).unwrap()).unwrap();
    assert_eq!(run["labels"], serde_json::json!(["ham", "spam"]));
    assert_eq!(run["steps"], 16);
}

#[test]
fn embed_prints_unit_vectors() {
    let model = write_tiny_bert(&temp_dir("cli-embed"), 1);
    let output = coto(&[
        "embed", "--model", path(&model), "--device", "cpu", "--max-length", "32", "good day", "a cold dark day",
    ]);
    assert!(output.status.success(), "coto embed failed: {}", stderr(&output));
    let stdout = String::from_utf8(output.stdout).unwrap();
    let lines: Vec<serde_json::Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[1]["text"], "a cold dark day");
    for line in &lines {
        let embedding: Vec<f64> = line["embedding"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        assert_eq!(embedding.len(), common::tiny::HIDDEN);
        let norm = embedding.iter().map(|v| v * v).sum::<f64>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "embedding norm {norm}");
    }
}

#[test]
fn missing_model_directory_is_named() {
    let data = temp_dir("cli-missing-model").join("data.tsv");
    std::fs::write(&data, synthetic_lines(20, 1).join("\n")).unwrap();
    let output = coto(&["train", "--model", "/nonexistent/model-dir", "--data", path(&data), "--device", "cpu"]);
    assert!(!output.status.success());
    let message = stderr(&output);
    assert!(message.contains("/nonexistent/model-dir"), "message does not name the path: {message}");
    assert!(!message.contains("panicked"), "panicked: {message}");
}

#[test]
fn missing_model_file_is_named() {
    let model = write_tiny_bert(&temp_dir("cli-missing-file"), 1);
    std::fs::remove_file(model.join("tokenizer.json")).unwrap();
    let output = coto(&["embed", "--model", path(&model), "--device", "cpu", "--max-length", "32", "hello"]);
    assert!(!output.status.success());
    let message = stderr(&output);
    assert!(message.contains("tokenizer.json"), "message does not name the file: {message}");
}

#[test]
fn missing_data_file_is_named() {
    let model = write_tiny_bert(&temp_dir("cli-missing-data"), 1);
    let output = coto(&["train", "--model", path(&model), "--data", "/nonexistent/data.csv", "--device", "cpu"]);
    assert!(!output.status.success());
    let message = stderr(&output);
    assert!(message.contains("/nonexistent/data.csv"), "message does not name the file: {message}");
}

#[test]
fn wrong_column_names_the_column_and_the_header() {
    let dir = temp_dir("cli-columns");
    let model = write_tiny_bert(&dir.join("model"), 1);
    let data = dir.join("data.csv");
    std::fs::write(&data, "sentence,category\ngood day,pos\nbad day,neg\nnice warm day,pos\nsad cold day,neg\n").unwrap();
    let output = coto(&["train", "--model", path(&model), "--data", path(&data), "--device", "cpu"]);
    assert!(!output.status.success());
    let message = stderr(&output);
    assert!(message.contains("column `text` not found"), "{message}");
    assert!(message.contains("sentence"), "message does not list the header: {message}");

    // The right column flags make the same file readable.
    let output = coto(&[
        "train", "--model", path(&model), "--data", path(&data), "--device", "cpu", "--text-column", "sentence",
        "--label-column", "category", "--max-steps", "1", "--validation-fraction", "0.5", "--batch-size", "2",
        "--output", path(&dir.join("out")),
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
}

#[test]
fn out_of_range_setting_is_named() {
    let model = write_tiny_bert(&temp_dir("cli-settings"), 1);
    let output = coto(&["train", "--model", path(&model), "--initial-p", "1.5", "--device", "cpu"]);
    assert!(!output.status.success());
    let message = stderr(&output);
    assert!(message.contains("initial_p") && message.contains("1.5"), "{message}");
}

#[test]
fn resume_from_checkpoint_matches_uninterrupted_run() {
    let dir = temp_dir("cli-resume");
    let model = write_tiny_bert(&dir.join("model"), 1);
    let data = dir.join("data.tsv");
    std::fs::write(&data, synthetic_lines(80, 3).join("\n")).unwrap();
    let train = |output: &Path| {
        coto(&[
            "train", "--model", path(&model), "--data", path(&data), "--output", path(output), "--device", "cpu",
            "--max-length", "16", "--batch-size", "8", "--epochs", "3", "--max-steps", "8", "--save-every", "4",
            "--eval-every", "0", "--lr", "3e-3",
        ])
    };
    let full = dir.join("full");
    let output = train(&full);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(full.join("checkpoints/step-00000004").is_dir());
    assert!(full.join("checkpoints/step-00000008").is_dir());

    // A run that stopped after its step-4 checkpoint, resumed by a new process.
    let partial = dir.join("partial");
    std::fs::create_dir_all(partial.join("checkpoints")).unwrap();
    let from = full.join("checkpoints/step-00000004");
    let to = partial.join("checkpoints/step-00000004");
    std::fs::create_dir_all(&to).unwrap();
    for entry in std::fs::read_dir(&from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
    let output = coto(&["train", "--resume", path(&partial), "--device", "cpu"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let read = |dir: &Path| std::fs::read(dir.join("adapter_model.safetensors")).unwrap();
    assert!(read(&partial) == read(&full), "the resumed run ended with a different adapter");

    let steps = |dir: &Path| {
        std::fs::read_to_string(dir.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .filter(|l| l.contains("\"kind\":\"step\""))
            .count()
    };
    assert_eq!(steps(&partial), 4, "the resumed log should hold steps 5 to 8 only");
}
