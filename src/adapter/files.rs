//! Adapter files in memory: building them from a trained classifier and applying them to a
//! base checkpoint. The browser and the CLI share this code; only writing to disk differs.

use std::collections::HashMap;
use std::path::Path;

use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use super::peft::{PeftAdapterConfig, TargetModules, head_tensor_name, lora_tensor_name};
use crate::coto::AdapterSlot;
use crate::data::LabelMap;
use crate::error::{CotoError, Result};
use crate::lora::{LoraAdapter, LoraConfig};
use crate::model::{BertClassifier, BertModel, Checkpoint, HostTensor, WeightMap, adapter_slots, linear_from_torch};
use crate::train::{Metrics, TrainConfig};

/// `adapter_model.safetensors`.
pub const WEIGHTS_FILE: &str = "adapter_model.safetensors";
/// `adapter_config.json`.
pub const CONFIG_FILE: &str = "adapter_config.json";
/// `coto_run.json`.
pub const RUN_FILE: &str = "coto_run.json";

/// `coto_run.json`: what PEFT's files do not hold: the label map, the run's settings and seed,
/// and its metrics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
    /// Version of coto that wrote the files.
    pub coto_version: String,
    /// Class names in id order.
    pub labels: Vec<String>,
    /// The training settings (CoTo settings and seed included).
    pub train: Option<TrainConfig>,
    /// Optimizer steps taken.
    pub steps: usize,
    /// The last evaluation.
    pub metrics: Option<Metrics>,
    /// The base checkpoint.
    pub base_model: Option<String>,
    /// How the adapter was made when it is not a training result, e.g. `merge (svd) of a, b`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
}

/// The three files of a saved adapter.
#[derive(Debug, Clone)]
pub struct AdapterFiles {
    /// Adapter and head tensors under PEFT's names.
    pub weights: WeightMap,
    /// `adapter_config.json`.
    pub config: PeftAdapterConfig,
    /// `coto_run.json` (absent for adapters written by PEFT).
    pub run: Option<RunInfo>,
}

impl AdapterFiles {
    /// Captures the adapters and head of `model`.
    pub fn from_model(model: &BertClassifier, lora: &LoraConfig, run: RunInfo) -> Self {
        let mut weights = WeightMap::new(WEIGHTS_FILE);
        let slots = adapter_slots(&model.bert);
        for (slot, adapter) in slots.iter().zip(model_adapters(&model.bert)) {
            weights.insert(lora_tensor_name(&slot.name, "lora_A"), HostTensor::from_tensor(adapter.lora_a.val()));
            weights.insert(lora_tensor_name(&slot.name, "lora_B"), HostTensor::from_tensor(adapter.lora_b.val()));
        }
        // burn stores the head as [hidden, labels]; PyTorch as [labels, hidden].
        let head = HostTensor::from_tensor(model.classifier.weight.val()).transposed();
        weights.insert(head_tensor_name("weight"), head);
        if let Some(bias) = &model.classifier.bias {
            weights.insert(head_tensor_name("bias"), HostTensor::from_tensor(bias.val()));
        }
        let config = PeftAdapterConfig::for_classifier(lora, run.base_model.clone());
        Self {
            weights,
            config,
            run: Some(run),
        }
    }

    /// Serialises the tensors as safetensors, with PEFT's `{"format": "pt"}` metadata.
    pub fn weights_bytes(&self) -> Result<Vec<u8>> {
        let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
        self.weights.to_safetensors(Some(metadata))
    }

    /// `adapter_config.json` text.
    pub fn config_json(&self) -> String {
        serde_json::to_string_pretty(&self.config).expect("the config serialises")
    }

    /// `coto_run.json` text, if there is run information.
    pub fn run_json(&self) -> Option<String> {
        self.run.as_ref().map(|run| serde_json::to_string_pretty(run).expect("the run info serialises"))
    }

    /// Parses the files' contents; `source` names them in errors.
    pub fn from_bytes(weights: &[u8], config: &str, run: Option<&str>, source: &Path) -> Result<Self> {
        let weights = WeightMap::from_bytes(weights, &source.join(WEIGHTS_FILE))?;
        let config: PeftAdapterConfig = serde_json::from_str(config).map_err(|e| CotoError::Parse {
            format: "JSON",
            path: source.join(CONFIG_FILE),
            message: e.to_string(),
        })?;
        let run = run
            .map(|text| {
                serde_json::from_str::<RunInfo>(text).map_err(|e| CotoError::Parse {
                    format: "JSON",
                    path: source.join(RUN_FILE),
                    message: e.to_string(),
                })
            })
            .transpose()?;
        Ok(Self { weights, config, run })
    }

    /// Checks that coto supports every feature the PEFT config uses.
    pub fn check_supported(&self) -> Result<()> {
        let config = &self.config;
        let unsupported = |key: &str, value: String, hint: &str| {
            Err(CotoError::setting(key, value, format!("coto does not support this PEFT feature; {hint}")))
        };
        if config.peft_type != "LORA" {
            return unsupported("peft_type", config.peft_type.clone(), "only LORA adapters load");
        }
        if let Some(task) = &config.task_type
            && task != "SEQ_CLS"
        {
            return unsupported("task_type", task.clone(), "only sequence-classification adapters (SEQ_CLS) load");
        }
        if config.use_dora {
            return unsupported("use_dora", "true".into(), "train without DoRA");
        }
        if config.bias != "none" {
            return unsupported("bias", config.bias.clone(), "train with bias=\"none\"");
        }
        if config.fan_in_fan_out {
            return unsupported("fan_in_fan_out", "true".into(), "BERT linears are not Conv1D");
        }
        if !config.rank_pattern.is_empty() || !config.alpha_pattern.is_empty() {
            return unsupported("rank_pattern", "non-empty".into(), "use one rank and alpha for all modules");
        }
        if config.layers_to_transform.as_ref().is_some_and(|v| !v.is_null()) {
            return unsupported("layers_to_transform", "set".into(), "adapt every layer");
        }
        if let TargetModules::Regex(pattern) = &config.target_modules {
            return unsupported("target_modules", pattern.clone(), "give a list of module names");
        }
        Ok(())
    }

    /// The scaling of every adapter: `lora_alpha / r`, or `lora_alpha / sqrt(r)` with rsLoRA.
    pub fn scaling(&self) -> f64 {
        if self.config.use_rslora {
            self.config.lora_alpha / (self.config.r as f64).sqrt()
        } else {
            self.config.lora_alpha / self.config.r as f64
        }
    }

    /// The class names: from `coto_run.json`, or `LABEL_0 ...` as transformers names them.
    pub fn labels(&self) -> Result<LabelMap> {
        let classes = self.weights.get_any(&head_tensor_name("weight")).map(|w| w.shape[0]).ok_or_else(|| {
            self.invalid(format!(
                "tensor `{}` is missing; the adapter must be saved from a sequence classifier \
                 with the classifier in modules_to_save",
                head_tensor_name("weight")
            ))
        })?;
        match &self.run {
            Some(run) if run.labels.len() == classes => Ok(LabelMap::from_ordered(run.labels.clone())),
            Some(run) => Err(self.invalid(format!(
                "coto_run.json names {} labels but the classifier has {classes} outputs",
                run.labels.len()
            ))),
            None => Ok(LabelMap::from_ordered((0..classes).map(|i| format!("LABEL_{i}")).collect())),
        }
    }

    /// Builds the classifier: `checkpoint`'s encoder with these adapters and this head, on
    /// `device`. Fails if the adapter does not fit the checkpoint.
    pub fn apply(&self, checkpoint: &Checkpoint, device: &Device) -> Result<(BertClassifier, LabelMap)> {
        self.check_supported()?;
        let labels = self.labels()?;
        let mut bert = BertModel::load(&checkpoint.config, &checkpoint.weights, device)?;
        let scaling = self.scaling();
        let r = self.config.r;
        let mut index = 0;
        let mut expected_tensors = 0;
        for (layer_index, layer) in bert.encoder.layer.iter_mut().enumerate() {
            for (name, linear) in layer.linears_mut() {
                let slot = format!("encoder.layer.{layer_index}.{name}");
                let a_name = lora_tensor_name(&slot, "lora_A");
                if !self.weights.contains(&a_name) {
                    continue;
                }
                let (d_in, d_out) = (linear.in_features(), linear.out_features());
                let a = self.weights.get(&a_name, &[r, d_in])?;
                let b = self.weights.get(&lora_tensor_name(&slot, "lora_B"), &[d_out, r])?;
                linear.attach(LoraAdapter::from_tensors(
                    a.to_tensor(device),
                    b.to_tensor(device),
                    scaling,
                    self.config.lora_dropout,
                    index,
                ));
                index += 1;
                expected_tensors += 2;
            }
        }
        if index == 0 {
            return Err(self.invalid(format!(
                "no LoRA tensor matches this model's modules (expected names like `{}`); \
                 was the adapter trained on a BERT model?",
                lora_tensor_name("encoder.layer.0.attention.self.query", "lora_A")
            )));
        }
        let hidden = checkpoint.config.hidden_size;
        let head_weight = self.weights.get(&head_tensor_name("weight"), &[labels.len(), hidden])?;
        let head_bias = self.weights.get(&head_tensor_name("bias"), &[labels.len()])?;
        expected_tensors += 2;
        let stray: Vec<&str> = self
            .weights
            .names()
            .into_iter()
            .filter(|n| n.contains(".lora_") || n.starts_with(super::peft::PEFT_PREFIX))
            .collect();
        if stray.len() > expected_tensors {
            return Err(self.invalid(format!(
                "{} tensors, of which only {expected_tensors} fit this model; the adapter was made \
                 for a model with other layers or modules",
                stray.len()
            )));
        }
        let mut rng = crate::rng::seeded(0, 0);
        let pooling = match self.run.as_ref().and_then(|r| r.train.as_ref()) {
            Some(train) => train.pooling,
            None => crate::model::Pooling::Cls,
        };
        let mut model = BertClassifier::new(bert, &checkpoint.config, labels.len(), pooling, &mut rng, device)?;
        model.classifier = linear_from_torch(head_weight, Some(head_bias), device);
        Ok((model, labels))
    }

    /// Module paths (e.g. `encoder.layer.0.attention.self.query`) that carry LoRA factors,
    /// in layer and module order.
    pub fn slot_names(&self) -> Vec<String> {
        let prefix = format!("{}bert.", super::peft::PEFT_PREFIX);
        let mut names: Vec<(usize, usize, String)> = self
            .weights
            .names()
            .into_iter()
            .filter_map(|name| name.strip_prefix(&prefix)?.strip_suffix(".lora_A.weight").map(str::to_string))
            .map(|slot| {
                let layer = slot.split('.').nth(2).and_then(|n| n.parse().ok()).unwrap_or(usize::MAX);
                let module = crate::model::TARGETABLE_MODULES
                    .iter()
                    .position(|m| slot.ends_with(&format!(".{m}")))
                    .unwrap_or(usize::MAX);
                (layer, module, slot)
            })
            .collect();
        names.sort();
        names.into_iter().map(|(_, _, slot)| slot).collect()
    }

    /// The factors `A: [r, in]` and `B: [out, r]` of the adapter at `slot`.
    pub fn factors(&self, slot: &str) -> Result<(&HostTensor, &HostTensor)> {
        let find = |factor: &str| {
            let name = lora_tensor_name(slot, factor);
            self.weights
                .get_any(&name)
                .ok_or_else(|| self.invalid(format!("tensor `{name}` is missing")))
        };
        Ok((find("lora_A")?, find("lora_B")?))
    }

    /// `ΔW = scaling · B·A` of the adapter at `slot`, `[out, in]`, in f64.
    pub fn delta(&self, slot: &str) -> Result<crate::linalg::Matrix> {
        let (a, b) = self.factors(slot)?;
        let a = crate::linalg::Matrix::from_f32(a.shape[0], a.shape[1], &a.data);
        let b = crate::linalg::Matrix::from_f32(b.shape[0], b.shape[1], &b.data);
        Ok(b.matmul(&a).scale(self.scaling()))
    }

    /// The classification head `(weight [labels, hidden], bias [labels])`.
    pub fn head(&self) -> Result<(&HostTensor, &HostTensor)> {
        let find = |field: &str| {
            let name = head_tensor_name(field);
            self.weights
                .get_any(&name)
                .ok_or_else(|| self.invalid(format!("tensor `{name}` is missing")))
        };
        Ok((find("weight")?, find("bias")?))
    }

    fn invalid(&self, message: String) -> CotoError {
        CotoError::Weights {
            path: self.weights.source().to_path_buf(),
            message,
        }
    }
}

/// The adapters of `bert` in gate order.
fn model_adapters(bert: &BertModel) -> Vec<&LoraAdapter> {
    let mut adapters: Vec<&LoraAdapter> = bert
        .encoder
        .layer
        .iter()
        .flat_map(|layer| layer.linears().into_iter().filter_map(|(_, linear)| linear.adapter.as_ref()))
        .collect();
    adapters.sort_by_key(|a| a.index);
    adapters
}

/// Slots of the adapters of `model`, for grouping and reporting.
pub fn slots_of(model: &BertClassifier) -> Vec<AdapterSlot> {
    adapter_slots(&model.bert)
}
