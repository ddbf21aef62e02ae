//! LoRA hyperparameters, with PEFT's names and defaults.

use serde::{Deserialize, Serialize};

use crate::error::{CotoError, Result};

/// How the down-projection `A` is initialised. `B` always starts at zero, so a new adapter leaves
/// the base model's output unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LoraInit {
    /// PEFT's default: `kaiming_uniform_(A, a = sqrt(5))`, that is `A ~ U(-1/sqrt(in), 1/sqrt(in))`.
    #[default]
    KaimingUniform,
    /// PEFT's `init_lora_weights = "gaussian"`: `A ~ N(0, (1/r)^2)`.
    Gaussian,
}

/// Settings of the LoRA adapters injected into a model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoraConfig {
    /// Rank `r` of the update `ΔW = B·A`. Default: 8.
    pub r: usize,
    /// Numerator of the scaling `lora_alpha / r`. Default: 16.
    pub lora_alpha: f64,
    /// Dropout probability on the adapter input, applied in training only. Default: 0.0 (PEFT's).
    pub lora_dropout: f64,
    /// Names of the linear modules that receive adapters. Default: `["query", "value"]`.
    pub target_modules: Vec<String>,
    /// Initialisation of `A`. Default: Kaiming-uniform.
    pub init: LoraInit,
}

impl Default for LoraConfig {
    fn default() -> Self {
        Self {
            r: 8,
            lora_alpha: 16.0,
            lora_dropout: 0.0,
            target_modules: vec!["query".into(), "value".into()],
            init: LoraInit::KaimingUniform,
        }
    }
}

impl LoraConfig {
    /// The factor `lora_alpha / r` applied to `B·A`.
    pub fn scaling(&self) -> f64 {
        self.lora_alpha / self.r as f64
    }

    /// Checks every field's range; the error names the field and the valid range.
    pub fn validate(&self) -> Result<()> {
        if self.r == 0 {
            return Err(CotoError::setting("r", self.r, "the rank must be at least 1"));
        }
        if !self.lora_alpha.is_finite() || self.lora_alpha <= 0.0 {
            return Err(CotoError::setting(
                "lora_alpha",
                self.lora_alpha,
                "expected a finite number greater than 0",
            ));
        }
        if !(0.0..1.0).contains(&self.lora_dropout) {
            return Err(CotoError::setting(
                "lora_dropout",
                self.lora_dropout,
                "expected a probability in [0, 1)",
            ));
        }
        if self.target_modules.is_empty() {
            return Err(CotoError::setting(
                "target_modules",
                "[]",
                "name at least one module, e.g. query,value",
            ));
        }
        Ok(())
    }
}
