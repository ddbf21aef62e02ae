//! Exporting the base model with an adapter merged in, as a Hugging Face
//! `BertForSequenceClassification` checkpoint that transformers loads without PEFT.

use std::collections::BTreeMap;

use super::files::AdapterFiles;
use crate::error::Result;
use crate::model::{BertConfig, HostTensor, WeightMap};

/// The exported checkpoint: `config.json` text and `model.safetensors` tensors.
#[derive(Debug, Clone)]
pub struct MergedCheckpoint {
    /// `config.json`.
    pub config_json: String,
    /// Tensors under transformers' names (`bert.encoder.layer.0...`, `classifier.weight`).
    pub weights: WeightMap,
}

/// Adds each adapter's `ΔW` into the matching base weight of `base` (tensors without the `bert.`
/// prefix, as [`crate::model::Checkpoint`] holds them) and attaches the adapter's head.
pub fn export_merged(adapter: &AdapterFiles, config: &BertConfig, base: &WeightMap) -> Result<MergedCheckpoint> {
    adapter.check_supported()?;
    let mut weights = WeightMap::new("model.safetensors");
    for name in base.names() {
        let tensor = base.get_any(name).expect("name listed by the map");
        weights.insert(format!("bert.{name}"), tensor.clone());
    }
    for slot in adapter.slot_names() {
        let name = format!("bert.{slot}.weight");
        let shape = base.get_any(&format!("{slot}.weight")).map(|t| t.shape.clone()).unwrap_or_default();
        let base_weight = base.get(&format!("{slot}.weight"), &shape)?;
        let matrix = crate::linalg::Matrix::from_f32(shape[0], shape[1], &base_weight.data);
        let delta = adapter.effective_delta(&slot, &matrix)?;
        let merged = base_weight
            .data
            .iter()
            .zip(&delta.data)
            .map(|(&w, &d)| (w as f64 + d) as f32)
            .collect();
        weights.insert(name, HostTensor::new(base_weight.shape.clone(), merged));
    }
    let (head_weight, head_bias) = adapter.head()?;
    weights.insert("classifier.weight", head_weight.clone());
    weights.insert("classifier.bias", head_bias.clone());

    let labels = adapter.labels()?;
    let id2label: BTreeMap<String, String> = labels
        .names()
        .iter()
        .enumerate()
        .map(|(i, name)| (i.to_string(), name.clone()))
        .collect();
    let label2id: BTreeMap<String, usize> = labels.names().iter().enumerate().map(|(i, n)| (n.clone(), i)).collect();
    let mut json = serde_json::to_value(config).expect("the config serialises");
    json["architectures"] = serde_json::json!(["BertForSequenceClassification"]);
    json["id2label"] = serde_json::to_value(id2label).expect("labels serialise");
    json["label2id"] = serde_json::to_value(label2id).expect("labels serialise");
    json["problem_type"] = "single_label_classification".into();
    let config_json = serde_json::to_string_pretty(&json).expect("the config serialises");
    Ok(MergedCheckpoint { config_json, weights })
}
