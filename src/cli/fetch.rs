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
    if args.model || default {
        println!("{}\t{}", MINILM.name, assets::ensure(&MINILM)?.display());
    }
    if args.data || default {
        let file = assets::ensure(&SMS_SPAM)?.join(SMS_SPAM.files[0].name);
        println!("{}\t{}", SMS_SPAM.name, file.display());
    }
    if args.tasks {
        for task in Task::ALL {
            println!("{}\t{}", task.name(), task.prepare()?.display());
        }
    }
    Ok(())
}
