//! Pieces several subcommands share: logging, device and model selection.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::ValueEnum;
use coto::assets::{self, MINILM, SMS_SPAM};
use coto::device::{ComputeDevice, DeviceChoice, select_device};
use coto::model::Checkpoint;

/// `--device` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DeviceArg {
    /// A hardware GPU through wgpu if present, else the CPU.
    Auto,
    /// wgpu with whatever adapter it finds, software ones included.
    Gpu,
    /// burn's CPU backend (flex).
    Cpu,
}

impl DeviceArg {
    /// Resolves the choice to a device, logging the adapter.
    pub fn select(self) -> Result<ComputeDevice> {
        let choice = match self {
            Self::Auto => DeviceChoice::Auto,
            Self::Gpu => DeviceChoice::Gpu,
            Self::Cpu => DeviceChoice::Cpu,
        };
        Ok(select_device(choice)?)
    }
}

/// Keeps freed memory in the process instead of returning it to the kernel. A training step
/// allocates and frees tensors of many megabytes; with glibc's defaults each comes back as fresh
/// zeroed pages, and the page faults cost about a tenth of a CPU training step.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // glibc's mallopt parameter numbers, from <malloc.h>.
        const M_TRIM_THRESHOLD: i32 = -1;
        const M_MMAP_THRESHOLD: i32 = -3;
        unsafe extern "C" {
            fn mallopt(param: i32, value: i32) -> i32;
        }
        // SAFETY: mallopt only changes allocator tuning; it is called before any thread starts.
        unsafe {
            mallopt(M_MMAP_THRESHOLD, 1 << 30);
            mallopt(M_TRIM_THRESHOLD, i32::MAX);
        }
    }
}

/// Logs to stderr at `info` (or `RUST_LOG`), without timestamps' noise for a terminal user.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,wgpu_core=warn,wgpu_hal=warn,naga=warn,cubecl=warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .compact()
        .try_init();
}

/// The model directory: `--model DIR` as given, else the cached MiniLM (fetched on first use).
pub fn model_dir(model: Option<&Path>) -> Result<PathBuf> {
    match model {
        Some(dir) => Ok(dir.to_path_buf()),
        None => assets::ensure(&MINILM).context("the default model (all-MiniLM-L6-v2) is not available"),
    }
}

/// The data file: `--data FILE` as given, else the cached SMS spam collection.
pub fn data_file(data: Option<&Path>) -> Result<PathBuf> {
    match data {
        Some(file) => Ok(file.to_path_buf()),
        None => {
            let dir = assets::ensure(&SMS_SPAM).context("the default dataset (SMS spam) is not available")?;
            Ok(dir.join(SMS_SPAM.files[0].name))
        }
    }
}

/// Reads a checkpoint directory, naming it on failure.
pub fn load_checkpoint(dir: &Path, max_length: usize) -> Result<Checkpoint> {
    Checkpoint::from_dir(dir, max_length).with_context(|| format!("cannot load the model in {}", dir.display()))
}
