//! The BERT encoder, its classification head, tokenisation, and loading of Hugging Face
//! checkpoint directories.

mod bert;
mod classifier;
mod config;
mod dropout;
mod gelu;
mod inject;
mod tokenizer;
mod weights;

use std::path::{Path, PathBuf};

pub use bert::{
    BertAttention, BertEmbeddings, BertEncoder, BertIntermediate, BertLayer, BertModel, BertPooler,
    BertResidualOutput, BertSelfAttention,
};
pub use classifier::{BertClassifier, Pooling, l2_normalize, mean_pool};
pub use config::BertConfig;
pub use dropout::{apply_dropout, dropout_is_active, next_mask_key, seed_masks};
pub use gelu::exact_gelu;
pub use inject::{TARGETABLE_MODULES, adapter_slots, inject_lora, validate_targets};
pub use tokenizer::{EncodedBatch, TextTokenizer};
pub use weights::{HostTensor, WeightMap, linear_from_torch};

use crate::error::{CotoError, Result};

/// The three files of a Hugging Face checkpoint directory that coto reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelFiles {
    /// `config.json`.
    pub config: PathBuf,
    /// `model.safetensors`.
    pub weights: PathBuf,
    /// `tokenizer.json`.
    pub tokenizer: PathBuf,
}

impl ModelFiles {
    /// Locates the files in `dir`, failing with the first missing one.
    pub fn in_dir(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            return Err(CotoError::io(
                "model directory not found:",
                dir,
                std::io::Error::from(std::io::ErrorKind::NotFound),
            ));
        }
        let files = Self {
            config: dir.join("config.json"),
            weights: dir.join("model.safetensors"),
            tokenizer: dir.join("tokenizer.json"),
        };
        for path in [&files.config, &files.weights, &files.tokenizer] {
            if !path.is_file() {
                return Err(CotoError::Weights {
                    path: path.clone(),
                    message: "file is missing; a model directory needs config.json, model.safetensors \
                              and tokenizer.json (as saved by Hugging Face transformers)"
                        .into(),
                });
            }
        }
        Ok(files)
    }
}

/// A checkpoint read into host memory: configuration, tensors and tokenizer.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    /// `config.json`.
    pub config: BertConfig,
    /// The tensors, with any `bert.` prefix removed.
    pub weights: WeightMap,
    /// The tokenizer.
    pub tokenizer: TextTokenizer,
}

impl Checkpoint {
    /// Reads a checkpoint directory, truncating texts at `max_length` tokens.
    pub fn from_dir(dir: &Path, max_length: usize) -> Result<Self> {
        let files = ModelFiles::in_dir(dir)?;
        let config = BertConfig::from_file(&files.config)?;
        let weights = WeightMap::from_file(&files.weights)?;
        let tokenizer = TextTokenizer::from_file(&files.tokenizer, max_length)?;
        Self::from_parts(config, weights, tokenizer)
    }

    /// Assembles a checkpoint from parts read elsewhere (e.g. bytes in a browser), checking
    /// that they fit together.
    pub fn from_parts(config: BertConfig, weights: WeightMap, tokenizer: TextTokenizer) -> Result<Self> {
        let weights = weights.without_prefix("bert.");
        if tokenizer.vocab_size() > config.vocab_size {
            return Err(CotoError::Tokenizer {
                context: "tokenizer.json".into(),
                message: format!(
                    "the vocabulary has {} tokens but the model embeds only vocab_size = {}; \
                     use the tokenizer saved with this model",
                    tokenizer.vocab_size(),
                    config.vocab_size
                ),
            });
        }
        if tokenizer.max_length() > config.max_position_embeddings {
            return Err(CotoError::setting(
                "max_length",
                tokenizer.max_length(),
                format!("the model has {} position embeddings", config.max_position_embeddings),
            ));
        }
        Ok(Self {
            config,
            weights,
            tokenizer,
        })
    }
}
