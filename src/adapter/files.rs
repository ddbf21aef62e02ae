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
    /// Captures the adapters and head of `model`. Reads the device synchronously; in a browser
    /// use [`AdapterFiles::from_model_async`].
    pub fn from_model(model: &BertClassifier, lora: &LoraConfig, run: RunInfo) -> Self {
        let tensors = model_tensors(model)
            .into_iter()
            .map(|(name, tensor)| (name, tensor.read()))
            .collect();
        Self::from_host(tensors, lora, run)
    }

    /// [`AdapterFiles::from_model`] without blocking on the device.
    pub async fn from_model_async(model: &BertClassifier, lora: &LoraConfig, run: RunInfo) -> Result<Self> {
        let mut tensors = Vec::new();
        for (name, tensor) in model_tensors(model) {
            tensors.push((name, tensor.read_async().await?));
        }
        Ok(Self::from_host(tensors, lora, run))
    }

    fn from_host(tensors: Vec<(String, HostTensor)>, lora: &LoraConfig, run: RunInfo) -> Self {
        let mut weights = WeightMap::new(WEIGHTS_FILE);
        let mut origins = WeightMap::new(WEIGHTS_FILE);
        for (name, tensor) in tensors {
            match name.strip_suffix(PISSA_ORIGIN) {
                Some(factor) => origins.insert(factor, tensor),
                None => weights.insert(name, tensor),
            }
        }
        let mut config = PeftAdapterConfig::for_classifier(lora, run.base_model.clone());
        if !origins.names().is_empty() {
            // PEFT's conversion of PiSSA to LoRA of the original weight:
            // ΔW = s·(B·A − B₀·A₀) = s'·[B, −B₀]·[A; A₀] at rank 2r with the same scaling s.
            for name in origins.names() {
                let origin = origins.get_any(name).expect("listed name");
                let trained = weights.get_any(name).expect("every origin has a trained factor").clone();
                let combined = if name.ends_with(".lora_A.weight") {
                    stack_rows(&trained, origin)
                } else {
                    stack_columns(&trained, &negated(origin))
                };
                weights.insert(name, combined);
            }
            let scaling = lora.scaling();
            config.r = 2 * lora.r;
            config.lora_alpha = if lora.use_rslora {
                scaling * (config.r as f64).sqrt()
            } else {
                scaling * config.r as f64
            };
        }
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
        if let Some(variant) = &config.coto_variant
            && variant != "hira"
        {
            return unsupported("coto_variant", variant.clone(), "coto knows the variant \"hira\" only");
        }
        if config.use_dora && config.coto_variant.is_some() {
            return unsupported("use_dora", "true".into(), "DoRA does not combine with HiRA");
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

    /// Whether the adapter is HiRA (`coto_variant: "hira"`).
    pub fn is_hira(&self) -> bool {
        self.config.coto_variant.as_deref() == Some("hira")
    }

    /// The update of the adapter at `slot` given the base weight it applies to (both
    /// `[out, in]`, f64): `s·B·A` for LoRA, `W ⊙ s·B·A` for HiRA, `m·(W + s·B·A)/‖·‖ − W` per
    /// output row for DoRA.
    pub fn effective_delta(&self, slot: &str, weight: &crate::linalg::Matrix) -> Result<crate::linalg::Matrix> {
        let mut delta = self.delta(slot)?;
        if self.is_hira() {
            delta.data.iter_mut().zip(&weight.data).for_each(|(d, w)| *d *= w);
        } else if self.config.use_dora {
            let magnitude = self.weights.get(&magnitude_tensor_name(slot), &[weight.rows])?;
            for row in 0..weight.rows {
                let range = row * weight.cols..(row + 1) * weight.cols;
                let direction: Vec<f64> = weight.data[range.clone()].iter().zip(&delta.data[range.clone()]).map(|(w, d)| w + d).collect();
                let norm = direction.iter().map(|v| v * v).sum::<f64>().sqrt();
                let factor = magnitude.data[row] as f64 / norm;
                for ((d, v), w) in delta.data[range.clone()].iter_mut().zip(&direction).zip(&weight.data[range]) {
                    *d = v * factor - w;
                }
            }
        }
        Ok(delta)
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
                let mut adapter = LoraAdapter::from_tensors(
                    a.to_tensor(device),
                    b.to_tensor(device),
                    scaling,
                    self.config.lora_dropout,
                    index,
                );
                if self.config.use_dora {
                    let magnitude = self.weights.get(&magnitude_tensor_name(&slot), &[d_out])?;
                    adapter.magnitude = Some(burn::module::Param::from_tensor(magnitude.to_tensor(device)));
                    expected_tensors += 1;
                }
                adapter.hadamard = self.is_hira();
                linear.attach(adapter);
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

/// A model tensor to be saved: a matrix or a vector, and whether the file stores it
/// transposed (burn keeps the head as `[hidden, labels]`, PyTorch as `[labels, hidden]`).
enum SavedTensor {
    Matrix(burn::tensor::Tensor<2>, bool),
    Vector(burn::tensor::Tensor<1>),
}

impl SavedTensor {
    fn read(self) -> HostTensor {
        match self {
            Self::Matrix(t, transpose) => orient(HostTensor::from_tensor(t), transpose),
            Self::Vector(t) => HostTensor::from_tensor(t),
        }
    }

    async fn read_async(self) -> Result<HostTensor> {
        Ok(match self {
            Self::Matrix(t, transpose) => orient(HostTensor::from_tensor_async(t).await?, transpose),
            Self::Vector(t) => HostTensor::from_tensor_async(t).await?,
        })
    }
}

fn orient(tensor: HostTensor, transpose: bool) -> HostTensor {
    if transpose { tensor.transposed() } else { tensor }
}

/// The adapter factors and head of `model` under PEFT's names.
fn model_tensors(model: &BertClassifier) -> Vec<(String, SavedTensor)> {
    let mut tensors = Vec::new();
    for (slot, adapter) in adapter_slots(&model.bert).iter().zip(model_adapters(&model.bert)) {
        let (a_name, b_name) = (lora_tensor_name(&slot.name, "lora_A"), lora_tensor_name(&slot.name, "lora_B"));
        tensors.push((a_name.clone(), SavedTensor::Matrix(adapter.lora_a.val(), false)));
        tensors.push((b_name.clone(), SavedTensor::Matrix(adapter.lora_b.val(), false)));
        if let Some(magnitude) = &adapter.magnitude {
            tensors.push((magnitude_tensor_name(&slot.name), SavedTensor::Vector(magnitude.val())));
        }
        if let Some(origin) = &adapter.pissa_origin {
            tensors.push((format!("{a_name}{PISSA_ORIGIN}"), SavedTensor::Matrix(origin.lora_a.val(), false)));
            tensors.push((format!("{b_name}{PISSA_ORIGIN}"), SavedTensor::Matrix(origin.lora_b.val(), false)));
        }
    }
    tensors.push((head_tensor_name("weight"), SavedTensor::Matrix(model.classifier.weight.val(), true)));
    if let Some(bias) = &model.classifier.bias {
        tensors.push((head_tensor_name("bias"), SavedTensor::Vector(bias.val())));
    }
    tensors
}

/// Name suffix marking PiSSA's initial factors among the tensors read from a model.
const PISSA_ORIGIN: &str = "#pissa-origin";

fn stack_rows(top: &HostTensor, bottom: &HostTensor) -> HostTensor {
    let mut data = top.data.clone();
    data.extend_from_slice(&bottom.data);
    HostTensor::new(vec![top.shape[0] + bottom.shape[0], top.shape[1]], data)
}

fn stack_columns(left: &HostTensor, right: &HostTensor) -> HostTensor {
    stack_rows(&left.transposed(), &right.transposed()).transposed()
}

fn negated(tensor: &HostTensor) -> HostTensor {
    HostTensor::new(tensor.shape.clone(), tensor.data.iter().map(|v| -v).collect())
}

/// PEFT's name of DoRA's magnitude vector of the adapter at `slot`.
pub fn magnitude_tensor_name(slot: &str) -> String {
    format!("{}bert.{slot}.lora_magnitude_vector", super::peft::PEFT_PREFIX)
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
