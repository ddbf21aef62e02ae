//! Adapters on disk in Hugging Face PEFT's format (`adapter_model.safetensors`,
//! `adapter_config.json`) plus coto's `coto_run.json`.

#[cfg(not(target_arch = "wasm32"))]
mod disk;
mod export;
mod files;
mod merge;
mod peft;
mod prune;

#[cfg(not(target_arch = "wasm32"))]
pub use disk::{StagedFile, load_adapter, save_adapter, stage_file, write_atomic};
pub use export::{MergedCheckpoint, export_merged};
pub use files::{AdapterFiles, CONFIG_FILE, RUN_FILE, RunInfo, WEIGHTS_FILE, magnitude_tensor_name, slots_of};
pub use merge::{HeadChoice, MergeMethod, merge_adapters};
pub use prune::{PrunePattern, prune_adapter, sparsify_adapter, zero_smallest};
pub use peft::{PEFT_PREFIX, PeftAdapterConfig, TargetModules, head_tensor_name, lora_tensor_name};
