//! Training: settings, AdamW, the learning-rate schedule, metrics, and the step loop.

mod config;
mod lr;
mod metrics;
mod optim;
mod trainer;

pub use config::{LrSchedule, TrainConfig};
pub use lr::LrScheduler;
pub use metrics::{Metrics, argmax_rows, cross_entropy_rows};
pub use optim::{AdamW, AdamWConfig, Moments, ParamGrads};
pub use trainer::{EvalReport, Predictions, StepReport, Trainer, predict_texts};
