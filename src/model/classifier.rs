//! Sequence classification on top of the encoder, as Hugging Face's
//! `BertForSequenceClassification`: pooled output, dropout, and a trainable `classifier` layer.

use burn::module::{Module, Param};
use burn::nn::{Dropout, DropoutConfig, Linear};
use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::bert::BertModel;
use super::config::BertConfig;
use super::dropout::apply_dropout;
use crate::coto::Gates;
use crate::error::{CotoError, Result};
use crate::rng::{CotoRng, standard_normal};

/// How a sequence is reduced to one vector before the classifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Pooling {
    /// The checkpoint's frozen pooler, `tanh(dense(h[CLS]))` (Hugging Face's default).
    #[default]
    Cls,
    /// The mean of the hidden states of the unmasked tokens.
    Mean,
}

/// BERT with a classification head. The encoder and pooler are frozen (apart from LoRA
/// adapters); the `classifier` layer trains in full, as PEFT's `modules_to_save`.
#[derive(Module, Debug)]
pub struct BertClassifier {
    /// `bert`.
    pub bert: BertModel,
    /// Dropout on the pooled output (the config's `hidden_dropout_prob`).
    pub dropout: Dropout,
    /// `classifier`, weight in burn's layout `[hidden, num_labels]`.
    pub classifier: Linear,
    /// Whether the pooled vector is the token mean ([`Pooling::Mean`]) rather than the pooler.
    pub mean_pooling: bool,
}

impl BertClassifier {
    /// Adds a new classifier for `num_labels` classes to `bert`, initialised as in Hugging Face
    /// (`weight ~ N(0, initializer_range²)`, zero bias) from `rng`.
    pub fn new(
        bert: BertModel,
        config: &BertConfig,
        num_labels: usize,
        pooling: Pooling,
        rng: &mut CotoRng,
        device: &Device,
    ) -> Result<Self> {
        if num_labels < 2 {
            return Err(CotoError::setting(
                "num_labels",
                num_labels,
                "a classifier needs at least two classes",
            ));
        }
        if pooling == Pooling::Cls && bert.pooler.is_none() {
            return Err(CotoError::setting(
                "pooling",
                "cls",
                "the checkpoint has no pooler.dense weights; use mean pooling",
            ));
        }
        let h = config.hidden_size;
        let weight: Vec<f32> = (0..h * num_labels)
            .map(|_| (standard_normal(rng) * config.initializer_range) as f32)
            .collect();
        let classifier = Linear {
            weight: Param::from_tensor(Tensor::from_data(TensorData::new(weight, [h, num_labels]), device)),
            bias: Some(Param::from_tensor(Tensor::zeros([num_labels], device))),
        };
        Ok(Self {
            bert,
            dropout: DropoutConfig::new(config.hidden_dropout_prob).init(),
            classifier,
            mean_pooling: pooling == Pooling::Mean,
        })
    }

    /// Number of classes.
    pub fn num_labels(&self) -> usize {
        self.classifier.weight.shape().dims::<2>()[1]
    }

    /// Computes logits `[batch, num_labels]` for token ids and attention mask `[batch, seq]`.
    pub fn forward(&self, input_ids: Tensor<2, Int>, attention_mask: Tensor<2, Int>, gates: &Gates) -> Tensor<2> {
        let hidden = self.bert.forward(input_ids, attention_mask.clone(), gates);
        let pooled = match (&self.bert.pooler, self.mean_pooling) {
            (Some(pooler), false) => pooler.forward(hidden),
            _ => mean_pool(hidden, attention_mask),
        };
        self.classifier.forward(apply_dropout(&self.dropout, pooled))
    }
}

/// Averages `hidden: [batch, seq, h]` over the positions where `attention_mask` is 1, giving
/// `[batch, h]`.
pub fn mean_pool(hidden: Tensor<3>, attention_mask: Tensor<2, Int>) -> Tensor<2> {
    let [batch, seq, h] = hidden.dims();
    let mask = attention_mask.float().reshape([batch, seq, 1]);
    let summed = (hidden * mask.clone()).sum_dim(1).reshape([batch, h]);
    let counts = mask.sum_dim(1).reshape([batch, 1]).clamp_min(1e-9);
    summed / counts
}

/// Scales each row of `x: [batch, h]` to unit L2 norm (norms below 1e-12 are treated as 1e-12,
/// as PyTorch's `F.normalize`).
pub fn l2_normalize(x: Tensor<2>) -> Tensor<2> {
    let norms = x.clone().powi_scalar(2).sum_dim(1).sqrt().clamp_min(1e-12);
    x / norms
}
