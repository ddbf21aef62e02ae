//! The learning-rate schedule: linear warm-up, then decay.

use super::config::LrSchedule;

/// Learning rate of each optimizer step of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct LrScheduler {
    peak: f64,
    warmup_steps: usize,
    total_steps: usize,
    shape: LrSchedule,
}

impl LrScheduler {
    /// A schedule peaking at `peak` after `ceil(warmup_ratio · total_steps)` steps.
    pub fn new(peak: f64, warmup_ratio: f64, total_steps: usize, shape: LrSchedule) -> Self {
        Self {
            peak,
            warmup_steps: (warmup_ratio * total_steps as f64).ceil() as usize,
            total_steps,
            shape,
        }
    }

    /// The rate for optimizer step `step` (0-based), as Hugging Face's
    /// `get_{linear,cosine}_schedule_with_warmup`: `peak · step / warmup` during warm-up, then
    /// the decay's factor of the progress through the remaining steps.
    pub fn lr(&self, step: usize) -> f64 {
        if step < self.warmup_steps {
            return self.peak * step as f64 / self.warmup_steps as f64;
        }
        let remaining = self.total_steps.saturating_sub(self.warmup_steps).max(1) as f64;
        let progress = ((step - self.warmup_steps) as f64 / remaining).min(1.0);
        let factor = match self.shape {
            LrSchedule::Linear => 1.0 - progress,
            LrSchedule::Cosine => 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()),
            LrSchedule::Constant => 1.0,
        };
        self.peak * factor.max(0.0)
    }
}
