//! Readers for labelled text files.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{CotoError, Result};

/// The layout of a data file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum DataFormat {
    /// Decide from the extension and the first line (see [`read_records`]).
    #[default]
    Auto,
    /// Comma-separated values with a header row.
    Csv,
    /// Tab-separated values with a header row.
    Tsv,
    /// One JSON object per line.
    Jsonl,
    /// `label<TAB>text` lines without a header, as the SMS spam collection.
    LabelFirst,
}

/// How to read a data file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataOptions {
    /// The layout. Default: auto-detect.
    pub format: DataFormat,
    /// Column (or JSON field) holding the text. Default: `text`.
    pub text_column: String,
    /// Column (or JSON field) holding the label. Default: `label`.
    pub label_column: String,
    /// What a line that is not valid UTF-8 does. Default: stop with an error.
    pub invalid_utf8: InvalidUtf8,
}

/// Handling of lines that are not valid UTF-8.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum InvalidUtf8 {
    /// Stop with an error naming the first such line.
    #[default]
    Stop,
    /// Skip such lines, logging how many and which.
    Skip,
}

impl Default for DataOptions {
    fn default() -> Self {
        Self {
            format: DataFormat::Auto,
            text_column: "text".into(),
            label_column: "label".into(),
            invalid_utf8: InvalidUtf8::Stop,
        }
    }
}

/// One labelled text as read, before labels become ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawRecord {
    /// The text.
    pub text: String,
    /// The label string.
    pub label: String,
    /// 1-based line of the record in its file (the header is line 1 in CSV and TSV).
    pub line: usize,
}

/// Reads a data file; see [`read_records`].
pub fn read_file(path: &Path, options: &DataOptions) -> Result<Vec<RawRecord>> {
    let bytes = std::fs::read(path).map_err(|e| CotoError::io("failed to read data file", path, e))?;
    let format = match (options.format, path.extension().and_then(|e| e.to_str())) {
        (DataFormat::Auto, Some("jsonl" | "ndjson")) => DataFormat::Jsonl,
        (format, _) => format,
    };
    let options = DataOptions {
        format,
        ..options.clone()
    };
    read_records(&bytes, &path.display().to_string(), &options)
}

/// Parses labelled records from `bytes`; `source` names the data in errors.
///
/// With [`DataFormat::Auto`], a first line with a tab is a TSV header if it names both columns
/// and a `label<TAB>text` record otherwise; any other first line is a CSV header. Records with
/// an empty text are skipped with a warning. Invalid UTF-8 is an error naming the line.
pub fn read_records(bytes: &[u8], source: &str, options: &DataOptions) -> Result<Vec<RawRecord>> {
    let fail = |message: String| CotoError::Data {
        source_name: source.to_string(),
        message,
    };
    let decoded = decode_utf8(bytes, options.invalid_utf8, source).map_err(fail)?;
    let text = decoded.strip_prefix('\u{feff}').unwrap_or(&decoded);
    if text.trim().is_empty() {
        return Err(fail("the file is empty".into()));
    }

    let format = match options.format {
        DataFormat::Auto => detect(text, options),
        format => format,
    };
    let records = match format {
        DataFormat::LabelFirst => read_label_first(text).map_err(fail)?,
        DataFormat::Jsonl => read_jsonl(text, options).map_err(fail)?,
        DataFormat::Csv => read_table(text, b',', options).map_err(fail)?,
        DataFormat::Tsv | DataFormat::Auto => read_table(text, b'\t', options).map_err(fail)?,
    };

    let total = records.len();
    let records: Vec<RawRecord> = records.into_iter().filter(|r| !r.text.trim().is_empty()).collect();
    if records.len() < total {
        tracing::warn!(source, skipped = total - records.len(), "skipped records with an empty text");
    }
    if records.is_empty() {
        return Err(fail("no records with a non-empty text".into()));
    }
    Ok(records)
}

/// Decodes the file as UTF-8: whole when it is valid, else line by line under `policy`.
fn decode_utf8(bytes: &[u8], policy: InvalidUtf8, source: &str) -> std::result::Result<String, String> {
    if let Ok(text) = std::str::from_utf8(bytes) {
        return Ok(text.to_string());
    }
    let mut kept = Vec::new();
    let mut bad_lines = Vec::new();
    for (index, line) in bytes.split(|&b| b == b'\n').enumerate() {
        match std::str::from_utf8(line) {
            Ok(line) => kept.push(line),
            Err(_) if policy == InvalidUtf8::Skip => bad_lines.push(index + 1),
            Err(_) => {
                return Err(format!(
                    "line {}: invalid UTF-8; re-save the file as UTF-8, or skip such lines with \
                     --invalid-utf8 skip",
                    index + 1
                ));
            }
        }
    }
    let shown: Vec<String> = bad_lines.iter().take(10).map(usize::to_string).collect();
    tracing::warn!(source, skipped = bad_lines.len(), lines = %shown.join(", "), "skipped lines that are not valid UTF-8");
    Ok(kept.join("\n"))
}

fn detect(text: &str, options: &DataOptions) -> DataFormat {
    let first = text.lines().next().unwrap_or_default();
    if first.trim_start().starts_with('{') {
        return DataFormat::Jsonl;
    }
    if first.contains('\t') {
        let fields: Vec<&str> = first.split('\t').map(str::trim).collect();
        let is_header = fields.contains(&options.text_column.as_str())
            && fields.contains(&options.label_column.as_str());
        return if is_header { DataFormat::Tsv } else { DataFormat::LabelFirst };
    }
    DataFormat::Csv
}

fn read_label_first(text: &str) -> std::result::Result<Vec<RawRecord>, String> {
    let mut records = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line_number = index + 1;
        if line.trim().is_empty() {
            continue;
        }
        let (label, body) = line.split_once('\t').ok_or_else(|| {
            format!("line {line_number}: expected `label<TAB>text`, found no tab")
        })?;
        records.push(RawRecord {
            text: body.trim().to_string(),
            label: label.trim().to_string(),
            line: line_number,
        });
    }
    Ok(records)
}

fn read_jsonl(text: &str, options: &DataOptions) -> std::result::Result<Vec<RawRecord>, String> {
    let mut records = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line_number = index + 1;
        if line.trim().is_empty() {
            continue;
        }
        let value: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| format!("line {line_number}: invalid JSON ({e})"))?;
        let field = |name: &str| -> std::result::Result<String, String> {
            match value.get(name) {
                Some(serde_json::Value::String(s)) => Ok(s.clone()),
                Some(serde_json::Value::Number(n)) => Ok(n.to_string()),
                Some(serde_json::Value::Bool(b)) => Ok(b.to_string()),
                Some(other) => Err(format!("line {line_number}: field `{name}` is {other}, expected a string")),
                None => Err(format!(
                    "line {line_number}: field `{name}` is missing; choose the field with --text-column / --label-column"
                )),
            }
        };
        records.push(RawRecord {
            text: field(&options.text_column)?,
            label: field(&options.label_column)?,
            line: line_number,
        });
    }
    Ok(records)
}

fn read_table(text: &str, delimiter: u8, options: &DataOptions) -> std::result::Result<Vec<RawRecord>, String> {
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .flexible(true)
        .from_reader(text.as_bytes());
    let headers = reader.headers().map_err(|e| format!("unreadable header: {e}"))?.clone();
    let column = |name: &str| {
        headers.iter().position(|h| h.trim() == name).ok_or_else(|| {
            let found: Vec<&str> = headers.iter().collect();
            format!(
                "column `{name}` not found; the header has {found:?}; choose columns with \
                 --text-column and --label-column"
            )
        })
    };
    let (text_index, label_index) = (column(&options.text_column)?, column(&options.label_column)?);
    let mut records = Vec::new();
    for row in reader.records() {
        let row = row.map_err(|e| format!("unreadable row: {e}"))?;
        let line_number = row.position().map(|p| p.line() as usize).unwrap_or(0);
        let cell = |index: usize| {
            row.get(index).map(str::to_string).ok_or_else(|| {
                format!("line {line_number}: the row has {} fields, too few for the chosen columns", row.len())
            })
        };
        records.push(RawRecord {
            text: cell(text_index)?,
            label: cell(label_index)?.trim().to_string(),
            line: line_number,
        });
    }
    Ok(records)
}
