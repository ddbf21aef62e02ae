//! Hugging Face PEFT's on-disk format for a LoRA adapter of a `BertForSequenceClassification`
//! (PEFT 0.21, `task_type: SEQ_CLS`): tensor names and `adapter_config.json`.

use serde::{Deserialize, Serialize};

use crate::lora::LoraConfig;

/// Prefix PEFT puts before the base model's module paths.
pub const PEFT_PREFIX: &str = "base_model.model.";

/// PEFT's name of adapter `slot_name`'s `A` or `B` (`factor` is `lora_A` or `lora_B`), e.g.
/// `base_model.model.bert.encoder.layer.0.attention.self.query.lora_A.weight`.
pub fn lora_tensor_name(slot_name: &str, factor: &str) -> String {
    format!("{PEFT_PREFIX}bert.{slot_name}.{factor}.weight")
}

/// PEFT's name of the classification head's `weight` or `bias`.
pub fn head_tensor_name(field: &str) -> String {
    format!("{PEFT_PREFIX}classifier.{field}")
}

/// `adapter_config.json`, with the keys PEFT's `LoraConfig` reads. Keys coto does not use are
/// written with PEFT's defaults so that `PeftConfig.from_pretrained` accepts the file unchanged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeftAdapterConfig {
    /// Always `"LORA"`.
    pub peft_type: String,
    /// `"SEQ_CLS"` for a classifier.
    pub task_type: Option<String>,
    /// The base checkpoint (a directory or hub name), informative only.
    #[serde(default)]
    pub base_model_name_or_path: Option<String>,
    /// Rank.
    pub r: usize,
    /// Scaling numerator.
    pub lora_alpha: f64,
    /// Adapter-input dropout.
    #[serde(default)]
    pub lora_dropout: f64,
    /// Targeted module names.
    pub target_modules: TargetModules,
    /// Modules trained in full and saved beside the adapters.
    #[serde(default)]
    pub modules_to_save: Option<Vec<String>>,
    /// Bias training: coto supports `"none"`.
    #[serde(default = "default_bias")]
    pub bias: String,
    /// Whether the base stores weights as `[in, out]` (GPT-2's Conv1D); false for BERT.
    #[serde(default)]
    pub fan_in_fan_out: bool,
    /// Whether the adapter was saved for inference.
    #[serde(default)]
    pub inference_mode: bool,
    /// Initialisation used (`true` is PEFT's Kaiming-uniform default).
    #[serde(default = "default_init")]
    pub init_lora_weights: serde_json::Value,
    /// rsLoRA scaling (`lora_alpha / sqrt(r)`).
    #[serde(default)]
    pub use_rslora: bool,
    /// DoRA.
    #[serde(default)]
    pub use_dora: bool,
    /// Per-module ranks; coto supports an empty map only.
    #[serde(default)]
    pub rank_pattern: serde_json::Map<String, serde_json::Value>,
    /// Per-module alphas; coto supports an empty map only.
    #[serde(default)]
    pub alpha_pattern: serde_json::Map<String, serde_json::Value>,
    /// Restriction to some layers; coto supports none.
    #[serde(default)]
    pub layers_to_transform: Option<serde_json::Value>,
    /// Pattern naming the layer list, used with `layers_to_transform`.
    #[serde(default)]
    pub layers_pattern: Option<serde_json::Value>,
    /// The PEFT version that wrote the file (coto writes the version whose format it follows).
    #[serde(default)]
    pub peft_version: Option<String>,
    /// A variant PEFT does not implement (`"hira"`). PEFT ignores this key and would apply the
    /// factors as plain LoRA, so such adapters load correctly in coto only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coto_variant: Option<String>,
}

/// `target_modules` is a list of names or a regular expression string in PEFT.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TargetModules {
    /// Module-name suffixes.
    List(Vec<String>),
    /// A full-match regular expression over module paths.
    Regex(String),
}

fn default_bias() -> String {
    "none".into()
}

fn default_init() -> serde_json::Value {
    serde_json::Value::Bool(true)
}

impl PeftAdapterConfig {
    /// The config PEFT writes for a sequence classifier with these LoRA settings.
    pub fn for_classifier(lora: &LoraConfig, base_model: Option<String>) -> Self {
        Self {
            peft_type: "LORA".into(),
            task_type: Some("SEQ_CLS".into()),
            base_model_name_or_path: base_model,
            r: lora.r,
            lora_alpha: lora.lora_alpha,
            lora_dropout: lora.lora_dropout,
            target_modules: TargetModules::List(lora.target_modules.clone()),
            modules_to_save: Some(vec!["classifier".into(), "score".into()]),
            bias: "none".into(),
            fan_in_fan_out: false,
            inference_mode: true,
            // PiSSA adapters are saved converted to plain LoRA of the original weight.
            init_lora_weights: match lora.init {
                crate::lora::LoraInit::KaimingUniform | crate::lora::LoraInit::Pissa => serde_json::Value::Bool(true),
                crate::lora::LoraInit::Gaussian => serde_json::Value::String("gaussian".into()),
            },
            use_rslora: lora.use_rslora,
            use_dora: lora.use_dora,
            rank_pattern: Default::default(),
            alpha_pattern: Default::default(),
            layers_to_transform: None,
            layers_pattern: None,
            peft_version: Some("0.21.0".into()),
            coto_variant: lora.use_hira.then(|| "hira".to_string()),
        }
    }
}
