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
    /// PiSSA (PEFT's `init_lora_weights = "pissa"`): `A` and `B` from the top-r singular
    /// vectors of the base weight `W`, and `W` replaced by the residual `W − scaling·B·A`.
    Pissa,
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
    /// Initialisation of `A` (and `B`, for PiSSA). Default: Kaiming-uniform.
    pub init: LoraInit,
    /// rsLoRA: scale by `lora_alpha / sqrt(r)` instead of `lora_alpha / r` (PEFT's
    /// `use_rslora`). Default: false.
    pub use_rslora: bool,
    /// DoRA: a trainable magnitude per output times the normalised direction `W + scaling·B·A`
    /// (PEFT's `use_dora`). Default: false.
    pub use_dora: bool,
    /// HiRA: the high-rank update `ΔW = W ⊙ (scaling·B·A)` (not in PEFT; saved with
    /// `coto_variant: "hira"`). Default: false.
    pub use_hira: bool,
}

/// The adapter variants, as the `--variant` option names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoraVariant {
    /// Plain LoRA.
    Lora,
    /// rsLoRA scaling.
    Rslora,
    /// DoRA.
    Dora,
    /// PiSSA initialisation.
    Pissa,
    /// HiRA.
    Hira,
}

impl LoraVariant {
    /// Sets `config`'s variant fields for this variant, leaving the rest.
    pub fn apply(self, config: &mut LoraConfig) {
        config.use_rslora = self == Self::Rslora;
        config.use_dora = self == Self::Dora;
        config.use_hira = self == Self::Hira;
        if self == Self::Pissa {
            config.init = LoraInit::Pissa;
        } else if config.init == LoraInit::Pissa {
            config.init = LoraInit::KaimingUniform;
        }
    }

    /// The variant a config describes.
    pub fn of(config: &LoraConfig) -> Self {
        match config {
            c if c.use_dora => Self::Dora,
            c if c.use_hira => Self::Hira,
            c if c.init == LoraInit::Pissa => Self::Pissa,
            c if c.use_rslora => Self::Rslora,
            _ => Self::Lora,
        }
    }
}

impl Default for LoraConfig {
    fn default() -> Self {
        Self {
            r: 8,
            lora_alpha: 16.0,
            lora_dropout: 0.0,
            target_modules: vec!["query".into(), "value".into()],
            init: LoraInit::KaimingUniform,
            use_rslora: false,
            use_dora: false,
            use_hira: false,
        }
    }
}

impl LoraConfig {
    /// The factor applied to `B·A`: `lora_alpha / r`, or `lora_alpha / sqrt(r)` with rsLoRA.
    pub fn scaling(&self) -> f64 {
        if self.use_rslora {
            self.lora_alpha / (self.r as f64).sqrt()
        } else {
            self.lora_alpha / self.r as f64
        }
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
        if self.use_dora && self.use_hira {
            return Err(CotoError::setting("use_hira", true, "DoRA and HiRA exclude each other; pick one variant"));
        }
        if self.init == LoraInit::Pissa && (self.use_dora || self.use_hira) {
            return Err(CotoError::setting(
                "init",
                "pissa",
                "PiSSA initialisation combines with plain LoRA or rsLoRA only",
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
