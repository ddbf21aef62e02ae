//! `coto eval`: metrics of a saved adapter on labelled data, optionally merged with others,
//! pruned, or as an ensemble, without writing any adapter.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use burn::module::Module;
use clap::{Args, ValueEnum};
use coto::adapter::{HeadChoice, MergeMethod, PrunePattern, merge_adapters, prune_adapter, sparsify_adapter};
use coto::train::{Metrics, predict_ensemble, predict_texts, score};

use super::common::{DataArgs, DeviceArg, LoadedAdapter, parse_weights, read_examples};

/// Arguments of `coto eval`.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// Adapter directory; repeat to merge several (or to ensemble them with --ensemble).
    #[arg(long, value_name = "DIR", required = true)]
    adapter: Vec<PathBuf>,
    /// Labelled data to evaluate on, in any layout `coto train` reads.
    #[arg(long, value_name = "FILE")]
    data: PathBuf,
    #[command(flatten)]
    data_args: DataArgs,
    /// Base model directory. Default: the one recorded with the first adapter, else the cached
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
    /// Texts per forward pass.
    #[arg(long, value_name = "N", default_value_t = 64)]
    batch_size: usize,
    /// Write one JSON line per example (text, gold label, predicted label, logits) to FILE.
    #[arg(long, value_name = "FILE")]
    predictions: Option<PathBuf>,
    /// Drop adapters before evaluating: every-other, lower, middle, upper, a module name, or
    /// layers=0,2,4.
    #[arg(long, value_name = "PATTERN")]
    prune: Option<String>,
    /// Zero this fraction of the smallest-magnitude entries of each update before evaluating.
    #[arg(long, value_name = "FRACTION")]
    sparsity: Option<f64>,
    /// Merge weights for several adapters, e.g. 1:1 or 0.7:0.3. Default: all 1.
    #[arg(long, value_name = "W:W[:W]")]
    weights: Option<String>,
    /// How several adapters are merged.
    #[arg(long, value_enum, default_value_t = MergeArg::Linear)]
    merge_method: MergeArg,
    /// With several adapters: average their models' logits instead of merging them.
    #[arg(long)]
    ensemble: bool,
    /// Use this adapter's classification head and labels (to evaluate one task of a
    /// multi-task merge with its own head).
    #[arg(long, value_name = "DIR")]
    head_from: Option<PathBuf>,
    /// Print the metrics as one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

/// `--merge-method` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MergeArg {
    /// Exact weighted sum of the updates, ranks concatenated.
    Linear,
    /// The same as linear.
    Cat,
    /// The weighted sum truncated to rank r by SVD.
    Svd,
}

impl MergeArg {
    /// The library's method.
    pub fn method(self) -> MergeMethod {
        match self {
            Self::Linear => MergeMethod::Linear,
            Self::Cat => MergeMethod::Cat,
            Self::Svd => MergeMethod::Svd,
        }
    }
}

pub fn run(args: EvalArgs) -> Result<()> {
    let loaded = args
        .adapter
        .iter()
        .map(|dir| LoadedAdapter::read(dir, args.model.as_deref(), args.max_length))
        .collect::<Result<Vec<_>>>()?;
    let device = args.device.select()?;
    let base = &loaded[0];
    let num_layers = base.checkpoint.config.num_hidden_layers;

    let mut files = if loaded.len() > 1 && !args.ensemble {
        let weights = parse_weights(args.weights.as_deref(), loaded.len())?;
        let all: Vec<_> = loaded.iter().map(|l| &l.files).collect();
        merge_adapters(&all, &weights, args.merge_method.method(), None, HeadChoice::First)?
    } else {
        base.files.clone()
    };
    if let Some(pattern) = &args.prune {
        files = prune_adapter(&files, &pattern.parse::<PrunePattern>()?, num_layers)?;
    }
    if let Some(sparsity) = args.sparsity {
        files = sparsify_adapter(&files, sparsity)?;
    }
    if let Some(head_dir) = &args.head_from {
        let head = LoadedAdapter::read(head_dir, args.model.as_deref(), args.max_length)?.files;
        for name in [coto::adapter::head_tensor_name("weight"), coto::adapter::head_tensor_name("bias")] {
            let tensor = head.weights.get_any(&name).with_context(|| format!("{} has no `{name}`", head_dir.display()))?;
            files.weights.insert(name, tensor.clone());
        }
        files.run = head.run.clone();
    }

    let labels = files.labels()?;
    let examples = read_examples(&args.data, &args.data_args.options(), &labels)?;
    if examples.is_empty() {
        bail!("{} has no examples", args.data.display());
    }
    let texts: Vec<&str> = examples.iter().map(|e| e.text.as_str()).collect();
    let predictions = if args.ensemble && loaded.len() > 1 {
        let models = loaded
            .iter()
            .map(|l| l.classifier(&l.files, &device).map(|(m, _)| m.valid()))
            .collect::<Result<Vec<_>>>()?;
        let refs: Vec<_> = models.iter().collect();
        predict_ensemble(&refs, base.tokenizer(), &texts, args.batch_size)?
    } else {
        let (model, _) = base.classifier(&files, &device)?;
        predict_texts(&model.valid(), base.tokenizer(), &texts, args.batch_size)?
    };
    let metrics = score(&predictions, &examples, labels.len());

    if let Some(path) = &args.predictions {
        let mut out = std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?,
        );
        let classes = labels.len();
        for (index, example) in examples.iter().enumerate() {
            let line = serde_json::json!({
                "text": example.text,
                "label": labels.name(example.label),
                "predicted": labels.name(predictions.predicted[index]),
                "logits": &predictions.logits[index * classes..(index + 1) * classes],
            });
            writeln!(out, "{line}")?;
        }
        out.flush()?;
    }
    print_metrics(&metrics, args.json);
    Ok(())
}

/// Prints metrics as a table, or as one JSON object.
pub fn print_metrics(metrics: &Metrics, json: bool) {
    if json {
        println!("{}", serde_json::to_string(metrics).expect("metrics serialise"));
        return;
    }
    println!("{:<10} {}", "examples", metrics.examples);
    println!("{:<10} {:.4}", "loss", metrics.loss);
    println!("{:<10} {:.2}%", "accuracy", 100.0 * metrics.accuracy);
    println!("{:<10} {:.4}", "macro-F1", metrics.macro_f1);
}
