//! Adapters on disk in Hugging Face PEFT's format (`adapter_model.safetensors`,
//! `adapter_config.json`) plus coto's `coto_run.json`.

#[cfg(not(target_arch = "wasm32"))]
mod disk;
mod files;
mod peft;

#[cfg(not(target_arch = "wasm32"))]
pub use disk::{load_adapter, save_adapter, write_atomic};
pub use files::{AdapterFiles, CONFIG_FILE, RUN_FILE, RunInfo, WEIGHTS_FILE, slots_of};
pub use peft::{PEFT_PREFIX, PeftAdapterConfig, TargetModules, head_tensor_name, lora_tensor_name};
