//! LoRA: a frozen linear layer plus a trainable low-rank update `ΔW = B·A`, in PEFT's layouts.

mod config;
mod layer;

pub use config::{LoraConfig, LoraInit};
pub use layer::{LoraAdapter, LoraLinear};
