//! Labelled text: reading CSV, TSV, JSONL and label-first TSV files, the label map, a seeded
//! stratified split, and the per-epoch batch order.

mod labels;
mod order;
mod read;
mod split;

pub use labels::LabelMap;
pub use order::EpochOrder;
pub use read::{DataFormat, DataOptions, InvalidUtf8, RawRecord, read_file, read_records};
pub use split::{Dataset, Example, prepare_dataset};
