//! `coto predict`: classify texts with a saved adapter.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use burn::module::Module;
use clap::Args;
use coto::train::predict_texts;

use super::common::{DeviceArg, LoadedAdapter};

/// Arguments of `coto predict`.
#[derive(Debug, Args)]
pub struct PredictArgs {
    /// Adapter directory written by coto or by PEFT (adapter_model.safetensors,
    /// adapter_config.json).
    #[arg(long, value_name = "DIR")]
    adapter: PathBuf,
    /// Base model directory. Default: the one recorded with the adapter, else the cached
    /// all-MiniLM-L6-v2.
    #[arg(long, value_name = "DIR")]
    model: Option<PathBuf>,
    /// Truncate each text to this many tokens. Default: the length the adapter was trained
    /// with (from coto_run.json), else 128.
    #[arg(long, value_name = "N")]
    max_length: Option<usize>,
    /// Compute device.
    #[arg(long, value_enum, default_value_t = DeviceArg::Auto)]
    device: DeviceArg,
    /// Read texts from this file, one per line, in addition to TEXT arguments.
    #[arg(long, value_name = "FILE")]
    file: Option<PathBuf>,
    /// Texts to classify.
    #[arg(value_name = "TEXT")]
    texts: Vec<String>,
}

pub fn run(args: PredictArgs) -> Result<()> {
    let mut texts = args.texts.clone();
    if let Some(file) = &args.file {
        let content = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
        texts.extend(content.lines().filter(|l| !l.trim().is_empty()).map(str::to_string));
    }
    if texts.is_empty() {
        bail!("no texts to classify; pass TEXT arguments or --file FILE");
    }
    let loaded = LoadedAdapter::read(&args.adapter, args.model.as_deref(), args.max_length)?;
    let device = args.device.select()?;
    let (model, labels) = loaded.classifier(&loaded.files, &device)?;
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let predictions = predict_texts(&model.valid(), loaded.tokenizer(), &refs, 32)?;
    let classes = labels.len();
    let mut out = std::io::stdout().lock();
    for (index, text) in texts.iter().enumerate() {
        let logits = &predictions.logits[index * classes..(index + 1) * classes];
        let line = serde_json::json!({
            "text": text,
            "label": labels.name(predictions.predicted[index]),
            "logits": logits,
        });
        writeln!(out, "{line}")?;
    }
    Ok(())
}
