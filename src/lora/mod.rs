//! LoRA: a frozen linear layer plus a trainable low-rank update `ΔW = B·A`, in PEFT's layouts.

mod config;
mod dora;
mod hira;
mod layer;
mod pissa;

pub use config::{LoraConfig, LoraInit, LoraVariant};
pub use dora::{column_norms, initial_magnitude, merged_weight};
pub use layer::{LoraAdapter, LoraLinear, PissaOrigin};
pub use pissa::{PissaInit, pissa_init};
