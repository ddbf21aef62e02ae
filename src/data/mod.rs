//! Labelled text: reading CSV, TSV, JSONL and label-first TSV files, the label map, a seeded
//! stratified split, and the per-epoch batch order.

mod labels;
mod order;
mod read;
mod split;
mod tasks;

pub use labels::LabelMap;
pub use order::EpochOrder;
pub use read::{DataFormat, DataOptions, InvalidUtf8, RawRecord, read_file, read_records};
pub use split::{Dataset, Example, prepare_dataset};
pub use tasks::{Cleaning, bbc_news_records, records_to_tsv, twitter_sentiment_records};
