//! `coto experiment`: plain LoRA against CoTo (and constant adapter dropout) on three tasks and
//! several seeds, with the merging, pruning, Shapley and connectivity analyses, written as a
//! Markdown report with SVG plots. Every finished training run and analysis is stored in the
//! output directory and reused when the command runs again.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use burn::tensor::Device;
use clap::{Args, ValueEnum};
use coto::adapter::{
    AdapterFiles, HeadChoice, MergeMethod, PrunePattern, RunInfo, load_adapter, merge_adapters, prune_adapter,
    save_adapter, slots_of, write_atomic,
};
use coto::analysis::{AnalysisMetric, Evaluator, Series, line_chart_svg, linear_mode_connectivity, players_by_group, shapley_values};
use coto::coto::{CotoConfig, Gates, Method};
use coto::data::{DataOptions, Dataset, Example, prepare_dataset, read_file};
use coto::model::Checkpoint;
use coto::train::{Metrics, TrainConfig, Trainer, predict_ensemble, score};
use serde::{Deserialize, Serialize};

use super::common::{DeviceArg, load_checkpoint, model_dir};
use super::experiment_report::{Results, write_report};
use super::tasks::Task;

/// Arguments of `coto experiment`.
#[derive(Debug, Args)]
pub struct ExperimentArgs {
    /// quick: 2 seeds, 80 steps per run, small analyses (about 30 minutes on 2 CPU cores);
    /// full: 3 seeds, one epoch per run (at most 400 steps), larger analyses.
    #[arg(long, value_enum, default_value_t = Preset::Quick)]
    preset: Preset,
    /// Directory for the runs, the analyses and the report; a finished part is not redone.
    #[arg(long, value_name = "DIR", default_value = "coto-experiment")]
    out: PathBuf,
    /// Tasks, comma-separated: sms-spam, bbc-news, twitter-sentiment.
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    tasks: Option<Vec<String>>,
    /// Base model directory. Default: the cached all-MiniLM-L6-v2.
    #[arg(long, value_name = "DIR")]
    model: Option<PathBuf>,
    /// Compute device.
    #[arg(long, value_enum, default_value_t = DeviceArg::Auto)]
    device: DeviceArg,
    /// Optimizer steps per run instead of the preset's (for a trial of the whole pipeline).
    #[arg(long, value_name = "N")]
    max_steps: Option<usize>,
}

/// `--preset` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Preset {
    Quick,
    Full,
}

/// Sizes of one preset.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Plan {
    pub preset: Preset,
    pub seeds: Vec<u64>,
    pub max_steps: usize,
    pub max_length: usize,
    pub lr: f64,
    /// Validation examples used for every metric in the report.
    pub eval_examples: usize,
    /// Validation examples used by the Shapley and connectivity analyses.
    pub analysis_examples: usize,
    pub shapley_samples: usize,
}

impl Plan {
    fn of(preset: Preset) -> Self {
        match preset {
            Preset::Quick => Self {
                preset,
                seeds: vec![1, 2],
                max_steps: 80,
                max_length: 64,
                lr: 1e-3,
                eval_examples: 256,
                analysis_examples: 128,
                shapley_samples: 3,
            },
            Preset::Full => Self {
                preset,
                seeds: vec![1, 2, 3],
                max_steps: 400,
                max_length: 128,
                lr: 5e-4,
                eval_examples: 1000,
                analysis_examples: 256,
                shapley_samples: 12,
            },
        }
    }
}

/// The training methods compared.
pub const METHODS: [&str; 3] = ["lora", "coto", "drop"];

/// Describes a method for the report.
pub fn method_description(method: &str) -> &'static str {
    match method {
        "lora" => "plain LoRA, every adapter on at every step",
        "coto" => "CoTo, p from 0.1 to 1 over the first 75% of the steps (linear)",
        _ => "constant adapter dropout: each layer's adapters off with probability 0.25 at every step",
    }
}

fn train_config(method: &str, seed: u64, plan: &Plan) -> TrainConfig {
    let mut config = TrainConfig {
        seed,
        lr: plan.lr,
        max_steps: Some(plan.max_steps),
        epochs: 1,
        max_length: plan.max_length,
        eval_every: 0,
        ..TrainConfig::default()
    };
    match method {
        "lora" => config.method = Method::Lora,
        "coto" => config.method = Method::Coto,
        _ => {
            // The same gates as CoTo, held at p = 0.75 for the whole run.
            config.method = Method::Coto;
            config.coto = CotoConfig {
                initial_p: 0.75,
                final_p: 0.75,
                stage1_ratio: 1.0,
                ..CotoConfig::default()
            };
        }
    }
    config
}

/// A task's data: the fixed split shared by all runs, and the examples every metric uses.
struct TaskData {
    task: Task,
    dataset: Dataset,
    eval: Vec<Example>,
}

/// A finished training run, as stored in `runs/<task>/<method>-seed<k>/`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    pub task: String,
    pub method: String,
    pub seed: u64,
    pub seconds: f64,
    pub metrics: Metrics,
}

/// The seed of the train/validation split, the same for every run so that adapters from
/// different seeds are evaluated on the same held-out examples.
const SPLIT_SEED: u64 = 0;

pub fn run(args: ExperimentArgs) -> Result<()> {
    let mut plan = Plan::of(args.preset);
    if let Some(steps) = args.max_steps {
        plan.max_steps = steps;
    }
    let tasks = match &args.tasks {
        Some(names) => names.iter().map(|n| Task::parse(n)).collect::<Result<Vec<_>>>()?,
        None => Task::ALL.to_vec(),
    };
    let model = model_dir(args.model.as_deref())?;
    let checkpoint = load_checkpoint(&model, plan.max_length)?;
    let device = args.device.select()?;
    std::fs::create_dir_all(&args.out).with_context(|| format!("cannot create {}", args.out.display()))?;
    let started = Instant::now();

    let mut data = Vec::new();
    for &task in &tasks {
        let path = task.prepare()?;
        let records = read_file(&path, &DataOptions::default())?;
        let dataset = prepare_dataset(records, None, 0.1, SPLIT_SEED, task.name())?;
        let eval: Vec<Example> = dataset.validation.iter().take(plan.eval_examples).cloned().collect();
        data.push(TaskData { task, dataset, eval });
    }

    let mut results = Results {
        plan: plan.clone(),
        machine: machine_description(&device.to_string()),
        ..Results::default()
    };
    for task in &data {
        for method in METHODS {
            for &seed in &plan.seeds {
                let record = train_run(task, method, seed, &plan, &checkpoint, &device.device, &args.out)?;
                results.runs.push(record);
            }
        }
    }
    for task in &data {
        analyse_task(task, &plan, &checkpoint, &device.device, &args.out, &mut results)?;
    }
    multi_task_merges(&data, &plan, &checkpoint, &device.device, &args.out, &mut results)?;

    results.minutes = started.elapsed().as_secs_f64() / 60.0;
    let json = serde_json::to_string_pretty(&results)?;
    write_atomic(&args.out.join("results.json"), json.as_bytes())?;
    write_report(&results, &args.out)?;
    println!("report written to {}", args.out.join("report.md").display());
    Ok(())
}

fn run_dir(out: &Path, task: Task, method: &str, seed: u64) -> PathBuf {
    out.join("runs").join(task.name()).join(format!("{method}-seed{seed}"))
}

/// Trains one run, or reads it back if a previous invocation finished it.
fn train_run(
    task: &TaskData,
    method: &str,
    seed: u64,
    plan: &Plan,
    checkpoint: &Checkpoint,
    device: &Device,
    out: &Path,
) -> Result<RunRecord> {
    let dir = run_dir(out, task.task, method, seed);
    let record_path = dir.join("experiment_run.json");
    if let Ok(text) = std::fs::read_to_string(&record_path) {
        return Ok(serde_json::from_str(&text)?);
    }
    // An adapter without its record (the record was deleted to re-score the runs) is scored
    // again without training.
    if let Ok(files) = load_adapter(&dir) {
        let evaluator = Evaluator::new(checkpoint, &task.eval, device.clone(), AnalysisMetric::Accuracy);
        let metrics = evaluator.metrics(&evaluator.model(&files)?, &Gates::inference())?;
        let seconds: f64 = std::fs::read_to_string(dir.join("training_seconds"))
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(0.0);
        return write_record(&record_path, task, method, seed, seconds, metrics);
    }
    tracing::info!(task = task.task.name(), method, seed, "training");
    let config = train_config(method, seed, plan);
    let started = Instant::now();
    let mut trainer = Trainer::new(checkpoint.clone(), task.dataset.clone(), config.clone(), device)?;
    while !trainer.is_done() {
        trainer.step()?;
    }
    let seconds = started.elapsed().as_secs_f64();
    let predictions = trainer.predict_examples(&task.eval)?;
    let metrics = score(&predictions, &task.eval, task.dataset.labels.len());
    let run = RunInfo {
        coto_version: env!("CARGO_PKG_VERSION").into(),
        labels: trainer.labels().names().to_vec(),
        train: Some(config.clone()),
        steps: trainer.step_count(),
        metrics: Some(metrics),
        base_model: None,
        origin: Some(format!("coto experiment, task {}", task.task.name())),
    };
    save_adapter(&AdapterFiles::from_model(trainer.model(), &config.lora, run), &dir)?;
    write_atomic(&dir.join("training_seconds"), format!("{seconds}").as_bytes())?;
    tracing::info!(task = task.task.name(), method, seed, accuracy = metrics.accuracy, seconds, "trained");
    write_record(&record_path, task, method, seed, seconds, metrics)
}

/// Writes one run's record (`experiment_run.json`) and returns it.
fn write_record(path: &Path, task: &TaskData, method: &str, seed: u64, seconds: f64, metrics: Metrics) -> Result<RunRecord> {
    let record = RunRecord {
        task: task.task.name().into(),
        method: method.into(),
        seed,
        seconds,
        metrics,
    };
    write_atomic(path, serde_json::to_string_pretty(&record)?.as_bytes())?;
    Ok(record)
}

/// Reads a stored analysis result, or computes and stores it.
fn cached<T: Serialize + for<'de> Deserialize<'de>>(path: &Path, compute: impl FnOnce() -> Result<T>) -> Result<T> {
    if let Ok(text) = std::fs::read_to_string(path)
        && let Ok(value) = serde_json::from_str(&text)
    {
        return Ok(value);
    }
    let value = compute()?;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    write_atomic(path, serde_json::to_string_pretty(&value)?.as_bytes())?;
    Ok(value)
}

/// Merges, ensembles, pruning, Shapley values and connectivity for one task.
fn analyse_task(
    task: &TaskData,
    plan: &Plan,
    checkpoint: &Checkpoint,
    device: &Device,
    out: &Path,
    results: &mut Results,
) -> Result<()> {
    let name = task.task.name();
    let analysis = out.join("analysis").join(name);
    let evaluator = Evaluator::new(checkpoint, &task.eval, device.clone(), AnalysisMetric::Accuracy);
    let small: Vec<Example> = task.eval.iter().take(plan.analysis_examples).cloned().collect();
    let small_evaluator = Evaluator::new(checkpoint, &small, device.clone(), AnalysisMetric::Accuracy);
    let mut lmc_series = Vec::new();

    for method in METHODS {
        let adapters: Vec<AdapterFiles> = plan
            .seeds
            .iter()
            .map(|&seed| load_adapter(&run_dir(out, task.task, method, seed)))
            .collect::<coto::Result<_>>()?;

        // Same-task merges of 2 and 3 seeds against the ensemble of the same adapters.
        for count in [2, 3].into_iter().filter(|&c| c <= adapters.len()) {
            let refs: Vec<&AdapterFiles> = adapters.iter().take(count).collect();
            let path = analysis.join(format!("{method}-merge{count}.json"));
            let (merged, ensemble): (Metrics, Metrics) = cached(&path, || {
                let weights = vec![1.0; count];
                let merged = merge_adapters(&refs, &weights, MergeMethod::Linear, None, HeadChoice::Average)?;
                let merged = evaluator.metrics(&evaluator.model(&merged)?, &Gates::inference())?;
                let models = refs.iter().map(|a| evaluator.model(a)).collect::<coto::Result<Vec<_>>>()?;
                let model_refs: Vec<_> = models.iter().collect();
                let texts: Vec<&str> = task.eval.iter().map(|e| e.text.as_str()).collect();
                let predictions = predict_ensemble(&model_refs, &checkpoint.tokenizer, &texts, 64)?;
                Ok((merged, score(&predictions, &task.eval, task.dataset.labels.len())))
            })?;
            results.merges.push(super::experiment_report::MergeRecord {
                task: name.into(),
                method: method.into(),
                adapters: count,
                merged,
                ensemble,
            });
        }

        // Pruning patterns on every seed's adapter.
        for (adapter, &seed) in adapters.iter().zip(&plan.seeds) {
            for pattern in ["every-other", "lower", "upper"] {
                let path = analysis.join(format!("{method}-seed{seed}-prune-{pattern}.json"));
                let metrics: Metrics = cached(&path, || {
                    let layers = checkpoint.config.num_hidden_layers;
                    let pruned = prune_adapter(adapter, &pattern.parse::<PrunePattern>()?, layers)?;
                    Ok(evaluator.metrics(&evaluator.model(&pruned)?, &Gates::inference())?)
                })?;
                results.pruning.push(super::experiment_report::PruneRecord {
                    task: name.into(),
                    method: method.into(),
                    seed,
                    pattern: pattern.into(),
                    metrics,
                });
            }
        }

        // Shapley values of the layers of the first seed's adapter.
        let path = analysis.join(format!("{method}-shapley.json"));
        let report = cached(&path, || {
            let model = small_evaluator.model(&adapters[0])?;
            let slots = slots_of(&model);
            let players = players_by_group(&slots);
            Ok(shapley_values(&players, slots.len(), plan.shapley_samples, 0, |gates| {
                small_evaluator.metric(&model, gates)
            })?)
        })?;
        let svg = report.heatmap(&format!("{name}, {method}: Shapley value of each layer's adapters (accuracy)"));
        write_atomic(&analysis.join(format!("{method}-shapley.svg")), svg.as_bytes())?;
        results.shapley.insert(format!("{name}/{method}"), report);

        // Linear mode connectivity between the first two seeds.
        if adapters.len() >= 2 {
            let path = analysis.join(format!("{method}-lmc.json"));
            let report = cached(&path, || {
                Ok(linear_mode_connectivity(&adapters[0], &adapters[1], 11, |files| small_evaluator.metric_of(files))?)
            })?;
            lmc_series.push(Series {
                label: format!("{method} (barrier {:.3})", report.barrier),
                points: report.lambdas.iter().copied().zip(report.metrics.iter().copied()).collect(),
            });
            results.connectivity.insert(format!("{name}/{method}"), report);
        }
    }
    if !lmc_series.is_empty() {
        let svg = line_chart_svg(
            &format!("{name}: accuracy between two seeds' adapters"),
            "λ (0: seed 1, 1: seed 2)",
            "accuracy",
            &lmc_series,
        );
        write_atomic(&analysis.join("lmc.svg"), svg.as_bytes())?;
    }
    Ok(())
}

/// Merges the three tasks' adapters of each method and seed (1:1:1) and evaluates each task
/// with its own head and labels.
fn multi_task_merges(
    data: &[TaskData],
    plan: &Plan,
    checkpoint: &Checkpoint,
    device: &Device,
    out: &Path,
    results: &mut Results,
) -> Result<()> {
    if data.len() < 2 {
        return Ok(());
    }
    for method in METHODS {
        for &seed in &plan.seeds {
            let adapters: Vec<AdapterFiles> = data
                .iter()
                .map(|t| load_adapter(&run_dir(out, t.task, method, seed)))
                .collect::<coto::Result<_>>()?;
            let refs: Vec<&AdapterFiles> = adapters.iter().collect();
            let path = out.join("analysis").join("multi-task").join(format!("{method}-seed{seed}.json"));
            let per_task: BTreeMap<String, Metrics> = cached(&path, || {
                let weights = vec![1.0; refs.len()];
                let merged = merge_adapters(&refs, &weights, MergeMethod::Linear, None, HeadChoice::First)?;
                let mut per_task = BTreeMap::new();
                for (task, own) in data.iter().zip(&adapters) {
                    let mut with_head = merged.clone();
                    for field in ["weight", "bias"] {
                        let name = coto::adapter::head_tensor_name(field);
                        let tensor = own.weights.get_any(&name).context("an adapter without a head")?;
                        with_head.weights.insert(name, tensor.clone());
                    }
                    with_head.run = own.run.clone();
                    let evaluator = Evaluator::new(checkpoint, &task.eval, device.clone(), AnalysisMetric::Accuracy);
                    let metrics = evaluator.metrics(&evaluator.model(&with_head)?, &Gates::inference())?;
                    per_task.insert(task.task.name().to_string(), metrics);
                }
                Ok(per_task)
            })?;
            for (task, metrics) in per_task {
                results.multi_task.push(super::experiment_report::MultiTaskRecord {
                    task,
                    method: method.into(),
                    seed,
                    metrics,
                });
            }
        }
    }
    Ok(())
}

fn machine_description(device: &str) -> String {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| text.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string()))
        .unwrap_or_else(|| "unknown CPU".into());
    format!("{cpus} CPU threads ({model}); device {device}")
}
