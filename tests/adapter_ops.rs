//! Adapter operators on files: loading a PEFT-written adapter, merge arithmetic, pruning
//! patterns, and the merged export.

mod common;

use std::collections::HashMap;

use burn::module::Module;
use burn::tensor::Device;
use coto::adapter::{
    AdapterFiles, HeadChoice, MergeMethod, PrunePattern, export_merged, head_tensor_name, lora_tensor_name, merge_adapters,
    prune_adapter, sparsify_adapter,
};
use coto::linalg::svd;
use coto::model::{BertClassifier, BertModel, Checkpoint, HostTensor, linear_from_torch};
use coto::lora::LoraAdapter;
use coto::train::predict_texts;
use common::tiny::{HIDDEN, LAYERS, temp_dir, write_tiny_bert};
use rand::Rng;

const TEXTS: [&str; 3] = ["good bright day", "a cold grim day", "the day was so so"];

/// The keys and values PEFT 0.21 writes in `adapter_config.json` for a LoRA sequence
/// classifier, as a fixture independent of coto's writer.
fn peft_config_json(r: usize, alpha: f64, targets: &[&str]) -> String {
    serde_json::json!({
        "alpha_pattern": {}, "auto_mapping": null, "base_model_name_or_path": "tiny-bert", "bias": "none",
        "corda_config": null, "eva_config": null, "exclude_modules": null, "fan_in_fan_out": false,
        "inference_mode": true, "init_lora_weights": true, "layer_replication": null, "layers_pattern": null,
        "layers_to_transform": null, "loftq_config": {}, "lora_alpha": alpha, "lora_bias": false,
        "lora_dropout": 0.1, "megatron_config": null, "megatron_core": "megatron.core",
        "modules_to_save": ["classifier", "score"], "peft_type": "LORA", "qalora_group_size": 16, "r": r,
        "rank_pattern": {}, "revision": null, "target_modules": targets, "target_parameters": null,
        "task_type": "SEQ_CLS", "trainable_token_indices": null, "use_dora": false, "use_qalora": false,
        "use_rslora": false
    })
    .to_string()
}

/// Random PEFT-named tensors for `targets` in every layer, serialised with the safetensors crate
/// directly.
fn peft_weights(r: usize, targets: &[&str], seed: u64) -> (Vec<u8>, HashMap<String, HostTensor>) {
    let mut rng = coto::rng::seeded(seed, 9);
    let mut random = |shape: Vec<usize>| {
        let n: usize = shape.iter().product();
        HostTensor::new(shape, (0..n).map(|_| rng.random_range(-0.3f32..0.3)).collect())
    };
    let mut tensors = HashMap::new();
    for layer in 0..LAYERS {
        for target in targets {
            let slot = format!("encoder.layer.{layer}.attention.self.{target}");
            tensors.insert(lora_tensor_name(&slot, "lora_A"), random(vec![r, HIDDEN]));
            tensors.insert(lora_tensor_name(&slot, "lora_B"), random(vec![HIDDEN, r]));
        }
    }
    tensors.insert(head_tensor_name("weight"), random(vec![2, HIDDEN]));
    tensors.insert(head_tensor_name("bias"), random(vec![2]));
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(name, t)| (name.clone(), t.shape.clone(), t.data.iter().flat_map(|v| v.to_le_bytes()).collect()))
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = bytes
        .iter()
        .map(|(n, s, b)| (n.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b).unwrap()))
        .collect();
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    (safetensors::serialize(views, Some(metadata)).unwrap(), tensors)
}

fn fixture_adapter(dir: &std::path::Path, r: usize, alpha: f64, seed: u64) -> (AdapterFiles, HashMap<String, HostTensor>) {
    let (bytes, tensors) = peft_weights(r, &["query", "value"], seed);
    let files = AdapterFiles::from_bytes(&bytes, &peft_config_json(r, alpha, &["query", "value"]), None, dir).unwrap();
    (files, tensors)
}

#[test]
fn peft_written_adapter_loads_with_expected_logits() {
    let device = Device::flex();
    let dir = temp_dir("peft-fixture");
    let model_dir = write_tiny_bert(&dir.join("model"), 5);
    let checkpoint = Checkpoint::from_dir(&model_dir, 16).unwrap();
    let (files, tensors) = fixture_adapter(&dir, 4, 8.0, 1);

    let (loaded, labels) = files.apply(&checkpoint, &device).unwrap();
    assert_eq!(labels.names(), ["LABEL_0", "LABEL_1"]);

    // The same model assembled by hand from the fixture's tensors.
    let mut bert = BertModel::load(&checkpoint.config, &checkpoint.weights, &device).unwrap();
    let mut index = 0;
    for (layer_index, layer) in bert.encoder.layer.iter_mut().enumerate() {
        for (name, linear) in layer.linears_mut() {
            let slot = format!("encoder.layer.{layer_index}.{name}");
            if let Some(a) = tensors.get(&lora_tensor_name(&slot, "lora_A")) {
                let b = &tensors[&lora_tensor_name(&slot, "lora_B")];
                linear.attach(LoraAdapter::from_tensors(a.to_tensor(&device), b.to_tensor(&device), 2.0, 0.0, index));
                index += 1;
            }
        }
    }
    let mut rng = coto::rng::seeded(0, 0);
    let mut expected = BertClassifier::new(bert, &checkpoint.config, 2, coto::model::Pooling::Cls, &mut rng, &device).unwrap();
    expected.classifier = linear_from_torch(&tensors[&head_tensor_name("weight")], Some(&tensors[&head_tensor_name("bias")]), &device);

    let actual = predict_texts(&loaded.valid(), &checkpoint.tokenizer, &TEXTS, 4).unwrap();
    let reference = predict_texts(&expected.valid(), &checkpoint.tokenizer, &TEXTS, 4).unwrap();
    assert_eq!(actual.logits, reference.logits);
}

#[test]
fn unsupported_peft_feature_is_named() {
    let dir = temp_dir("peft-unsupported");
    let (bytes, _) = peft_weights(4, &["query"], 1);
    let cases = [
        ("\"bias\":\"none\"", "\"bias\":\"all\"", "bias"),
        ("\"rank_pattern\":{}", "\"rank_pattern\":{\"query\":8}", "rank_pattern"),
        ("\"layers_to_transform\":null", "\"layers_to_transform\":[0]", "layers_to_transform"),
        ("\"fan_in_fan_out\":false", "\"fan_in_fan_out\":true", "fan_in_fan_out"),
        ("\"peft_type\":\"LORA\"", "\"peft_type\":\"IA3\"", "peft_type"),
        ("\"task_type\":\"SEQ_CLS\"", "\"task_type\":\"CAUSAL_LM\"", "task_type"),
    ];
    for (from, to, key) in cases {
        let config = peft_config_json(4, 8.0, &["query"]);
        assert!(config.contains(from), "the fixture lacks {from}");
        let files = AdapterFiles::from_bytes(&bytes, &config.replace(from, to), None, &dir).unwrap();
        let message = files.check_supported().unwrap_err().to_string();
        assert!(message.contains(key), "{to}: message does not name {key}: {message}");
    }
}

#[test]
fn linear_merge_is_exact_weighted_sum() {
    let dir = temp_dir("merge-linear");
    let (first, _) = fixture_adapter(&dir, 4, 8.0, 1);
    let (second, _) = fixture_adapter(&dir, 2, 8.0, 2);
    let weights = [0.7, 0.3];
    for method in [MergeMethod::Linear, MergeMethod::Cat] {
        let merged = merge_adapters(&[&first, &second], &weights, method, None, HeadChoice::First).unwrap();
        assert_eq!(merged.config.r, 6);
        for slot in first.slot_names() {
            let expected = first.delta(&slot).unwrap().scale(0.7).add(&second.delta(&slot).unwrap().scale(0.3));
            let actual = merged.delta(&slot).unwrap();
            let error = actual.add(&expected.clone().scale(-1.0)).frobenius() / expected.frobenius();
            assert!(error < 1e-6, "{slot}: relative error {error:.2e}");
        }
    }
}

/// The SVD merge is the best rank-r approximation of the weighted sum: its error equals the
/// norm of the discarded singular values (Eckart–Young).
#[test]
fn svd_merge_error_is_discarded_spectrum() {
    let dir = temp_dir("merge-svd");
    let (first, _) = fixture_adapter(&dir, 4, 8.0, 3);
    let (second, _) = fixture_adapter(&dir, 4, 8.0, 4);
    let merged = merge_adapters(&[&first, &second], &[1.0, 1.0], MergeMethod::Svd, Some(3), HeadChoice::Average).unwrap();
    assert_eq!(merged.config.r, 3);
    for slot in first.slot_names() {
        let sum = first.delta(&slot).unwrap().add(&second.delta(&slot).unwrap());
        let spectrum = svd(&sum).s;
        let bound = spectrum[3..].iter().map(|s| s * s).sum::<f64>().sqrt();
        let error = merged.delta(&slot).unwrap().add(&sum.clone().scale(-1.0)).frobenius();
        assert!((error - bound).abs() <= 1e-5 * sum.frobenius(), "{slot}: error {error}, bound {bound}");
    }
    // Averaged heads.
    let (w1, _) = first.head().unwrap();
    let (w2, _) = second.head().unwrap();
    let (w, _) = merged.head().unwrap();
    assert!((w.data[0] - (w1.data[0] + w2.data[0]) / 2.0).abs() < 1e-6);
}

#[test]
fn merge_rejects_other_modules() {
    let dir = temp_dir("merge-reject");
    let (first, _) = fixture_adapter(&dir, 4, 8.0, 1);
    let (bytes, _) = peft_weights(4, &["key"], 2);
    let other = AdapterFiles::from_bytes(&bytes, &peft_config_json(4, 8.0, &["key"]), None, &dir).unwrap();
    let message = merge_adapters(&[&first, &other], &[1.0, 1.0], MergeMethod::Linear, None, HeadChoice::First)
        .unwrap_err()
        .to_string();
    assert!(message.contains("other modules"), "{message}");
}

#[test]
fn prune_patterns_select_layers() {
    let layers_of = |pattern: &str, num_layers: usize| -> Vec<usize> {
        let pattern: PrunePattern = pattern.parse().unwrap();
        (0..num_layers)
            .filter(|&l| pattern.drops(&format!("encoder.layer.{l}.attention.self.query"), num_layers))
            .collect()
    };
    assert_eq!(layers_of("every-other", 6), vec![1, 3, 5]);
    assert_eq!(layers_of("lower", 6), vec![0, 1]);
    assert_eq!(layers_of("middle", 6), vec![2, 3]);
    assert_eq!(layers_of("upper", 6), vec![4, 5]);
    assert_eq!(layers_of("every-other", 12), vec![1, 3, 5, 7, 9, 11]);
    assert_eq!(layers_of("lower", 12), vec![0, 1, 2, 3]);
    assert_eq!(layers_of("middle", 12), vec![4, 5, 6, 7]);
    assert_eq!(layers_of("upper", 12), vec![8, 9, 10, 11]);
    assert_eq!(layers_of("layers=0,2,4", 12), vec![0, 2, 4]);
    let query: PrunePattern = "query".parse().unwrap();
    assert!(query.drops("encoder.layer.3.attention.self.query", 6));
    assert!(!query.drops("encoder.layer.3.attention.self.value", 6));
    assert!("queries".parse::<PrunePattern>().is_err());
}

#[test]
fn pruned_adapters_have_zero_update() {
    let dir = temp_dir("prune-zero");
    let (files, _) = fixture_adapter(&dir, 4, 8.0, 1);
    let pruned = prune_adapter(&files, &"lower".parse().unwrap(), 2).unwrap();
    assert_eq!(pruned.delta("encoder.layer.0.attention.self.query").unwrap().frobenius(), 0.0);
    assert_eq!(
        pruned.delta("encoder.layer.1.attention.self.query").unwrap(),
        files.delta("encoder.layer.1.attention.self.query").unwrap()
    );
}

#[test]
fn sparsified_adapter_stores_exact_sparse_update() {
    let dir = temp_dir("sparsify");
    let (files, _) = fixture_adapter(&dir, 4, 8.0, 1);
    let sparse = sparsify_adapter(&files, 0.5).unwrap();
    for slot in files.slot_names() {
        let mut expected = files.delta(&slot).unwrap();
        coto::adapter::zero_smallest(&mut expected, 0.5);
        let zeros = expected.data.iter().filter(|&&v| v == 0.0).count();
        assert_eq!(zeros, expected.data.len() / 2);
        let actual = sparse.delta(&slot).unwrap();
        let error = actual.add(&expected.clone().scale(-1.0)).frobenius() / expected.frobenius();
        assert!(error < 1e-5, "{slot}: relative error {error:.2e}");
    }
}

#[test]
fn merged_export_gives_same_logits() {
    let device = Device::flex();
    let dir = temp_dir("export-merged");
    let model_dir = write_tiny_bert(&dir.join("model"), 5);
    let checkpoint = Checkpoint::from_dir(&model_dir, 16).unwrap();
    let (files, _) = fixture_adapter(&dir, 4, 8.0, 7);
    let (adapted, _) = files.apply(&checkpoint, &device).unwrap();
    let expected = predict_texts(&adapted.valid(), &checkpoint.tokenizer, &TEXTS, 4).unwrap();

    let export = export_merged(&files, &checkpoint.config, &checkpoint.weights).unwrap();
    let config: serde_json::Value = serde_json::from_str(&export.config_json).unwrap();
    assert_eq!(config["architectures"][0], "BertForSequenceClassification");
    assert!(export.weights.contains("bert.encoder.layer.0.attention.self.query.weight"));
    let exported = Checkpoint::from_parts(checkpoint.config.clone(), export.weights.clone(), checkpoint.tokenizer.clone()).unwrap();
    let bert = BertModel::load(&exported.config, &exported.weights, &device).unwrap();
    let mut rng = coto::rng::seeded(0, 0);
    let mut merged = BertClassifier::new(bert, &exported.config, 2, coto::model::Pooling::Cls, &mut rng, &device).unwrap();
    let head_weight = export.weights.get_any("classifier.weight").unwrap();
    let head_bias = export.weights.get_any("classifier.bias").unwrap();
    merged.classifier = linear_from_torch(head_weight, Some(head_bias), &device);
    let actual = predict_texts(&merged.valid(), &checkpoint.tokenizer, &TEXTS, 4).unwrap();
    let reference = HostTensor::new(vec![3, 2], expected.logits.clone());
    let result = HostTensor::new(vec![3, 2], actual.logits.clone());
    common::assert_relative("merged logits", "flex", &result, &reference, 1e-5);
}
