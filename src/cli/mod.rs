//! Command-line interface: argument parsing and one module per subcommand.

mod analyze;
mod bench;
mod bench_kernels;
mod common;
mod embed;
mod eval;
mod experiment;
mod experiment_report;
mod export;
mod fetch;
mod merge;
mod predict;
mod prune;
mod serve;
mod tasks;
mod train;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Fine-tune pretrained transformers with LoRA adapters under the CoTo schedule, on a WebGPU
/// adapter or the CPU.
#[derive(Debug, Parser)]
#[command(name = "coto", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Fine-tune a BERT classifier with LoRA (CoTo by default) and save the adapter.
    Train(Box<train::TrainArgs>),
    /// Print mean-pooled, L2-normalised sentence embeddings as JSON lines.
    Embed(embed::EmbedArgs),
    /// Download the default model and dataset into the cache.
    Fetch(fetch::FetchArgs),
    /// Measure training throughput for plain LoRA and for CoTo at several p.
    Bench(bench::BenchArgs),
    /// Evaluate an adapter (or a merge, pruning or ensemble of adapters) on labelled data.
    Eval(Box<eval::EvalArgs>),
    /// Classify texts with a saved adapter, one JSON line per text.
    Predict(predict::PredictArgs),
    /// Merge adapters trained on the same base into one.
    Merge(merge::MergeArgs),
    /// Drop adapters by layer or module, or zero the smallest entries of each update.
    Prune(Box<prune::PruneArgs>),
    /// Write the base model with an adapter merged in as a Hugging Face checkpoint.
    Export(export::ExportArgs),
    /// Serve the web page, the WASM package, the model and the data on 127.0.0.1.
    Serve(serve::ServeArgs),
    /// Shapley values of adapters, linear mode connectivity, and dropout stability.
    Analyze(Box<analyze::AnalyzeArgs>),
    /// LoRA against CoTo on three tasks and several seeds, with merging, pruning and analyses.
    Experiment(experiment::ExperimentArgs),
}

/// Parses the arguments, runs the subcommand and maps errors to a message and exit code 1.
pub fn main() -> ExitCode {
    common::tune_allocator();
    common::ensure_runtime_dir();
    let cli = Cli::parse();
    common::init_logging();
    let result = match cli.command {
        Command::Train(args) => train::run(*args),
        Command::Embed(args) => embed::run(args),
        Command::Fetch(args) => fetch::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Eval(args) => eval::run(*args),
        Command::Predict(args) => predict::run(args),
        Command::Merge(args) => merge::run(args),
        Command::Prune(args) => prune::run(*args),
        Command::Export(args) => export::run(args),
        Command::Serve(args) => serve::run(args),
        Command::Analyze(args) => analyze::run(*args),
        Command::Experiment(args) => experiment::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
