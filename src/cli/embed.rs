//! `coto embed`: sentence embeddings as JSON lines.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use coto::coto::Gates;
use coto::model::{BertModel, HostTensor, l2_normalize, mean_pool};

use super::common::{DeviceArg, load_checkpoint, model_dir};

/// Arguments of `coto embed`.
#[derive(Debug, Args)]
pub struct EmbedArgs {
    /// Hugging Face BERT checkpoint directory (config.json, model.safetensors, tokenizer.json).
    /// Default: the cached all-MiniLM-L6-v2, fetched on first use.
    #[arg(long, value_name = "DIR")]
    model: Option<PathBuf>,
    /// Truncate each text to this many tokens.
    #[arg(long, value_name = "N", default_value_t = 128)]
    max_length: usize,
    /// Compute device.
    #[arg(long, value_enum, default_value_t = DeviceArg::Auto)]
    device: DeviceArg,
    /// Read texts from this file, one per line, in addition to TEXT arguments.
    #[arg(long, value_name = "FILE")]
    file: Option<PathBuf>,
    /// Texts per forward pass.
    #[arg(long, value_name = "N", default_value_t = 32)]
    batch_size: usize,
    /// Texts to embed.
    #[arg(value_name = "TEXT")]
    texts: Vec<String>,
}

pub fn run(args: EmbedArgs) -> Result<()> {
    let mut texts = args.texts.clone();
    if let Some(file) = &args.file {
        let content = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
        texts.extend(content.lines().filter(|l| !l.trim().is_empty()).map(str::to_string));
    }
    if texts.is_empty() {
        bail!("no texts to embed; pass TEXT arguments or --file FILE");
    }
    let checkpoint = load_checkpoint(&model_dir(args.model.as_deref())?, args.max_length)?;
    let device = args.device.select()?;
    let model = BertModel::load(&checkpoint.config, &checkpoint.weights, &device.device)?;

    let mut out = std::io::stdout().lock();
    for chunk in texts.chunks(args.batch_size.max(1)) {
        let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
        let batch = checkpoint.tokenizer.encode_batch(&refs)?;
        let (ids, mask) = batch.to_tensors(&device.device);
        let hidden = model.forward(ids, mask.clone(), &Gates::inference());
        let embeddings = HostTensor::from_tensor(l2_normalize(mean_pool(hidden, mask)));
        let width = embeddings.shape[1];
        for (text, row) in chunk.iter().zip(embeddings.data.chunks_exact(width)) {
            let line = serde_json::json!({ "text": text, "embedding": row });
            writeln!(out, "{line}")?;
        }
    }
    Ok(())
}
