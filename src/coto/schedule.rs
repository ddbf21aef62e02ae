//! The CoTo activation-probability schedule `p(t)`.

use serde::{Deserialize, Serialize};

use crate::error::{CotoError, Result};

/// How `p` rises from `initial_p` to `final_p` over stage 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ScheduleShape {
    /// `shape(x) = x`.
    #[default]
    Linear,
    /// `shape(x) = sin(π/2 · x)`: rises fast, then flattens.
    Sine,
    /// `shape(x) = (eˣ − 1) / (e − 1)`: rises slowly, then fast.
    Exponential,
}

impl ScheduleShape {
    /// Evaluates the shape at `x`, with `x` and the result clamped to `[0, 1]`.
    pub fn apply(self, x: f64) -> f64 {
        let x = x.clamp(0.0, 1.0);
        let y = match self {
            Self::Linear => x,
            Self::Sine => (std::f64::consts::FRAC_PI_2 * x).sin(),
            Self::Exponential => x.exp_m1() / 1.0f64.exp_m1(),
        };
        y.clamp(0.0, 1.0)
    }
}

/// CoTo's settings: the probability that an adapter group is on rises from `initial_p` to
/// `final_p` during the first `stage1_ratio` of the optimizer steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CotoConfig {
    /// Activation probability before the first optimizer step. Default: 0.1.
    pub initial_p: f64,
    /// Activation probability at the end of stage 1 and after it. Default: 1.0.
    pub final_p: f64,
    /// Fraction of the optimizer steps that stage 1 lasts, in `(0, 1]`. Default: 0.75.
    pub stage1_ratio: f64,
    /// Shape of the rise. Default: linear.
    pub schedule: ScheduleShape,
}

impl Default for CotoConfig {
    fn default() -> Self {
        Self {
            initial_p: 0.1,
            final_p: 1.0,
            stage1_ratio: 0.75,
            schedule: ScheduleShape::Linear,
        }
    }
}

impl CotoConfig {
    /// Checks the ranges: both probabilities in `[0, 1]`, `initial_p <= final_p`, and
    /// `stage1_ratio` in `(0, 1]`.
    pub fn validate(&self) -> Result<()> {
        for (name, p) in [("initial_p", self.initial_p), ("final_p", self.final_p)] {
            if !(0.0..=1.0).contains(&p) {
                return Err(CotoError::setting(name, p, "expected a probability in [0, 1]"));
            }
        }
        if self.initial_p > self.final_p {
            return Err(CotoError::setting(
                "initial_p",
                self.initial_p,
                format!("must not exceed final_p = {}", self.final_p),
            ));
        }
        if !(self.stage1_ratio > 0.0 && self.stage1_ratio <= 1.0) {
            return Err(CotoError::setting(
                "stage1_ratio",
                self.stage1_ratio,
                "expected a fraction in (0, 1]",
            ));
        }
        Ok(())
    }
}

/// The schedule for a run of `total_steps` optimizer steps.
#[derive(Debug, Clone, PartialEq)]
pub struct CotoSchedule {
    config: CotoConfig,
    total_steps: usize,
    stage1_steps: usize,
}

impl CotoSchedule {
    /// Validates `config` and fixes the stage-1 length `S = ceil(T · stage1_ratio)`.
    pub fn new(config: CotoConfig, total_steps: usize) -> Result<Self> {
        config.validate()?;
        if total_steps == 0 {
            return Err(CotoError::setting(
                "total_steps",
                total_steps,
                "the run must have at least one optimizer step",
            ));
        }
        let stage1_steps = ceil_product(total_steps, config.stage1_ratio).max(1);
        Ok(Self {
            config,
            total_steps,
            stage1_steps,
        })
    }

    /// The settings.
    pub fn config(&self) -> &CotoConfig {
        &self.config
    }

    /// `T`, the number of optimizer steps in the run.
    pub fn total_steps(&self) -> usize {
        self.total_steps
    }

    /// `S = ceil(T · stage1_ratio)`, the length of stage 1 in optimizer steps.
    pub fn stage1_steps(&self) -> usize {
        self.stage1_steps
    }

    /// The activation probability after `step` optimizer steps (`step = 0` before the first):
    /// `p = min(final_p, initial_p + (final_p − initial_p) · shape(step / S))`.
    pub fn p_at(&self, step: usize) -> f64 {
        let CotoConfig {
            initial_p,
            final_p,
            schedule,
            ..
        } = self.config;
        if step == 0 {
            return initial_p;
        }
        let progress = step as f64 / self.stage1_steps as f64;
        (initial_p + (final_p - initial_p) * schedule.apply(progress)).min(final_p)
    }
}

/// `ceil(n · ratio)`, treating a product within floating-point rounding of an integer as that
/// integer: `0.7 · 10` is `7.000000000000001` in binary floating point but means 7 steps.
fn ceil_product(n: usize, ratio: f64) -> usize {
    let product = n as f64 * ratio;
    let nearest = product.round();
    if (product - nearest).abs() <= 1e-9 * nearest.max(1.0) {
        nearest as usize
    } else {
        product.ceil() as usize
    }
}
