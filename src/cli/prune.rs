//! `coto prune`: drop whole adapters by pattern, or zero the smallest entries of each update.

use std::path::PathBuf;

use anyhow::{Result, bail};
use burn::module::Module;
use clap::Args;
use coto::adapter::{PrunePattern, prune_adapter, save_adapter, sparsify_adapter};
use coto::train::{predict_texts, score};

use super::common::{DataArgs, DeviceArg, LoadedAdapter, read_examples};
use super::eval::print_metrics;

/// Arguments of `coto prune`. Give --out to write the pruned adapter, --data to evaluate it,
/// or both.
#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Adapter directory.
    #[arg(long, value_name = "DIR")]
    adapter: PathBuf,
    /// Adapters to drop: every-other (odd layers), lower, middle or upper third of the layers,
    /// a module name (query, key, value, ...), or layers=0,2,4.
    #[arg(long, value_name = "PATTERN")]
    pattern: Option<String>,
    /// Zero this fraction of the smallest-magnitude entries of each update ΔW.
    #[arg(long, value_name = "FRACTION")]
    sparsity: Option<f64>,
    /// Write the pruned adapter here.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Evaluate the pruned adapter on this labelled data.
    #[arg(long, value_name = "FILE")]
    data: Option<PathBuf>,
    #[command(flatten)]
    data_args: DataArgs,
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
    /// Print the metrics as one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn run(args: PruneArgs) -> Result<()> {
    if args.pattern.is_none() && args.sparsity.is_none() {
        bail!("nothing to prune: give --pattern, --sparsity or both");
    }
    if args.out.is_none() && args.data.is_none() {
        bail!("give --out DIR to write the pruned adapter, --data FILE to evaluate it, or both");
    }
    let loaded = LoadedAdapter::read(&args.adapter, args.model.as_deref(), args.max_length)?;
    let mut files = loaded.files.clone();
    if let Some(pattern) = &args.pattern {
        let num_layers = loaded.checkpoint.config.num_hidden_layers;
        files = prune_adapter(&files, &pattern.parse::<PrunePattern>()?, num_layers)?;
    }
    if let Some(sparsity) = args.sparsity {
        files = sparsify_adapter(&files, sparsity)?;
    }
    if let Some(out) = &args.out {
        save_adapter(&files, out)?;
        println!("pruned adapter written to {}", out.display());
    }
    if let Some(data) = &args.data {
        let labels = files.labels()?;
        let examples = read_examples(data, &args.data_args.options(), &labels)?;
        let device = args.device.select()?;
        let (model, _) = loaded.classifier(&files, &device)?;
        let texts: Vec<&str> = examples.iter().map(|e| e.text.as_str()).collect();
        let predictions = predict_texts(&model.valid(), loaded.tokenizer(), &texts, 64)?;
        print_metrics(&score(&predictions, &examples, labels.len()), args.json);
    }
    Ok(())
}
