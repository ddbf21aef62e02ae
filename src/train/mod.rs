//! Training: settings, AdamW, the learning-rate schedule, metrics, and the step loop.

#[cfg(not(target_arch = "wasm32"))]
mod checkpoint;
mod config;
mod evaluate;
mod lr;
mod metrics;
mod optim;
mod params;
mod snapshot;
mod trainer;

#[cfg(not(target_arch = "wasm32"))]
pub use checkpoint::{MOMENTS_FILE, PARAMS_FILE, STATE_FILE, latest_checkpoint, load_checkpoint, save_checkpoint};
pub use config::{LrSchedule, NonFinite, TrainConfig};
pub use lr::LrScheduler;
pub use metrics::{Metrics, argmax_rows, cross_entropy_rows};
pub use optim::{AdamW, AdamWConfig, Moments, ParamGrads};
pub use params::{load_trainable_params, trainable_params, trainable_params_async};
pub use evaluate::{Predictions, predict_ensemble, predict_texts, predict_texts_async, predict_texts_gated, score};
pub use trainer::{EvalReport, StepReport, Trainer, TrainerSnapshot, TrainerState};
