//! Bad input gets a clear error: no panic, a non-zero exit, and a message that names the
//! problem and the value. One table row per case; each row builds its files, runs `coto`, and
//! lists the words the message must contain.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::tiny::{synthetic_lines, temp_dir, write_tiny_bert};

fn coto(args: &[String]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_coto"))
        .args(args)
        .env("RUST_LOG", "error")
        .output()
        .expect("the coto binary runs")
}

struct Case {
    name: &'static str,
    args: Vec<String>,
    expected: Vec<&'static str>,
}

fn s(text: &str) -> String {
    text.to_string()
}

fn p(path: &Path) -> String {
    path.display().to_string()
}

/// A copy of the tiny model with one file changed by `edit`.
fn model_with(root: &Path, name: &str, edit: impl FnOnce(&Path)) -> PathBuf {
    let dir = write_tiny_bert(&root.join(name), 1);
    edit(&dir);
    dir
}

fn train_args(model: &Path, data: &Path, extra: &[&str]) -> Vec<String> {
    let mut args = vec![s("train"), s("--model"), p(model), s("--data"), p(data), s("--device"), s("cpu")];
    for (flag, value) in [("--max-length", "16"), ("--batch-size", "4"), ("--max-steps", "1")] {
        if !extra.contains(&flag) {
            args.extend([s(flag), s(value)]);
        }
    }
    args.extend(extra.iter().map(|a| s(a)));
    args
}

#[test]
fn bad_inputs_give_clear_errors() {
    let root = temp_dir("bad-input");
    let model = write_tiny_bert(&root.join("model"), 1);
    let data = root.join("data.tsv");
    std::fs::write(&data, synthetic_lines(40, 1).join("\n")).unwrap();
    let write = |name: &str, bytes: &[u8]| {
        let path = root.join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    };

    let truncated = model_with(&root, "truncated", |dir| {
        let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
        std::fs::write(dir.join("model.safetensors"), &bytes[..bytes.len() / 2]).unwrap();
    });
    let corrupt = model_with(&root, "corrupt", |dir| {
        std::fs::write(dir.join("model.safetensors"), b"this is not a safetensors file").unwrap();
    });
    let wrong_shape = model_with(&root, "wrong-shape", |dir| {
        let text = std::fs::read_to_string(dir.join("config.json")).unwrap();
        std::fs::write(dir.join("config.json"), text.replace("\"intermediate_size\": 64", "\"intermediate_size\": 48")).unwrap();
    });
    let wrong_dtype = model_with(&root, "wrong-dtype", |dir| {
        let path = dir.join("model.safetensors");
        let bytes = std::fs::read(&path).unwrap();
        let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let owned: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> = file
            .tensors()
            .into_iter()
            .map(|(name, view)| {
                if name == "pooler.dense.bias" {
                    (name, safetensors::Dtype::I32, view.shape().to_vec(), view.data().to_vec())
                } else {
                    (name, view.dtype(), view.shape().to_vec(), view.data().to_vec())
                }
            })
            .collect();
        let views: Vec<(String, safetensors::tensor::TensorView)> = owned
            .iter()
            .map(|(n, d, s, b)| (n.clone(), safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap()))
            .collect();
        std::fs::write(&path, safetensors::serialize(views, None).unwrap()).unwrap();
    });
    let not_bert = model_with(&root, "not-bert", |dir| {
        let text = std::fs::read_to_string(dir.join("config.json")).unwrap();
        std::fs::write(dir.join("config.json"), text.replace("\"model_type\": \"bert\"", "\"model_type\": \"gpt2\"")).unwrap();
    });
    let small_vocab = model_with(&root, "small-vocab", |dir| {
        let text = std::fs::read_to_string(dir.join("config.json")).unwrap();
        std::fs::write(dir.join("config.json"), text.replace("\"vocab_size\": 29", "\"vocab_size\": 20")).unwrap();
    });
    let missing_config = model_with(&root, "no-config", |dir| std::fs::remove_file(dir.join("config.json")).unwrap());
    let missing_weights = model_with(&root, "no-weights", |dir| std::fs::remove_file(dir.join("model.safetensors")).unwrap());

    let empty = write("empty.tsv", b"");
    let single_class = write("single.tsv", b"pos\tgood day\npos\tnice day\npos\tkind day\npos\twarm day\n");
    let invalid_utf8 = write("latin1.tsv", b"pos\tgood day\nneg\tbad \xe9t\xe9\npos\tnice day\nneg\tsad day\n");
    let all_empty = write("blank-texts.tsv", b"pos\t \nneg\t\n");
    let few_rows = write("few.tsv", b"pos\tgood day\nneg\tbad day\npos\tnice day\nneg\tsad day\n");
    let unseen_label = write("unseen.tsv", b"pos\tgood day\nmaybe\tso so day\n");
    let bad_toml = write("bad.toml", b"lr = 1e-3\nlearning_rate = 2\n");
    let range_toml = write("range.toml", b"[coto]\ninitial_p = 2.0\n");
    let output_file = write("occupied", b"a file where a directory is expected");

    let cases = vec![
        Case { name: "missing config.json", args: train_args(&missing_config, &data, &[]), expected: vec!["config.json", "missing"] },
        Case { name: "missing model.safetensors", args: train_args(&missing_weights, &data, &[]), expected: vec!["model.safetensors", "missing"] },
        Case { name: "truncated safetensors", args: train_args(&truncated, &data, &[]), expected: vec!["model.safetensors", "not a readable safetensors file"] },
        Case { name: "corrupt safetensors", args: train_args(&corrupt, &data, &[]), expected: vec!["model.safetensors", "not a readable safetensors file"] },
        Case { name: "wrong tensor shape", args: train_args(&wrong_shape, &data, &[]), expected: vec!["intermediate.dense.weight", "shape", "[48, 32]"] },
        Case { name: "wrong tensor dtype", args: train_args(&wrong_dtype, &data, &[]), expected: vec!["pooler.dense.bias", "dtype I32"] },
        Case { name: "non-BERT model_type", args: train_args(&not_bert, &data, &[]), expected: vec!["model_type", "gpt2", "BERT"] },
        Case { name: "tokenizer larger than the embedding", args: train_args(&small_vocab, &data, &[]), expected: vec!["vocabulary has 29 tokens", "vocab_size = 20"] },
        Case { name: "empty data file", args: train_args(&model, &empty, &[]), expected: vec!["empty.tsv", "empty"] },
        Case { name: "single class", args: train_args(&model, &single_class, &[]), expected: vec!["only one class", "pos"] },
        Case { name: "invalid UTF-8", args: train_args(&model, &invalid_utf8, &[]), expected: vec!["line 2", "invalid UTF-8", "--invalid-utf8 skip"] },
        Case { name: "only empty texts", args: train_args(&model, &all_empty, &[]), expected: vec!["no records with a non-empty text"] },
        Case { name: "fewer rows than a batch", args: train_args(&model, &few_rows, &["--batch-size", "16"]), expected: vec!["fewer than one batch", "16"] },
        Case {
            name: "validation label not in training data",
            args: train_args(&model, &data, &["--validation-data", &p(&unseen_label)]),
            expected: vec!["maybe", "does not occur in the training data"],
        },
        Case { name: "out-of-range flag", args: train_args(&model, &data, &["--final-p", "1.5"]), expected: vec!["final_p", "1.5"] },
        Case { name: "out-of-range TOML value", args: train_args(&model, &data, &["--config", &p(&range_toml)]), expected: vec!["initial_p", "2"] },
        Case { name: "unknown TOML key", args: train_args(&model, &data, &["--config", &p(&bad_toml)]), expected: vec!["learning_rate", "unknown field"] },
        Case { name: "unknown target module", args: train_args(&model, &data, &["--target-modules", "query,qkv"]), expected: vec!["qkv", "target_modules"] },
        Case { name: "rank larger than the layer", args: train_args(&model, &data, &["--rank", "64"]), expected: vec!["64", "rank must not exceed", "32"] },
        Case { name: "zero batch size", args: train_args(&model, &data, &["--batch-size", "0"]), expected: vec!["batch_size", "0"] },
        Case {
            name: "output path is a file",
            args: train_args(&model, &data, &["--output", &p(&output_file)]),
            expected: vec!["occupied"],
        },
        Case { name: "resume without checkpoints", args: vec![s("train"), s("--resume"), p(&root)], expected: vec!["no checkpoint found", "--save-every"] },
    ];

    let mut failures = Vec::new();
    for case in &cases {
        let output = coto(&case.args);
        let message = String::from_utf8_lossy(&output.stderr).into_owned();
        if output.status.success() {
            failures.push(format!("{}: succeeded, expected an error", case.name));
            continue;
        }
        if message.contains("panicked") || message.contains("RUST_BACKTRACE") {
            failures.push(format!("{}: panicked: {message}", case.name));
            continue;
        }
        for word in &case.expected {
            if !message.contains(word) {
                failures.push(format!("{}: message lacks {word:?}: {}", case.name, message.trim()));
            }
        }
    }
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), cases.len(), failures.join("\n"));
}

#[test]
fn invalid_utf8_lines_can_be_skipped() {
    let root = temp_dir("bad-input-skip");
    let model = write_tiny_bert(&root.join("model"), 1);
    let mut bytes = synthetic_lines(40, 1).join("\n").into_bytes();
    bytes.extend_from_slice(b"\npos\tgood \xff day\n");
    let data = root.join("data.tsv");
    std::fs::write(&data, bytes).unwrap();
    let output = coto(&train_args(&model, &data, &["--invalid-utf8", "skip", "--output", &p(&root.join("out"))]));
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
}

#[test]
fn adapter_for_another_base_is_rejected() {
    let root = temp_dir("bad-adapter");
    let model = write_tiny_bert(&root.join("model"), 1);
    let data = root.join("data.tsv");
    std::fs::write(&data, synthetic_lines(40, 1).join("\n")).unwrap();
    let adapter = root.join("adapter");
    let output = coto(&train_args(&model, &data, &["--output", &p(&adapter), "--target-modules", "query"]));
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));

    // Another base: the same layout with hidden size 16 instead of 32.
    let other = model_with(&root, "other-base", |dir| {
        let text = std::fs::read_to_string(dir.join("config.json")).unwrap();
        std::fs::write(dir.join("config.json"), text.replace("\"hidden_size\": 32", "\"hidden_size\": 16")).unwrap();
    });
    let output = coto(&[s("predict"), s("--adapter"), p(&adapter), s("--model"), p(&other), s("--max-length"), s("16"), s("hi")]);
    let message = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(message.contains("shape"), "{message}");

    // A rank that disagrees with the tensors.
    let config_path = adapter.join("adapter_config.json");
    let config = std::fs::read_to_string(&config_path).unwrap();
    std::fs::write(&config_path, config.replace("\"r\": 8", "\"r\": 4")).unwrap();
    let output = coto(&[s("predict"), s("--adapter"), p(&adapter), s("--model"), p(&model), s("--max-length"), s("16"), s("hi")]);
    let message = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(message.contains("lora_A") && message.contains("[4, 32]"), "{message}");
    std::fs::write(&config_path, config).unwrap();

    // Evaluation data with a label the adapter does not know.
    let unseen = root.join("unseen.tsv");
    std::fs::write(&unseen, "maybe\tso so day\n").unwrap();
    let output = coto(&[s("eval"), s("--adapter"), p(&adapter), s("--model"), p(&model), s("--data"), p(&unseen), s("--max-length"), s("16")]);
    let message = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(message.contains("maybe") && message.contains("not one of the adapter's labels"), "{message}");
}

#[test]
fn diverging_run_stops_or_skips() {
    let root = temp_dir("diverge");
    let model = write_tiny_bert(&root.join("model"), 1);
    let data = root.join("data.tsv");
    std::fs::write(&data, synthetic_lines(40, 1).join("\n")).unwrap();
    // An absurd learning rate without clipping overflows the parameters within a few steps.
    let extra = ["--lr", "1e30", "--max-grad-norm", "0", "--warmup-ratio", "0", "--max-steps", "6", "--eval-every", "0"];
    let output = coto(&train_args(&model, &data, &extra));
    let message = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "the run did not stop");
    assert!(message.contains("diverged at step"), "{message}");
    assert!(message.contains("--lr"), "{message}");

    let mut skip = extra.to_vec();
    skip.extend(["--on-nonfinite", "skip"]);
    let out = root.join("skip");
    let mut args = train_args(&model, &data, &skip);
    args.extend([s("--output"), p(&out)]);
    let output = Command::new(env!("CARGO_BIN_EXE_coto")).args(&args).env("RUST_LOG", "warn").output().unwrap();
    let message = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the run with --on-nonfinite skip failed: {message}");
    assert!(message.contains("steps skipped"), "the skipped steps were not reported: {message}");
}

#[test]
fn model_larger_than_buffer_limit_is_rejected() {
    let dir = temp_dir("buffer-limit");
    let model = write_tiny_bert(&dir.join("model"), 2);
    let weights = coto::model::WeightMap::from_file(&model.join("model.safetensors")).unwrap();
    let (name, bytes) = weights.largest().expect("the model has tensors");
    assert!(weights.check_buffer_limit(bytes, "a test adapter").is_ok(), "a tensor that exactly fits was rejected");

    let error = weights.check_buffer_limit(bytes - 4, "a test adapter").unwrap_err().to_string();
    assert!(error.contains(name), "{error}");
    assert!(error.contains("a test adapter"), "{error}");
    assert!(error.contains("train on the CPU"), "{error}");
}
