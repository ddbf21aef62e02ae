//! Tokenisation through the checkpoint's `tokenizer.json`, with per-batch padding.

use std::path::Path;

use burn::tensor::{Device, Int, Tensor, TensorData};
use tokenizers::{Tokenizer, TruncationParams};

use crate::error::{CotoError, Result};

/// A Hugging Face tokenizer set up to truncate at `max_length` and never pad on its own:
/// [`TextTokenizer::encode_batch`] pads each batch to its longest text only.
#[derive(Clone)]
pub struct TextTokenizer {
    inner: Tokenizer,
    pad_id: u32,
    max_length: usize,
}

/// Token ids and attention mask of a batch, padded to its longest sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedBatch {
    /// Token ids, `[batch, seq]` row-major.
    pub input_ids: Vec<i64>,
    /// 1 for tokens, 0 for padding, `[batch, seq]` row-major.
    pub attention_mask: Vec<i64>,
    /// Number of texts.
    pub batch: usize,
    /// Padded sequence length.
    pub seq: usize,
}

impl EncodedBatch {
    /// Uploads ids and mask to `device`.
    pub fn to_tensors(&self, device: &Device) -> (Tensor<2, Int>, Tensor<2, Int>) {
        let shape = [self.batch, self.seq];
        let ids = Tensor::from_data(TensorData::new(self.input_ids.clone(), shape), device);
        let mask = Tensor::from_data(TensorData::new(self.attention_mask.clone(), shape), device);
        (ids, mask)
    }

    /// Number of real (unpadded) tokens.
    pub fn token_count(&self) -> usize {
        self.attention_mask.iter().filter(|&&m| m == 1).count()
    }
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTokenizer")
            .field("vocab_size", &self.inner.get_vocab_size(true))
            .field("pad_id", &self.pad_id)
            .field("max_length", &self.max_length)
            .finish()
    }
}

impl TextTokenizer {
    /// Loads `tokenizer.json` from a file.
    pub fn from_file(path: &Path, max_length: usize) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| CotoError::io("failed to read", path, e))?;
        Self::from_bytes(&bytes, &path.display().to_string(), max_length)
    }

    /// Loads `tokenizer.json` from its bytes; `source` names it in error messages.
    pub fn from_bytes(bytes: &[u8], source: &str, max_length: usize) -> Result<Self> {
        if max_length < 2 {
            return Err(CotoError::setting(
                "max_length",
                max_length,
                "expected at least 2 tokens ([CLS] and [SEP])",
            ));
        }
        let fail = |message: String| CotoError::Tokenizer {
            context: source.to_string(),
            message,
        };
        let mut inner = Tokenizer::from_bytes(bytes).map_err(|e| fail(e.to_string()))?;
        let pad_id = inner
            .get_padding()
            .map(|p| p.pad_id)
            .or_else(|| inner.token_to_id("[PAD]"))
            .unwrap_or(0);
        inner.with_padding(None);
        inner
            .with_truncation(Some(TruncationParams {
                max_length,
                ..TruncationParams::default()
            }))
            .map_err(|e| fail(e.to_string()))?;
        Ok(Self {
            inner,
            pad_id,
            max_length,
        })
    }

    /// Vocabulary size, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The truncation length in tokens.
    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// The tokens of `text` (for inspection and tests).
    pub fn tokens(&self, text: &str) -> Result<Vec<String>> {
        let encoding = self.encode_one(text)?;
        Ok(encoding.get_tokens().to_vec())
    }

    /// Encodes `texts`, truncated to `max_length` and padded to the longest of them.
    pub fn encode_batch(&self, texts: &[&str]) -> Result<EncodedBatch> {
        let ids = texts
            .iter()
            .map(|text| self.encode_ids(text))
            .collect::<Result<Vec<_>>>()?;
        let rows: Vec<&[u32]> = ids.iter().map(Vec::as_slice).collect();
        Ok(self.pad_batch(&rows))
    }

    /// Token ids of one text, with `[CLS]` and `[SEP]`, truncated to `max_length`.
    pub fn encode_ids(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self.encode_one(text)?.get_ids().to_vec())
    }

    /// Pads token-id rows to the longest of them.
    pub fn pad_batch(&self, rows: &[&[u32]]) -> EncodedBatch {
        let seq = rows.iter().map(|ids| ids.len()).max().unwrap_or(0);
        let mut input_ids = Vec::with_capacity(rows.len() * seq);
        let mut attention_mask = Vec::with_capacity(rows.len() * seq);
        for ids in rows {
            input_ids.extend(ids.iter().map(|&id| id as i64));
            attention_mask.extend(std::iter::repeat_n(1, ids.len()));
            input_ids.extend(std::iter::repeat_n(self.pad_id as i64, seq - ids.len()));
            attention_mask.extend(std::iter::repeat_n(0, seq - ids.len()));
        }
        EncodedBatch {
            input_ids,
            attention_mask,
            batch: rows.len(),
            seq,
        }
    }

    fn encode_one(&self, text: &str) -> Result<tokenizers::Encoding> {
        self.inner.encode(text, true).map_err(|e| CotoError::Tokenizer {
            context: format!("encoding {:?}", truncate_for_message(text)),
            message: e.to_string(),
        })
    }
}

fn truncate_for_message(text: &str) -> String {
    text.chars().take(60).collect()
}
