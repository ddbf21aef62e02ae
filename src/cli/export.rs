//! `coto export --merged`: the base model with an adapter merged in, as a Hugging Face
//! checkpoint directory.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use coto::adapter::{export_merged, write_atomic};

use super::common::LoadedAdapter;

/// Arguments of `coto export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Adapter directory.
    #[arg(long, value_name = "DIR")]
    adapter: PathBuf,
    /// Base model directory. Default: the one recorded with the adapter, else the cached
    /// all-MiniLM-L6-v2.
    #[arg(long, value_name = "DIR")]
    model: Option<PathBuf>,
    /// Merge the adapter into the base weights (the only export coto writes).
    #[arg(long)]
    merged: bool,
    /// Directory for config.json, model.safetensors and tokenizer.json.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
}

pub fn run(args: ExportArgs) -> Result<()> {
    if !args.merged {
        bail!("coto export writes merged checkpoints only; add --merged");
    }
    let loaded = LoadedAdapter::read(&args.adapter, args.model.as_deref(), Some(2))?;
    let merged = export_merged(&loaded.files, &loaded.checkpoint.config, &loaded.checkpoint.weights)?;
    std::fs::create_dir_all(&args.out).with_context(|| format!("cannot create {}", args.out.display()))?;
    write_atomic(&args.out.join("config.json"), merged.config_json.as_bytes())?;
    write_atomic(&args.out.join("model.safetensors"), &merged.weights.to_safetensors(None)?)?;
    let base = args.model.clone().or_else(|| {
        loaded.files.run.as_ref().and_then(|r| r.base_model.as_ref()).map(PathBuf::from)
    });
    let tokenizer = match base {
        Some(dir) if dir.join("tokenizer.json").is_file() => dir.join("tokenizer.json"),
        _ => super::common::model_dir(None)?.join("tokenizer.json"),
    };
    let bytes = std::fs::read(&tokenizer).with_context(|| format!("cannot read {}", tokenizer.display()))?;
    write_atomic(&args.out.join("tokenizer.json"), &bytes)?;
    println!("merged checkpoint written to {}", args.out.display());
    Ok(())
}
