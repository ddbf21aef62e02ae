//! The checkpoint's `config.json`, with Hugging Face's field names.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{CotoError, Result};

/// A BERT configuration as stored in a Hugging Face checkpoint's `config.json`. Fields that coto
/// does not use are ignored; missing optional fields take Hugging Face's defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BertConfig {
    /// Must be `"bert"`.
    #[serde(default = "default_model_type")]
    pub model_type: String,
    /// Vocabulary size: rows of `embeddings.word_embeddings.weight`.
    pub vocab_size: usize,
    /// Width of the hidden states.
    pub hidden_size: usize,
    /// Number of transformer layers.
    pub num_hidden_layers: usize,
    /// Attention heads per layer; must divide `hidden_size`.
    pub num_attention_heads: usize,
    /// Width of the feed-forward layer.
    pub intermediate_size: usize,
    /// Activation of the feed-forward layer; coto supports `"gelu"` (exact, erf-based).
    #[serde(default = "default_hidden_act")]
    pub hidden_act: String,
    /// Dropout on hidden states in training.
    #[serde(default = "default_dropout")]
    pub hidden_dropout_prob: f64,
    /// Dropout on attention probabilities in training.
    #[serde(default = "default_dropout")]
    pub attention_probs_dropout_prob: f64,
    /// Number of position embeddings, the longest input in tokens.
    pub max_position_embeddings: usize,
    /// Number of token types (segments).
    #[serde(default = "default_type_vocab_size")]
    pub type_vocab_size: usize,
    /// LayerNorm epsilon.
    #[serde(default = "default_layer_norm_eps")]
    pub layer_norm_eps: f64,
    /// Standard deviation of the normal initialisation of new layers (the classifier).
    #[serde(default = "default_initializer_range")]
    pub initializer_range: f64,
    /// Token id used for padding.
    #[serde(default)]
    pub pad_token_id: usize,
}

fn default_model_type() -> String {
    "bert".into()
}
fn default_hidden_act() -> String {
    "gelu".into()
}
fn default_dropout() -> f64 {
    0.1
}
fn default_type_vocab_size() -> usize {
    2
}
fn default_layer_norm_eps() -> f64 {
    1e-12
}
fn default_initializer_range() -> f64 {
    0.02
}

impl BertConfig {
    /// Reads and checks `config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| CotoError::io("failed to read", path, e))?;
        Self::from_json(&text, path)
    }

    /// Parses and checks the JSON text of a `config.json`; `path` is used in error messages.
    pub fn from_json(text: &str, path: &Path) -> Result<Self> {
        let config: Self = serde_json::from_str(text).map_err(|e| CotoError::Parse {
            format: "JSON",
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks that coto can run this configuration.
    pub fn validate(&self) -> Result<()> {
        if self.model_type != "bert" {
            return Err(CotoError::setting(
                "model_type",
                &self.model_type,
                "coto supports BERT encoders (model_type \"bert\"), such as MiniLM",
            ));
        }
        if self.hidden_act != "gelu" {
            return Err(CotoError::setting(
                "hidden_act",
                &self.hidden_act,
                "coto supports \"gelu\" (exact erf GELU)",
            ));
        }
        if self.num_attention_heads == 0 || self.hidden_size % self.num_attention_heads != 0 {
            return Err(CotoError::setting(
                "num_attention_heads",
                self.num_attention_heads,
                format!("must divide hidden_size = {}", self.hidden_size),
            ));
        }
        for (name, value) in [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("intermediate_size", self.intermediate_size),
            ("max_position_embeddings", self.max_position_embeddings),
            ("type_vocab_size", self.type_vocab_size),
        ] {
            if value == 0 {
                return Err(CotoError::setting(name, value, "must be at least 1"));
            }
        }
        for (name, p) in [
            ("hidden_dropout_prob", self.hidden_dropout_prob),
            ("attention_probs_dropout_prob", self.attention_probs_dropout_prob),
        ] {
            if !(0.0..1.0).contains(&p) {
                return Err(CotoError::setting(name, p, "expected a probability in [0, 1)"));
            }
        }
        Ok(())
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }
}
