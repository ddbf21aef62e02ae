//! Training settings: every option of `coto train`, also readable from a TOML file.

use serde::{Deserialize, Serialize};

use crate::coto::{CotoConfig, Grouping, Method};
use crate::error::{CotoError, Result};
use crate::lora::LoraConfig;
use crate::model::Pooling;

/// How the learning rate decays after warm-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LrSchedule {
    /// Linear decay to 0 at the last step.
    #[default]
    Linear,
    /// Cosine decay to 0 at the last step.
    Cosine,
    /// Constant after warm-up.
    Constant,
}

/// Settings of a training run. Field names match the CLI flags (`--initial-p` sets
/// `coto.initial_p`, `--rank` sets `lora.r`, ...).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// `coto` (progressive adapter dropout) or `lora` (every adapter always on). Default: coto.
    pub method: Method,
    /// The CoTo schedule.
    pub coto: CotoConfig,
    /// Which adapters switch together. Default: one group per transformer layer.
    pub grouping: Grouping,
    /// The adapters.
    pub lora: LoraConfig,
    /// How a sequence is pooled before the classifier. Default: the checkpoint's `[CLS]` pooler.
    pub pooling: Pooling,
    /// Peak learning rate of AdamW. Default: 5e-4.
    pub lr: f64,
    /// AdamW's decoupled weight decay. Default: 0.01 (PyTorch's default).
    pub weight_decay: f64,
    /// Fraction of the optimizer steps spent warming the learning rate up from 0. Default: 0.06.
    pub warmup_ratio: f64,
    /// Decay after warm-up. Default: linear.
    pub lr_schedule: LrSchedule,
    /// Examples per micro-batch. Default: 16.
    pub batch_size: usize,
    /// Micro-batches per optimizer step. Default: 1.
    pub grad_accum_steps: usize,
    /// Clip the global gradient norm to this value; 0 turns clipping off. Default: 1.0.
    pub max_grad_norm: f64,
    /// Passes over the training data. Default: 1.
    pub epochs: usize,
    /// Stop after this many optimizer steps, if fewer than `epochs` would take.
    pub max_steps: Option<usize>,
    /// Truncate texts to this many tokens. Default: 64.
    pub max_length: usize,
    /// Evaluate every this many optimizer steps (0: only at the end). Default: 100.
    pub eval_every: usize,
    /// Examples per evaluation batch. Default: 64.
    pub eval_batch_size: usize,
    /// Fraction of each class held out for validation when no validation file is given.
    /// Default: 0.1.
    pub validation_fraction: f64,
    /// Seed of every random choice of the run. Default: 42.
    pub seed: u64,
    /// What a step with a non-finite loss or gradient does. Default: stop.
    pub on_nonfinite: NonFinite,
}

/// What happens when a step's loss or gradient norm is NaN or infinite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum NonFinite {
    /// Stop the run with an error naming the step; checkpoints already written stay.
    #[default]
    Stop,
    /// Skip the update (the parameters and optimizer state stay as they were), count the step
    /// as skipped, and go on.
    Skip,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            method: Method::Coto,
            coto: CotoConfig::default(),
            grouping: Grouping::Layer,
            lora: LoraConfig::default(),
            pooling: Pooling::Cls,
            lr: 5e-4,
            weight_decay: 0.01,
            warmup_ratio: 0.06,
            lr_schedule: LrSchedule::Linear,
            batch_size: 16,
            grad_accum_steps: 1,
            max_grad_norm: 1.0,
            epochs: 1,
            max_steps: None,
            max_length: 64,
            eval_every: 100,
            eval_batch_size: 64,
            validation_fraction: 0.1,
            seed: 42,
            on_nonfinite: NonFinite::Stop,
        }
    }
}

impl TrainConfig {
    /// Reads a TOML file of these settings; unknown keys are errors.
    pub fn from_toml(text: &str, source: &str) -> Result<Self> {
        let config: Self = toml::from_str(text).map_err(|e| CotoError::Parse {
            format: "TOML",
            path: source.into(),
            message: e.to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks every range; the error names the setting.
    pub fn validate(&self) -> Result<()> {
        self.lora.validate()?;
        self.coto.validate()?;
        let positive = [
            ("batch_size", self.batch_size),
            ("grad_accum_steps", self.grad_accum_steps),
            ("epochs", self.epochs),
            ("eval_batch_size", self.eval_batch_size),
        ];
        for (name, value) in positive {
            if value == 0 {
                return Err(CotoError::setting(name, value, "must be at least 1"));
            }
        }
        if self.max_steps == Some(0) {
            return Err(CotoError::setting("max_steps", 0, "must be at least 1"));
        }
        if self.max_length < 2 {
            return Err(CotoError::setting("max_length", self.max_length, "must be at least 2 tokens"));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(CotoError::setting("lr", self.lr, "expected a finite learning rate above 0"));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return Err(CotoError::setting("weight_decay", self.weight_decay, "expected a finite value >= 0"));
        }
        if !(0.0..1.0).contains(&self.warmup_ratio) {
            return Err(CotoError::setting("warmup_ratio", self.warmup_ratio, "expected a fraction in [0, 1)"));
        }
        if !(self.max_grad_norm.is_finite() && self.max_grad_norm >= 0.0) {
            return Err(CotoError::setting("max_grad_norm", self.max_grad_norm, "expected a finite value >= 0 (0 turns clipping off)"));
        }
        if !(self.validation_fraction > 0.0 && self.validation_fraction < 1.0) {
            return Err(CotoError::setting(
                "validation_fraction",
                self.validation_fraction,
                "expected a fraction in (0, 1)",
            ));
        }
        Ok(())
    }

    /// Optimizer steps of a run over `train_examples` examples: the steps of `epochs` epochs
    /// (the last batch of an epoch may be short), capped at `max_steps`.
    pub fn total_steps(&self, train_examples: usize) -> usize {
        let batches_per_epoch = train_examples.div_ceil(self.batch_size);
        let steps_per_epoch = batches_per_epoch.div_ceil(self.grad_accum_steps).max(1);
        let steps = steps_per_epoch * self.epochs;
        self.max_steps.map_or(steps, |cap| steps.min(cap))
    }
}
