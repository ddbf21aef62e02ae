//! `coto merge`: combine adapters trained on the same base into one.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, ValueEnum};
use coto::adapter::{HeadChoice, load_adapter, merge_adapters, save_adapter};

use super::common::parse_weights;
use super::eval::MergeArg;

/// Arguments of `coto merge`.
#[derive(Debug, Args)]
pub struct MergeArgs {
    /// Adapter directories to merge (two or more).
    #[arg(value_name = "ADAPTER", num_args = 2.., required = true)]
    adapters: Vec<PathBuf>,
    /// One weight per adapter, e.g. 1:1 or 0.5:0.3:0.2. Default: all 1.
    #[arg(long, value_name = "W:W[:W]")]
    weights: Option<String>,
    /// linear and cat give exactly Σ wᵢ·scalingᵢ·Bᵢ·Aᵢ with the ranks concatenated; svd
    /// truncates that sum to --rank.
    #[arg(long, value_enum, default_value_t = MergeArg::Linear)]
    method: MergeArg,
    /// Rank of an svd merge. Default: the largest input rank.
    #[arg(long, value_name = "R")]
    rank: Option<usize>,
    /// Classification head of the result: the first adapter's, or the weighted average (same
    /// task and labels only).
    #[arg(long, value_enum, default_value_t = HeadArg::First)]
    head: HeadArg,
    /// Directory for the merged adapter.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
}

/// `--head` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum HeadArg {
    First,
    Average,
}

pub fn run(args: MergeArgs) -> Result<()> {
    let adapters = args.adapters.iter().map(|dir| load_adapter(dir)).collect::<coto::Result<Vec<_>>>()?;
    let weights = parse_weights(args.weights.as_deref(), adapters.len())?;
    let head = match args.head {
        HeadArg::First => HeadChoice::First,
        HeadArg::Average => HeadChoice::Average,
    };
    let refs: Vec<_> = adapters.iter().collect();
    let merged = merge_adapters(&refs, &weights, args.method.method(), args.rank, head)?;
    save_adapter(&merged, &args.out)?;
    println!("merged {} adapters (rank {}) into {}", adapters.len(), merged.config.r, args.out.display());
    Ok(())
}
