//! Command-line interface: argument parsing and one module per subcommand.

mod bench;
mod common;
mod embed;
mod fetch;
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
}

/// Parses the arguments, runs the subcommand and maps errors to a message and exit code 1.
pub fn main() -> ExitCode {
    common::tune_allocator();
    let cli = Cli::parse();
    common::init_logging();
    let result = match cli.command {
        Command::Train(args) => train::run(*args),
        Command::Embed(args) => embed::run(args),
        Command::Fetch(args) => fetch::run(args),
        Command::Bench(args) => bench::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
