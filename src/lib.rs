//! coto: LoRA fine-tuning of pretrained transformers under the CoTo progressive
//! adapter-dropout schedule, through burn on WebGPU adapters (wgpu) or the CPU (flex).

#[cfg(not(target_arch = "wasm32"))]
pub mod assets;
pub mod coto;
pub mod error;
pub mod lora;
pub mod model;
pub mod rng;

pub use error::{CotoError, Result};
