//! The library's error type. Every variant names the failing value and, where one exists, the fix.

use std::path::PathBuf;

/// Errors returned by the coto library.
#[derive(Debug, thiserror::Error)]
pub enum CotoError {
    /// A setting is outside its valid range.
    #[error("invalid setting `{name}` = {value}: {expected}")]
    InvalidSetting {
        /// The setting's name as the user writes it (CLI flag or config key).
        name: String,
        /// The rejected value, formatted.
        value: String,
        /// What a valid value looks like.
        expected: String,
    },

    /// Reading or writing a file failed.
    #[error("{action} {path}: {cause}")]
    Io {
        /// What was being done, e.g. "failed to read".
        action: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The operating-system error (part of the message, so not also reported as a source).
        cause: std::io::Error,
    },

    /// A JSON or TOML file could not be parsed.
    #[error("invalid {format} in {path}: {message}")]
    Parse {
        /// "JSON", "TOML" or "CSV".
        format: &'static str,
        /// The file that failed to parse.
        path: PathBuf,
        /// The parser's message, with line and column where it gives them.
        message: String,
    },

    /// A safetensors file is unreadable or misses a tensor the model needs.
    #[error("invalid weights in {path}: {message}")]
    Weights {
        /// The safetensors file.
        path: PathBuf,
        /// What is wrong, naming the tensor.
        message: String,
    },

    /// The tokenizer failed to load or to encode.
    #[error("tokenizer error ({context}): {message}")]
    Tokenizer {
        /// The file or text being processed.
        context: String,
        /// The tokenizers crate's message.
        message: String,
    },

    /// The labelled data is unusable.
    #[error("invalid data in {source_name}: {message}")]
    Data {
        /// The data file (or "inline data").
        source_name: String,
        /// What is wrong, with the line number where one applies.
        message: String,
    },

    /// A model asset could not be fetched or verified.
    #[error("fetching {asset} failed: {message}")]
    Fetch {
        /// The package or file being fetched.
        asset: String,
        /// What failed and what to do.
        message: String,
    },

    /// The loss or the gradient norm stopped being finite.
    #[error(
        "training diverged at step {step}: loss {loss}, gradient norm {grad_norm}; lower the learning \
         rate (--lr) or keep gradient clipping on (--max-grad-norm), and resume from the last checkpoint"
    )]
    Diverged {
        /// The optimizer step, from 1.
        step: usize,
        /// The step's loss.
        loss: f64,
        /// The gradient norm before clipping.
        grad_norm: f64,
    },

    /// The compute device could not be used.
    #[error("device error: {0}")]
    Device(String),
}

impl CotoError {
    /// Builds an [`CotoError::InvalidSetting`] from a name, a value and the valid range.
    pub fn setting(name: &str, value: impl std::fmt::Display, expected: impl Into<String>) -> Self {
        Self::InvalidSetting {
            name: name.to_string(),
            value: value.to_string(),
            expected: expected.into(),
        }
    }

    /// Builds an [`CotoError::Io`] for `path`.
    pub fn io(action: &'static str, path: impl Into<PathBuf>, cause: std::io::Error) -> Self {
        Self::Io {
            action,
            path: path.into(),
            cause,
        }
    }
}

/// The library's result type.
pub type Result<T> = std::result::Result<T, CotoError>;
