//! `coto analyze`: Shapley values of an adapter's layers or modules, linear mode connectivity
//! to a second adapter, and dropout stability, as JSON, CSV and SVG files.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use coto::adapter::slots_of;
use coto::analysis::{
    AnalysisMetric, Evaluator, dropout_stability, linear_mode_connectivity, players_by_group, players_by_module,
    shapley_values,
};

use super::common::{DataArgs, DeviceArg, LoadedAdapter, read_examples};

/// Arguments of `coto analyze`.
#[derive(Debug, Args)]
pub struct AnalyzeArgs {
    /// Adapter directory.
    #[arg(long, value_name = "DIR")]
    adapter: PathBuf,
    /// Labelled evaluation data (e.g. the validation split).
    #[arg(long, value_name = "FILE")]
    data: PathBuf,
    #[command(flatten)]
    data_args: DataArgs,
    /// Evaluate on the first N examples of --data (each analysis evaluates many times).
    #[arg(long, value_name = "N", default_value_t = 256)]
    examples: usize,
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
    /// The metric: accuracy, or negative-loss (minus the cross-entropy).
    #[arg(long, value_enum, default_value_t = MetricArg::Accuracy)]
    metric: MetricArg,
    /// Shapley values per layer (group), per adapter module (module), or none.
    #[arg(long, value_enum, default_value_t = PlayersArg::Group)]
    shapley: PlayersArg,
    /// Samples of the multilinear-extension estimator; each costs players + 1 evaluations.
    #[arg(long, value_name = "N", default_value_t = 16)]
    samples: usize,
    /// Second adapter of the same task for linear mode connectivity (11 points).
    #[arg(long, value_name = "DIR")]
    lmc: Option<PathBuf>,
    /// Measure dropout stability: each layer dropped alone, and random subsets kept.
    #[arg(long)]
    stability: bool,
    /// Keep rates for the random subsets of --stability.
    #[arg(long, value_name = "RATES", value_delimiter = ',', default_values_t = vec![0.25, 0.5, 0.75])]
    keep_rates: Vec<f64>,
    /// Draws per keep rate.
    #[arg(long, value_name = "N", default_value_t = 8)]
    draws: usize,
    /// Seed of the sampled coalitions and subsets.
    #[arg(long, value_name = "SEED", default_value_t = 0)]
    seed: u64,
    /// Directory for the results.
    #[arg(long, value_name = "DIR", default_value = "coto-analysis")]
    out: PathBuf,
}

/// `--metric` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MetricArg {
    Accuracy,
    NegativeLoss,
}

impl MetricArg {
    fn metric(self) -> AnalysisMetric {
        match self {
            Self::Accuracy => AnalysisMetric::Accuracy,
            Self::NegativeLoss => AnalysisMetric::NegativeLoss,
        }
    }
}

/// `--shapley` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PlayersArg {
    Group,
    Module,
    None,
}

pub fn run(args: AnalyzeArgs) -> Result<()> {
    let loaded = LoadedAdapter::read(&args.adapter, args.model.as_deref(), args.max_length)?;
    let labels = loaded.files.labels()?;
    let mut examples = read_examples(&args.data, &args.data_args.options(), &labels)?;
    examples.truncate(args.examples);
    let device = args.device.select()?;
    let evaluator = Evaluator::new(&loaded.checkpoint, &examples, device.device.clone(), args.metric.metric());
    std::fs::create_dir_all(&args.out).with_context(|| format!("cannot create {}", args.out.display()))?;
    let metric_name = format!("{:?}", args.metric).to_lowercase();

    let model = evaluator.model(&loaded.files)?;
    let slots = slots_of(&model);
    if args.shapley != PlayersArg::None {
        let players = match args.shapley {
            PlayersArg::Module => players_by_module(&slots),
            _ => players_by_group(&slots),
        };
        tracing::info!(players = players.len(), samples = args.samples, "estimating Shapley values");
        let report = shapley_values(&players, slots.len(), args.samples, args.seed, |gates| evaluator.metric(&model, gates))?;
        write(&args.out, "shapley.json", &serde_json::to_string_pretty(&report)?)?;
        write(&args.out, "shapley.csv", &report.to_csv())?;
        write(&args.out, "shapley.svg", &report.heatmap(&format!("Shapley values ({metric_name})")))?;
        println!("Shapley values ({metric_name}; all on {:.4}, all off {:.4}):", report.all_on, report.all_off);
        for v in &report.values {
            println!("  {:<45} {:>8.4} ± {:.4}", v.player.name, v.value, v.std_error);
        }
        println!("  balance (normalised entropy): {:.3}", report.balance());
    }
    if let Some(other) = &args.lmc {
        let second = LoadedAdapter::read(other, args.model.as_deref(), args.max_length)?.files;
        let report = linear_mode_connectivity(&loaded.files, &second, 11, |files| evaluator.metric_of(files))?;
        write(&args.out, "lmc.json", &serde_json::to_string_pretty(&report)?)?;
        write(&args.out, "lmc.csv", &report.to_csv())?;
        write(&args.out, "lmc.svg", &report.chart("Linear mode connectivity", &metric_name))?;
        println!("linear mode connectivity: barrier {:.4}", report.barrier);
    }
    if args.stability {
        let players = players_by_group(&slots);
        let report = dropout_stability(&players, slots.len(), &args.keep_rates, args.draws, args.seed, |gates| {
            evaluator.metric(&model, gates)
        })?;
        write(&args.out, "stability.json", &serde_json::to_string_pretty(&report)?)?;
        write(&args.out, "stability.csv", &report.to_csv())?;
        write(&args.out, "stability.svg", &report.chart("Dropout stability", &metric_name))?;
        println!("dropout stability: all on {:.4}", report.all_on);
        for (name, value) in &report.single_drop {
            println!("  without {name:<10} {value:.4}");
        }
        for r in &report.random {
            println!("  keep {:.2}: {:.4} ± {:.4} ({} draws)", r.keep_rate, r.mean, r.std, r.draws);
        }
    }
    println!("results written to {}", args.out.display());
    Ok(())
}

fn write(dir: &Path, name: &str, text: &str) -> Result<()> {
    coto::adapter::write_atomic(&dir.join(name), text.as_bytes())?;
    Ok(())
}
