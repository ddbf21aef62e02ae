//! `coto fetch`: download the default model and dataset into the cache.

use anyhow::Result;
use clap::Args;
use coto::assets::{self, MINILM, SMS_SPAM};

/// Arguments of `coto fetch`. With neither flag, both assets are fetched.
#[derive(Debug, Args)]
pub struct FetchArgs {
    /// Fetch the model (all-MiniLM-L6-v2).
    #[arg(long)]
    model: bool,
    /// Fetch the dataset (SMS spam collection).
    #[arg(long)]
    data: bool,
}

pub fn run(args: FetchArgs) -> Result<()> {
    let both = !args.model && !args.data;
    for (wanted, asset) in [(args.model || both, &MINILM), (args.data || both, &SMS_SPAM)] {
        if wanted {
            let dir = assets::ensure(asset)?;
            println!("{}\t{}", asset.name, dir.display());
        }
    }
    Ok(())
}
