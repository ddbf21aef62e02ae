//! `coto train`: fine-tune a classifier and save its adapter.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use coto::adapter::{AdapterFiles, RunInfo, save_adapter};
use coto::coto::{Grouping, Method, ScheduleShape};
use coto::data::{DataFormat, DataOptions, prepare_dataset, read_file};
use coto::model::Pooling;
use coto::train::{EvalReport, LrSchedule, StepReport, TrainConfig, Trainer};
use indicatif::{ProgressBar, ProgressStyle};

use super::common::{DeviceArg, data_file, load_checkpoint, model_dir};

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
    /// Layout of the data files. Default: auto-detected from the extension and first line.
    #[arg(long, value_enum)]
    format: Option<FormatArg>,
    /// Column (JSON field) with the text. Default: text.
    #[arg(long, value_name = "NAME")]
    text_column: Option<String>,
    /// Column (JSON field) with the label. Default: label.
    #[arg(long, value_name = "NAME")]
    label_column: Option<String>,
    /// Directory for the adapter, the run record and the metrics log.
    #[arg(long, value_name = "DIR", default_value = "coto-output")]
    output: PathBuf,
    /// Compute device.
    #[arg(long, value_enum, default_value_t = DeviceArg::Auto)]
    device: DeviceArg,
    /// TOML file with any of the settings below (keys as in `coto_run.json`'s `train`).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,

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
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum FormatArg {
    Csv,
    Tsv,
    Jsonl,
    LabelFirst,
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
        config.validate()?;
        Ok(config)
    }

    fn data_options(&self) -> DataOptions {
        let mut options = DataOptions::default();
        if let Some(format) = self.format {
            options.format = match format {
                FormatArg::Csv => DataFormat::Csv,
                FormatArg::Tsv => DataFormat::Tsv,
                FormatArg::Jsonl => DataFormat::Jsonl,
                FormatArg::LabelFirst => DataFormat::LabelFirst,
            };
        }
        set(&mut options.text_column, self.text_column.clone());
        set(&mut options.label_column, self.label_column.clone());
        options
    }
}

fn set<T>(target: &mut T, value: Option<T>) {
    if let Some(value) = value {
        *target = value;
    }
}

pub fn run(args: TrainArgs) -> Result<()> {
    let config = args.train_config()?;
    let model_path = model_dir(args.model.as_deref())?;
    let data_path = data_file(args.data.as_deref())?;
    let options = args.data_options();

    let records = read_file(&data_path, &options)?;
    let validation = args.validation_data.as_deref().map(|p| read_file(p, &options)).transpose()?;
    let dataset = prepare_dataset(
        records,
        validation,
        config.validation_fraction,
        config.seed,
        &data_path.display().to_string(),
    )?;
    tracing::info!(
        data = %data_path.display(),
        train = dataset.train.len(),
        validation = dataset.validation.len(),
        labels = ?dataset.labels.names(),
        "data loaded"
    );

    let checkpoint = load_checkpoint(&model_path, config.max_length)?;
    let device = args.device.select()?;
    let mut trainer = Trainer::new(checkpoint, dataset, config.clone(), &device.device)?;
    tracing::info!(
        method = ?config.method,
        adapters = trainer.slots().len(),
        groups = trainer.gates().groups().len(),
        steps = trainer.total_steps(),
        stage1_steps = trainer.gates().schedule().stage1_steps(),
        "training"
    );

    std::fs::create_dir_all(&args.output).with_context(|| format!("cannot create {}", args.output.display()))?;
    let mut log = MetricsLog::create(&args.output.join("metrics.jsonl"))?;
    let started = Instant::now();
    let progress = progress_bar(trainer.total_steps() as u64);
    let mut last_eval = None;
    let mut tokens = 0usize;
    while !trainer.is_done() {
        let report = trainer.step()?;
        tokens += report.tokens;
        log.step(&report)?;
        progress.set_position(report.step as u64);
        progress.set_message(format!(
            "loss {:.4} p {:.2} on {}",
            report.loss,
            report.p,
            group_strip(&report.active_groups)
        ));
        let eval_due = config.eval_every > 0 && report.step % config.eval_every == 0;
        if eval_due && !trainer.is_done() {
            let eval = trainer.evaluate()?;
            log.eval(&eval)?;
            progress.suspend(|| print_eval(&eval));
            last_eval = Some(eval);
        } else if progress.is_hidden() && report.step % 25 == 0 {
            tracing::info!(step = report.step, loss = report.loss, p = report.p, on = %group_strip(&report.active_groups), "progress");
        }
    }
    progress.finish_and_clear();
    let elapsed = started.elapsed().as_secs_f64();

    let eval = trainer.evaluate()?;
    log.eval(&eval)?;
    last_eval.replace(eval.clone());
    let run = RunInfo {
        coto_version: env!("CARGO_PKG_VERSION").into(),
        labels: trainer.labels().names().to_vec(),
        train: Some(config.clone()),
        steps: trainer.step_count(),
        metrics: Some(eval.metrics),
        base_model: Some(model_path.display().to_string()),
    };
    let files = AdapterFiles::from_model(trainer.model(), &config.lora, run);
    save_adapter(&files, &args.output)?;

    print_summary(&trainer, &eval, elapsed, tokens, &device.to_string(), &args.output);
    Ok(())
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

fn print_summary(trainer: &Trainer, eval: &EvalReport, elapsed: f64, tokens: usize, device: &str, output: &Path) {
    let steps = trainer.step_count();
    println!();
    println!("{:<22} {}", "method", format!("{:?}", trainer.config().method).to_lowercase());
    println!("{:<22} {device}", "device");
    println!("{:<22} {steps}", "optimizer steps");
    println!("{:<22} {:.1} s ({:.2} steps/s, {:.0} tokens/s)", "training time", elapsed, steps as f64 / elapsed, tokens as f64 / elapsed);
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
    fn create(path: &Path) -> Result<Self> {
        let file = std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
        Ok(Self {
            file: std::io::BufWriter::new(file),
        })
    }

    fn step(&mut self, report: &StepReport) -> Result<()> {
        let mut value = serde_json::to_value(report)?;
        value["kind"] = "step".into();
        writeln!(self.file, "{value}")?;
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
