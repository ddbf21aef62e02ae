//! `coto fetch`: download the default model and dataset into the cache.

use anyhow::Result;
use clap::Args;
use coto::assets::{self, MINILM, SMS_SPAM};

use super::tasks::Task;

/// Arguments of `coto fetch`. With no flag, the model and the default dataset are fetched.
#[derive(Debug, Args)]
pub struct FetchArgs {
    /// Fetch the model (all-MiniLM-L6-v2).
    #[arg(long)]
    model: bool,
    /// Fetch the default dataset (SMS spam collection).
    #[arg(long)]
    data: bool,
    /// Fetch and convert the experiment tasks (SMS spam, BBC News, Twitter sentiment) into
    /// `label<TAB>text` files.
    #[arg(long)]
    tasks: bool,
}

pub fn run(args: FetchArgs) -> Result<()> {
    let default = !args.model && !args.data && !args.tasks;
    for (wanted, asset) in [(args.model || default, &MINILM), (args.data || default, &SMS_SPAM)] {
        if wanted {
            let dir = assets::ensure(asset)?;
            println!("{}\t{}", asset.name, dir.display());
        }
    }
    if args.tasks {
        for task in Task::ALL {
            println!("{}\t{}", task.name(), task.prepare()?.display());
        }
    }
    Ok(())
}
