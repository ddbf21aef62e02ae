//! Pieces several subcommands share: logging, device and model selection.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use coto::adapter::{AdapterFiles, load_adapter};
use coto::assets::{self, MINILM, SMS_SPAM};
use coto::data::{DataFormat, DataOptions, Example, InvalidUtf8, LabelMap, read_file};
use coto::device::{ComputeDevice, DeviceChoice, select_device};
use coto::model::{BertClassifier, Checkpoint, TextTokenizer};

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

/// Logs to stderr at `info` (or `RUST_LOG`), with colours only on a terminal.
pub fn init_logging() {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,wgpu_core=warn,wgpu_hal=warn,naga=warn,cubecl=warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .compact()
        .try_init();
}

/// Gives Vulkan drivers a runtime directory when the session has none (a container, a CI
/// job): Mesa prints "XDG_RUNTIME_DIR is invalid or not set" to stderr at every adapter
/// enumeration otherwise. Must run before any thread starts, because it sets the environment.
pub fn ensure_runtime_dir() {
    if std::env::var_os("XDG_RUNTIME_DIR").is_some() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("coto-runtime-{}", std::env::var("USER").unwrap_or_default()));
    if std::fs::create_dir_all(&dir).is_err() {
        return;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700));
    }
    // SAFETY: called at the start of main, before any other thread exists.
    unsafe { std::env::set_var("XDG_RUNTIME_DIR", &dir) };
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

/// Flags that say how to read a data file.
#[derive(Debug, Clone, Args)]
pub struct DataArgs {
    /// Layout of the data files. Default: auto-detected from the extension and first line.
    #[arg(long, value_enum)]
    pub format: Option<FormatArg>,
    /// Column (JSON field) with the text. Default: text.
    #[arg(long, value_name = "NAME")]
    pub text_column: Option<String>,
    /// Column (JSON field) with the label. Default: label.
    #[arg(long, value_name = "NAME")]
    pub label_column: Option<String>,
    /// Lines that are not valid UTF-8: stop with an error naming the line, or skip them.
    #[arg(long, value_enum, default_value_t = Utf8Arg::Stop)]
    pub invalid_utf8: Utf8Arg,
}

/// `--invalid-utf8` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Utf8Arg {
    /// Stop with an error naming the first such line.
    Stop,
    /// Skip such lines and log their numbers.
    Skip,
}

/// `--format` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FormatArg {
    /// Comma-separated with a header row.
    Csv,
    /// Tab-separated with a header row.
    Tsv,
    /// One JSON object per line.
    Jsonl,
    /// `label<TAB>text` lines without a header.
    LabelFirst,
}

impl DataArgs {
    /// The reader options these flags select.
    pub fn options(&self) -> DataOptions {
        let mut options = DataOptions::default();
        if let Some(format) = self.format {
            options.format = match format {
                FormatArg::Csv => DataFormat::Csv,
                FormatArg::Tsv => DataFormat::Tsv,
                FormatArg::Jsonl => DataFormat::Jsonl,
                FormatArg::LabelFirst => DataFormat::LabelFirst,
            };
        }
        if let Some(column) = &self.text_column {
            options.text_column = column.clone();
        }
        if let Some(column) = &self.label_column {
            options.label_column = column.clone();
        }
        options.invalid_utf8 = match self.invalid_utf8 {
            Utf8Arg::Stop => InvalidUtf8::Stop,
            Utf8Arg::Skip => InvalidUtf8::Skip,
        };
        options
    }
}

/// Reads labelled examples and maps their labels with `labels` (an adapter's label map).
pub fn read_examples(path: &Path, options: &DataOptions, labels: &LabelMap) -> Result<Vec<Example>> {
    let records = read_file(path, options)?;
    records
        .into_iter()
        .map(|record| {
            let label = labels.id(&record.label).map_err(|_| {
                anyhow::anyhow!(
                    "{}: line {}: label {:?} is not one of the adapter's labels {:?}",
                    path.display(),
                    record.line,
                    record.label,
                    labels.names()
                )
            })?;
            Ok(Example { text: record.text, label })
        })
        .collect()
}

/// An adapter directory read from disk, with the base model it applies to.
pub struct LoadedAdapter {
    /// The adapter files.
    pub files: AdapterFiles,
    /// The base checkpoint.
    pub checkpoint: Checkpoint,
}

impl LoadedAdapter {
    /// Reads the adapter in `dir` and its base: `model` if given, else the directory recorded in
    /// `coto_run.json` if it still exists, else the cached all-MiniLM-L6-v2. Texts are cut at
    /// `max_length` tokens, else at the adapter's training length, else at 128.
    pub fn read(dir: &Path, model: Option<&Path>, max_length: Option<usize>) -> Result<Self> {
        let files = load_adapter(dir).with_context(|| format!("cannot load the adapter in {}", dir.display()))?;
        let recorded = files
            .run
            .as_ref()
            .and_then(|r| r.base_model.as_ref())
            .map(PathBuf::from)
            .filter(|p| p.join("config.json").is_file());
        let base = match (model, recorded) {
            (Some(model), _) => model.to_path_buf(),
            (None, Some(recorded)) => recorded,
            (None, None) => model_dir(None)?,
        };
        // Without --max-length, texts are cut where training cut them.
        let trained_length = files.run.as_ref().and_then(|r| r.train.as_ref()).map(|t| t.max_length);
        let max_length = max_length.or(trained_length).unwrap_or(128);
        let checkpoint = load_checkpoint(&base, max_length)?;
        Ok(Self { files, checkpoint })
    }

    /// Builds the classifier on `device` from these files (or from `files`, a variant of them
    /// such as a merged or pruned adapter).
    pub fn classifier(&self, files: &AdapterFiles, device: &ComputeDevice) -> Result<(BertClassifier, LabelMap)> {
        Ok(files.apply(&self.checkpoint, &device.device)?)
    }

    /// The base model's tokenizer.
    pub fn tokenizer(&self) -> &TextTokenizer {
        &self.checkpoint.tokenizer
    }
}

/// Parses merge weights written as `1:1` or `0.7:0.3`, one per adapter.
pub fn parse_weights(text: Option<&str>, count: usize) -> Result<Vec<f64>> {
    let Some(text) = text else {
        return Ok(vec![1.0; count]);
    };
    let weights = text
        .split(':')
        .map(|w| w.trim().parse::<f64>())
        .collect::<std::result::Result<Vec<_>, _>>()
        .with_context(|| format!("invalid --weights {text:?}: write numbers separated by colons, e.g. 1:1"))?;
    if weights.len() != count {
        bail!("--weights {text:?} has {} values for {count} adapters; give one per adapter", weights.len());
    }
    Ok(weights)
}
