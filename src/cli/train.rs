//! `coto train`: fine-tune a classifier and save its adapter.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use coto::adapter::{AdapterFiles, CONFIG_FILE, RUN_FILE, RunInfo, WEIGHTS_FILE, save_adapter};
use coto::coto::{Grouping, Method, ScheduleShape};
use coto::data::{DataOptions, RawRecord, prepare_dataset, read_file, records_to_tsv};
use coto::lora::LoraVariant;
use coto::model::Pooling;
use coto::train::{
    EvalReport, LrSchedule, NonFinite, StepReport, TrainConfig, Trainer, latest_checkpoint, load_checkpoint,
    save_checkpoint,
};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};

use super::common::{DataArgs, DeviceArg, data_file, load_checkpoint as load_checkpoint_dir, model_dir};

/// Arguments of `coto train`. Every setting also has a key in the `--config` TOML file; a flag
/// given on the command line overrides the file.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Hugging Face BERT checkpoint directory. Default: the cached all-MiniLM-L6-v2, fetched on
    /// first use.
    #[arg(long, value_name = "DIR")]
    model: Option<PathBuf>,
    /// Labelled data: CSV or TSV with a header, JSONL, or `label<TAB>text` lines. Default: the
    /// cached SMS spam collection, fetched on first use.
    #[arg(long, value_name = "FILE")]
    data: Option<PathBuf>,
    /// Separate validation data in the same layout; without it a stratified fraction of --data
    /// is held out.
    #[arg(long, value_name = "FILE")]
    validation_data: Option<PathBuf>,
    #[command(flatten)]
    data_args: DataArgs,
    /// Directory for the adapter, the run record and the metrics log.
    #[arg(long, value_name = "DIR", default_value = "coto-output")]
    output: PathBuf,
    /// Compute device.
    #[arg(long, value_enum, default_value_t = DeviceArg::Auto)]
    device: DeviceArg,
    /// TOML file with any of the settings below (keys as in `coto_run.json`'s `train`).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Write a checkpoint every N optimizer steps (and at the end) under OUTPUT/checkpoints;
    /// 0 writes none.
    #[arg(long, value_name = "N", default_value_t = 0)]
    save_every: usize,
    /// Checkpoints to keep; older ones are deleted.
    #[arg(long, value_name = "K", default_value_t = 2)]
    keep: usize,
    /// Continue the run saved in this output directory (its newest checkpoint) or checkpoint
    /// directory, with the settings, model, data and checkpoint interval stored there; other
    /// settings are ignored, except a non-zero `--save-every` (with `--keep`).
    #[arg(long, value_name = "DIR")]
    resume: Option<PathBuf>,

    /// Training method: coto (progressive adapter dropout) or lora (all adapters always on).
    /// Default: coto.
    #[arg(long, value_enum)]
    method: Option<MethodArg>,
    /// CoTo: probability that an adapter group is on at the first step. Default: 0.1.
    #[arg(long, value_name = "P")]
    initial_p: Option<f64>,
    /// CoTo: probability at the end of stage 1 and after. Default: 1.0.
    #[arg(long, value_name = "P")]
    final_p: Option<f64>,
    /// CoTo: fraction of the optimizer steps over which p rises. Default: 0.75.
    #[arg(long, value_name = "FRACTION")]
    stage1_ratio: Option<f64>,
    /// CoTo: shape of the rise of p. Default: linear.
    #[arg(long, value_enum)]
    schedule: Option<ScheduleArg>,
    /// CoTo: adapters that switch together: one group per transformer layer, or per adapter.
    /// Default: layer.
    #[arg(long, value_enum)]
    grouping: Option<GroupingArg>,

    /// Adapter variant: lora, rslora (scaling alpha/sqrt(r)), dora (magnitude and direction),
    /// pissa (SVD initialisation), or hira (Hadamard high-rank update). Default: lora.
    #[arg(long, value_enum)]
    variant: Option<VariantArg>,
    /// LoRA rank r. Default: 8.
    #[arg(long, value_name = "R")]
    rank: Option<usize>,
    /// LoRA alpha; the update is scaled by alpha / r. Default: 16.
    #[arg(long, value_name = "ALPHA")]
    alpha: Option<f64>,
    /// Dropout probability on the adapter input. Default: 0.0.
    #[arg(long, value_name = "P")]
    lora_dropout: Option<f64>,
    /// Comma-separated modules that get adapters: query, key, value, attention.output.dense,
    /// intermediate.dense, output.dense. Default: query,value.
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    target_modules: Option<Vec<String>>,
    /// Pooling before the classifier: the checkpoint's [CLS] pooler, or the token mean.
    /// Default: cls.
    #[arg(long, value_enum)]
    pooling: Option<PoolingArg>,

    /// Peak learning rate of AdamW. Default: 5e-4.
    #[arg(long, value_name = "LR")]
    lr: Option<f64>,
    /// AdamW decoupled weight decay. Default: 0.01.
    #[arg(long, value_name = "WD")]
    weight_decay: Option<f64>,
    /// Fraction of the steps for linear learning-rate warm-up. Default: 0.06.
    #[arg(long, value_name = "FRACTION")]
    warmup_ratio: Option<f64>,
    /// Learning-rate decay after warm-up. Default: linear.
    #[arg(long, value_enum)]
    lr_schedule: Option<LrScheduleArg>,
    /// Examples per micro-batch. Default: 16.
    #[arg(long, value_name = "N")]
    batch_size: Option<usize>,
    /// Micro-batches per optimizer step (gradient accumulation). Default: 1.
    #[arg(long, value_name = "N")]
    grad_accum: Option<usize>,
    /// Clip the global gradient norm to this value; 0 turns clipping off. Default: 1.0.
    #[arg(long, value_name = "NORM")]
    max_grad_norm: Option<f64>,
    /// Truncate texts to this many tokens. Default: 64.
    #[arg(long, value_name = "N")]
    max_length: Option<usize>,
    /// Passes over the training data. Default: 1.
    #[arg(long, value_name = "N")]
    epochs: Option<usize>,
    /// Stop after this many optimizer steps. Default: no limit beyond --epochs.
    #[arg(long, value_name = "N")]
    max_steps: Option<usize>,
    /// Evaluate every N optimizer steps, and always at the end; 0 evaluates only at the end.
    /// Default: 100.
    #[arg(long, value_name = "N")]
    eval_every: Option<usize>,
    /// Fraction of each class held out for validation. Default: 0.1.
    #[arg(long, value_name = "FRACTION")]
    validation_fraction: Option<f64>,
    /// Seed of every random choice: initialisation, split, order, dropout and CoTo draws.
    /// Default: 42.
    #[arg(long, value_name = "SEED")]
    seed: Option<u64>,
    /// A step whose loss or gradient is NaN or infinite: stop the run (keeping the checkpoints
    /// written so far), or skip its update and count it. Default: stop.
    #[arg(long, value_enum)]
    on_nonfinite: Option<NonFiniteArg>,
}

/// `--on-nonfinite` values.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum NonFiniteArg {
    Stop,
    Skip,
}

/// `--variant` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum VariantArg {
    Lora,
    Rslora,
    Dora,
    Pissa,
    Hira,
}

impl VariantArg {
    /// The library's variant.
    pub fn variant(self) -> LoraVariant {
        match self {
            Self::Lora => LoraVariant::Lora,
            Self::Rslora => LoraVariant::Rslora,
            Self::Dora => LoraVariant::Dora,
            Self::Pissa => LoraVariant::Pissa,
            Self::Hira => LoraVariant::Hira,
        }
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum MethodArg {
    Lora,
    Coto,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ScheduleArg {
    Linear,
    Sine,
    Exponential,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum GroupingArg {
    Layer,
    Adapter,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum PoolingArg {
    Cls,
    Mean,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LrScheduleArg {
    Linear,
    Cosine,
    Constant,
}

impl TrainArgs {
    /// The settings: defaults, then the TOML file, then the flags.
    fn train_config(&self) -> Result<TrainConfig> {
        let mut config = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
                TrainConfig::from_toml(&text, &path.display().to_string())?
            }
            None => TrainConfig::default(),
        };
        if let Some(method) = self.method {
            config.method = match method {
                MethodArg::Lora => Method::Lora,
                MethodArg::Coto => Method::Coto,
            };
        }
        set(&mut config.coto.initial_p, self.initial_p);
        set(&mut config.coto.final_p, self.final_p);
        set(&mut config.coto.stage1_ratio, self.stage1_ratio);
        if let Some(schedule) = self.schedule {
            config.coto.schedule = match schedule {
                ScheduleArg::Linear => ScheduleShape::Linear,
                ScheduleArg::Sine => ScheduleShape::Sine,
                ScheduleArg::Exponential => ScheduleShape::Exponential,
            };
        }
        if let Some(grouping) = self.grouping {
            config.grouping = match grouping {
                GroupingArg::Layer => Grouping::Layer,
                GroupingArg::Adapter => Grouping::Adapter,
            };
        }
        if let Some(variant) = self.variant {
            variant.variant().apply(&mut config.lora);
        }
        set(&mut config.lora.r, self.rank);
        set(&mut config.lora.lora_alpha, self.alpha);
        set(&mut config.lora.lora_dropout, self.lora_dropout);
        set(&mut config.lora.target_modules, self.target_modules.clone());
        if let Some(pooling) = self.pooling {
            config.pooling = match pooling {
                PoolingArg::Cls => Pooling::Cls,
                PoolingArg::Mean => Pooling::Mean,
            };
        }
        set(&mut config.lr, self.lr);
        set(&mut config.weight_decay, self.weight_decay);
        set(&mut config.warmup_ratio, self.warmup_ratio);
        if let Some(schedule) = self.lr_schedule {
            config.lr_schedule = match schedule {
                LrScheduleArg::Linear => LrSchedule::Linear,
                LrScheduleArg::Cosine => LrSchedule::Cosine,
                LrScheduleArg::Constant => LrSchedule::Constant,
            };
        }
        set(&mut config.batch_size, self.batch_size);
        set(&mut config.grad_accum_steps, self.grad_accum);
        set(&mut config.max_grad_norm, self.max_grad_norm);
        set(&mut config.max_length, self.max_length);
        set(&mut config.epochs, self.epochs);
        if self.max_steps.is_some() {
            config.max_steps = self.max_steps;
        }
        set(&mut config.eval_every, self.eval_every);
        set(&mut config.validation_fraction, self.validation_fraction);
        set(&mut config.seed, self.seed);
        if let Some(policy) = self.on_nonfinite {
            config.on_nonfinite = match policy {
                NonFiniteArg::Stop => NonFinite::Stop,
                NonFiniteArg::Skip => NonFinite::Skip,
            };
        }
        config.validate()?;
        Ok(config)
    }
}

fn set<T>(target: &mut T, value: Option<T>) {
    if let Some(value) = value {
        *target = value;
    }
}

/// Where a run's model and data come from, and its evaluations so far: stored in each
/// checkpoint so that `--resume` needs no other flags.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RunSources {
    model: PathBuf,
    data: PathBuf,
    validation_data: Option<PathBuf>,
    data_options: DataOptions,
    history: Vec<EvalReport>,
    /// `--save-every` and `--keep`, so that a resumed run goes on writing checkpoints.
    #[serde(default)]
    save_every: usize,
    #[serde(default = "default_keep")]
    keep: usize,
}

fn default_keep() -> usize {
    2
}

pub fn run(args: TrainArgs) -> Result<()> {
    let (config, mut sources, snapshot, output) = match &args.resume {
        Some(dir) => {
            let checkpoint = latest_checkpoint(dir)?;
            let (snapshot, run) = load_checkpoint(&checkpoint)?;
            let mut sources: RunSources = serde_json::from_value(run)
                .with_context(|| format!("{} has no run information", checkpoint.display()))?;
            // An explicit `--save-every` on the resume command replaces the stored one.
            if args.save_every > 0 {
                sources.save_every = args.save_every;
                sources.keep = args.keep;
            }
            tracing::info!(checkpoint = %checkpoint.display(), step = snapshot.state.step, "resuming");
            let output = checkpoint
                .parent()
                .and_then(Path::parent)
                .map(Path::to_path_buf)
                .unwrap_or_else(|| dir.clone());
            (snapshot.state.config.clone(), sources, Some(snapshot), output)
        }
        None => {
            let sources = RunSources {
                model: model_dir(args.model.as_deref())?,
                data: data_file(args.data.as_deref())?,
                validation_data: args.validation_data.clone(),
                data_options: args.data_args.options(),
                history: Vec::new(),
                save_every: args.save_every,
                keep: args.keep,
            };
            (args.train_config()?, sources, None, args.output.clone())
        }
    };

    let records = read_file(&sources.data, &sources.data_options)?;
    let validation = sources
        .validation_data
        .as_deref()
        .map(|p| read_file(p, &sources.data_options))
        .transpose()?;
    let dataset = prepare_dataset(
        records,
        validation,
        config.validation_fraction,
        config.seed,
        &sources.data.display().to_string(),
    )?;
    tracing::info!(
        data = %sources.data.display(),
        train = dataset.train.len(),
        validation = dataset.validation.len(),
        labels = ?dataset.labels.names(),
        "data loaded"
    );

    let checkpoint = load_checkpoint_dir(&sources.model, config.max_length)?;
    let device = args.device.select()?;
    let mut trainer = Trainer::new(checkpoint, dataset, config.clone(), &device.device)?;
    if let Some(snapshot) = &snapshot {
        trainer.restore(snapshot)?;
    }
    tracing::info!(
        method = ?config.method,
        adapters = trainer.slots().len(),
        groups = trainer.gates().groups().len(),
        steps = trainer.total_steps(),
        stage1_steps = trainer.gates().schedule().stage1_steps(),
        "training"
    );

    std::fs::create_dir_all(&output).with_context(|| format!("cannot create {}", output.display()))?;
    let interrupted = Arc::new(AtomicBool::new(false));
    {
        let interrupted = interrupted.clone();
        ctrlc::set_handler(move || interrupted.store(true, Ordering::SeqCst))
            .context("cannot install the Ctrl-C handler")?;
    }
    let mut log = MetricsLog::open(&output.join("metrics.jsonl"), trainer.step_count())?;
    let started = Instant::now();
    let first_step = trainer.step_count();
    let progress = progress_bar(trainer.total_steps() as u64);
    progress.set_position(first_step as u64);
    let mut tokens = 0usize;
    while !trainer.is_done() {
        if interrupted.load(Ordering::SeqCst) {
            progress.finish_and_clear();
            log.flush()?;
            let dir = write_checkpoint(&trainer, &sources, &output, sources.keep)?;
            bail!(
                "interrupted after step {}; the run is saved in {}. Continue it with: coto train --resume {}",
                trainer.step_count(),
                dir.display(),
                output.display()
            );
        }
        let report = match trainer.step() {
            Ok(report) => report,
            Err(error) => {
                progress.finish_and_clear();
                log.flush()?;
                return Err(error.into());
            }
        };
        tokens += report.tokens;
        log.step(&report)?;
        progress.set_position(report.step as u64);
        progress.set_message(format!(
            "loss {:.4} p {:.2} on {}",
            report.loss,
            report.p,
            group_strip(&report.active_groups)
        ));
        if trainer.is_done() {
            break;
        }
        if config.eval_every > 0 && report.step % config.eval_every == 0 {
            let eval = trainer.evaluate()?;
            log.eval(&eval)?;
            progress.suspend(|| print_eval(&eval));
            sources.history.push(eval);
        } else if progress.is_hidden() && report.step % 25 == 0 {
            tracing::info!(step = report.step, loss = report.loss, p = report.p, on = %group_strip(&report.active_groups), "progress");
        }
        if sources.save_every > 0 && report.step % sources.save_every == 0 {
            let dir = write_checkpoint(&trainer, &sources, &output, sources.keep)?;
            tracing::debug!(dir = %dir.display(), "checkpoint written");
        }
    }
    progress.finish_and_clear();
    let elapsed = started.elapsed().as_secs_f64();
    if trainer.skipped_steps() > 0 {
        tracing::warn!(skipped = trainer.skipped_steps(), "steps skipped for a non-finite loss or gradient");
    }

    let eval = trainer.evaluate()?;
    log.eval(&eval)?;
    sources.history.push(eval.clone());
    if sources.save_every > 0 {
        write_checkpoint(&trainer, &sources, &output, sources.keep)?;
    }
    save_adapter(&adapter_files(&trainer, &sources), &output)?;
    write_validation_split(&trainer, &output)?;

    let steps = trainer.step_count() - first_step;
    print_summary(&trainer, &eval, elapsed, steps, tokens, &device.to_string(), &output);
    Ok(())
}

/// Writes the held-out examples as `validation.tsv` (`label<TAB>text`), so that `coto eval` can
/// score the adapter on exactly the data training did not see.
fn write_validation_split(trainer: &Trainer, output: &Path) -> Result<()> {
    let labels = trainer.labels();
    let records: Vec<RawRecord> = trainer
        .dataset()
        .validation
        .iter()
        .enumerate()
        .map(|(line, example)| RawRecord {
            text: example.text.clone(),
            label: labels.name(example.label).to_string(),
            line: line + 1,
        })
        .collect();
    coto::adapter::write_atomic(&output.join("validation.tsv"), records_to_tsv(&records).as_bytes())?;
    Ok(())
}

/// The PEFT-format adapter of the trainer's current state, with its run record.
fn adapter_files(trainer: &Trainer, sources: &RunSources) -> AdapterFiles {
    let run = RunInfo {
        coto_version: env!("CARGO_PKG_VERSION").into(),
        labels: trainer.labels().names().to_vec(),
        train: Some(trainer.config().clone()),
        steps: trainer.step_count(),
        metrics: sources.history.last().map(|e| e.metrics),
        base_model: Some(sources.model.display().to_string()),
        origin: None,
    };
    AdapterFiles::from_model(trainer.model(), &trainer.config().lora, run)
}

/// Saves a checkpoint that `--resume` continues from and that also loads as an adapter.
fn write_checkpoint(trainer: &Trainer, sources: &RunSources, output: &Path, keep: usize) -> Result<PathBuf> {
    let files = adapter_files(trainer, sources);
    let mut extra = vec![
        (WEIGHTS_FILE, files.weights_bytes()?),
        (CONFIG_FILE, files.config_json().into_bytes()),
    ];
    if let Some(run) = files.run_json() {
        extra.push((RUN_FILE, run.into_bytes()));
    }
    let run = serde_json::to_value(sources)?;
    Ok(save_checkpoint(output, &trainer.snapshot(), &run, &extra, keep)?)
}

fn progress_bar(steps: u64) -> ProgressBar {
    let bar = ProgressBar::new(steps);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} steps [{elapsed_precise}<{eta_precise}] {msg}")
            .expect("the template is valid"),
    );
    bar
}

/// One character per group: `■` on, `·` off.
fn group_strip(active: &[bool]) -> String {
    active.iter().map(|&on| if on { '■' } else { '·' }).collect()
}

fn print_eval(eval: &EvalReport) {
    eprintln!(
        "step {:>5}  validation loss {:.4}  accuracy {:.2}%  macro-F1 {:.4}",
        eval.step,
        eval.metrics.loss,
        100.0 * eval.metrics.accuracy,
        eval.metrics.macro_f1
    );
}

fn print_summary(trainer: &Trainer, eval: &EvalReport, elapsed: f64, steps: usize, tokens: usize, device: &str, output: &Path) {
    println!();
    println!("{:<22} {}", "method", format!("{:?}", trainer.config().method).to_lowercase());
    println!("{:<22} {device}", "device");
    println!("{:<22} {}", "optimizer steps", trainer.step_count());
    println!(
        "{:<22} {:.1} s ({:.2} steps/s, {:.0} tokens/s)",
        "training time",
        elapsed,
        steps as f64 / elapsed,
        tokens as f64 / elapsed
    );
    println!("{:<22} {} examples", "validation set", eval.metrics.examples);
    println!("{:<22} {:.4}", "validation loss", eval.metrics.loss);
    println!("{:<22} {:.2}%", "validation accuracy", 100.0 * eval.metrics.accuracy);
    println!("{:<22} {:.4}", "validation macro-F1", eval.metrics.macro_f1);
    println!("{:<22} {}", "adapter saved to", output.display());
}

/// `metrics.jsonl`: one JSON object per optimizer step and per evaluation.
struct MetricsLog {
    file: std::io::BufWriter<std::fs::File>,
}

impl MetricsLog {
    /// Opens the log for a run at `step`: lines of later steps (written before an interruption,
    /// after the checkpoint being resumed) are dropped, earlier ones kept.
    fn open(path: &Path, step: usize) -> Result<Self> {
        let kept: Vec<String> = match std::fs::read_to_string(path) {
            Ok(text) if step > 0 => text
                .lines()
                .filter(|line| {
                    serde_json::from_str::<serde_json::Value>(line)
                        .ok()
                        .and_then(|v| v["step"].as_u64())
                        .is_some_and(|s| s as usize <= step)
                })
                .map(str::to_string)
                .collect(),
            _ => Vec::new(),
        };
        let file = std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
        let mut file = std::io::BufWriter::new(file);
        for line in kept {
            writeln!(file, "{line}")?;
        }
        Ok(Self { file })
    }

    fn step(&mut self, report: &StepReport) -> Result<()> {
        let mut value = serde_json::to_value(report)?;
        value["kind"] = "step".into();
        writeln!(self.file, "{value}")?;
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        self.file.flush()?;
        Ok(())
    }

    fn eval(&mut self, report: &EvalReport) -> Result<()> {
        let mut value = serde_json::to_value(report)?;
        value["kind"] = "eval".into();
        writeln!(self.file, "{value}")?;
        self.file.flush()?;
        Ok(())
    }
}
