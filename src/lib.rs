//! coto: LoRA fine-tuning of pretrained transformers under the CoTo progressive
//! adapter-dropout schedule, through burn on WebGPU adapters (wgpu) or the CPU (flex).
//!
//! The pieces, in dependency order: [`lora`] (the adapter layer), [`coto`] (the schedule and
//! gates), [`model`] (BERT and its checkpoint files), [`data`] (labelled text), [`train`] (the
//! step loop), [`adapter`] (PEFT-format files), [`device`] (choosing wgpu or the CPU).

pub mod adapter;
pub mod analysis;
#[cfg(not(target_arch = "wasm32"))]
pub mod assets;
pub mod coto;
pub mod data;
pub mod device;
pub mod error;
pub mod kernels;
pub mod linalg;
pub mod lora;
pub mod model;
pub mod rng;
pub mod train;
#[cfg(target_arch = "wasm32")]
pub mod wasm;

pub use error::{CotoError, Result};
