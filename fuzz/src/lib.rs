//! What each fuzz target does with its input, shared with the regression test
//! (`tests/fuzz_regressions.rs`) that replays the inputs under `tests/fixtures/fuzz/`.
//!
//! Every function feeds arbitrary bytes to a reader of outside files. A reader may reject the
//! input with an error, but it must never panic, hang or run out of memory.

use std::path::Path;

use coto::adapter::AdapterFiles;
use coto::data::{DataFormat, DataOptions, InvalidUtf8, prepare_dataset, read_records};
use coto::model::{BertConfig, WeightMap};
use coto::train::TrainConfig;

/// Feeds the data readers: the first byte picks the format and the invalid-UTF-8 handling, the rest is
/// the file. Records that parse then go through the stratified split.
pub fn data_readers(data: &[u8]) {
    let Some((&selector, file)) = data.split_first() else { return };
    let format = [DataFormat::Auto, DataFormat::Csv, DataFormat::Tsv, DataFormat::Jsonl, DataFormat::LabelFirst]
        [usize::from(selector % 5)];
    let invalid_utf8 = if selector & 0x80 == 0 { InvalidUtf8::Stop } else { InvalidUtf8::Skip };
    let options = DataOptions { format, invalid_utf8, ..DataOptions::default() };
    if let Ok(records) = read_records(file, "fuzz input", &options) {
        let _ = prepare_dataset(records, None, 0.1, u64::from(selector), "fuzz input");
    }
}

/// Feeds the settings readers: the first byte picks the `coto train --config` TOML reader or the
/// model's `config.json` reader, the rest is the text.
pub fn config_readers(data: &[u8]) {
    let Some((&selector, text)) = data.split_first() else { return };
    let text = String::from_utf8_lossy(text);
    if selector % 2 == 0 {
        let _ = TrainConfig::from_toml(&text, "fuzz.toml");
    } else {
        let _ = BertConfig::from_json(&text, Path::new("config.json"));
    }
}

/// Feeds the adapter loader: the first two bytes give the length of the `adapter_model.safetensors`
/// part, the rest is `adapter_config.json`. Both are parsed together as a PEFT adapter, and the
/// safetensors part alone as a model's weights.
pub fn adapter_files(data: &[u8]) {
    let Some((length, rest)) = data.split_first_chunk::<2>() else { return };
    let split = usize::from(u16::from_le_bytes(*length)).min(rest.len());
    let (weights, config) = rest.split_at(split);
    let config = String::from_utf8_lossy(config);
    let _ = AdapterFiles::from_bytes(weights, &config, None, Path::new("fuzz-adapter"));
    if let Ok(map) = WeightMap::from_bytes(weights, Path::new("model.safetensors")) {
        for name in map.names() {
            let _ = map.get(name, &[1]);
        }
    }
}
