//! Converters for the experiment tasks' raw files into labelled records: BBC News articles (one
//! text file per article, the folder naming the topic) and tweets with sentiment labels whose
//! text is partly damaged by a wrong encoding.

use std::path::Path;

use super::read::RawRecord;
use crate::error::{CotoError, Result};

/// What cleaning did to a raw corpus.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Cleaning {
    /// Records read.
    pub records: usize,
    /// Records whose text had bytes that are not UTF-8, removed or replaced.
    pub cleaned: usize,
    /// Records dropped (no text left after cleaning, or no label).
    pub skipped: usize,
}

/// Reads BBC News articles from `dir/<topic>/<NNN>.txt`: the topic is the label, and the text
/// is the article with its lines joined by spaces. Bytes that are not UTF-8 are replaced with
/// U+FFFD and counted.
pub fn bbc_news_records(dir: &Path) -> Result<(Vec<RawRecord>, Cleaning)> {
    let mut topics: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| CotoError::io("failed to list", dir, e))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.is_dir())
        .collect();
    topics.sort();
    let mut records = Vec::new();
    let mut cleaning = Cleaning::default();
    for topic in topics {
        let label = topic.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let mut files: Vec<_> = std::fs::read_dir(&topic)
            .map_err(|e| CotoError::io("failed to list", &topic, e))?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|path| path.extension().is_some_and(|e| e == "txt"))
            .collect();
        files.sort();
        for file in files {
            let bytes = std::fs::read(&file).map_err(|e| CotoError::io("failed to read", &file, e))?;
            cleaning.records += 1;
            let text = match String::from_utf8(bytes) {
                Ok(text) => text,
                Err(error) => {
                    cleaning.cleaned += 1;
                    String::from_utf8_lossy(error.as_bytes()).into_owned()
                }
            };
            let text = collapse_whitespace(&text);
            if text.is_empty() {
                cleaning.skipped += 1;
                continue;
            }
            records.push(RawRecord {
                text,
                label: label.clone(),
                line: records.len() + 1,
            });
        }
    }
    Ok((records, cleaning))
}

/// Reads the tweets CSV (`sentiment,confidence,text`). A text that is not valid UTF-8 holds
/// emoji and punctuation mangled by a wrong encoding: its non-ASCII bytes are removed, and it
/// is dropped if nothing is left.
pub fn twitter_sentiment_records(bytes: &[u8], source: &str) -> Result<(Vec<RawRecord>, Cleaning)> {
    let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(bytes);
    let mut records = Vec::new();
    let mut cleaning = Cleaning::default();
    for (index, row) in reader.byte_records().enumerate() {
        let row = row.map_err(|e| CotoError::Data {
            source_name: source.to_string(),
            message: format!("row {}: unreadable CSV ({e})", index + 2),
        })?;
        cleaning.records += 1;
        let label = row.get(0).map(|l| String::from_utf8_lossy(l).trim().to_string()).unwrap_or_default();
        let raw = row.get(2).unwrap_or_default();
        let text = match std::str::from_utf8(raw) {
            Ok(text) => text.to_string(),
            Err(_) => {
                cleaning.cleaned += 1;
                raw.iter().filter(|b| b.is_ascii()).map(|&b| b as char).collect()
            }
        };
        let text = collapse_whitespace(&text);
        if text.is_empty() || label.is_empty() {
            cleaning.skipped += 1;
            continue;
        }
        records.push(RawRecord {
            text,
            label,
            line: index + 2,
        });
    }
    Ok((records, cleaning))
}

/// Writes records as `label<TAB>text` lines, the layout coto reads without flags. Tabs and line
/// breaks inside a text become spaces, so that each record stays one line.
pub fn records_to_tsv(records: &[RawRecord]) -> String {
    let mut out = String::new();
    for record in records {
        out.push_str(&record.label);
        out.push('\t');
        out.extend(record.text.chars().map(|c| if matches!(c, '\t' | '\n' | '\r') { ' ' } else { c }));
        out.push('\n');
    }
    out
}

fn collapse_whitespace(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}
