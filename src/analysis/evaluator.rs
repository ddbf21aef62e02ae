//! Evaluating adapters on a fixed set of examples, with chosen adapters switched off: the
//! function every analysis calls many times.

use burn::module::Module;
use burn::tensor::Device;

use super::AnalysisMetric;
use crate::adapter::AdapterFiles;
use crate::coto::Gates;
use crate::data::Example;
use crate::error::Result;
use crate::model::{BertClassifier, Checkpoint};
use crate::train::{Metrics, predict_texts_gated, score};

/// A base model, evaluation examples and a metric.
pub struct Evaluator<'a> {
    checkpoint: &'a Checkpoint,
    examples: &'a [Example],
    device: Device,
    metric: AnalysisMetric,
    batch_size: usize,
}

impl<'a> Evaluator<'a> {
    /// An evaluator of adapters on `checkpoint` over `examples`.
    pub fn new(checkpoint: &'a Checkpoint, examples: &'a [Example], device: Device, metric: AnalysisMetric) -> Self {
        Self {
            checkpoint,
            examples,
            device,
            metric,
            batch_size: 64,
        }
    }

    /// Builds the inference model of `files`.
    pub fn model(&self, files: &AdapterFiles) -> Result<BertClassifier> {
        Ok(files.apply(self.checkpoint, &self.device)?.0.valid())
    }

    /// Full metrics of `model` with `gates`.
    pub fn metrics(&self, model: &BertClassifier, gates: &Gates) -> Result<Metrics> {
        let texts: Vec<&str> = self.examples.iter().map(|e| e.text.as_str()).collect();
        let predictions = predict_texts_gated(model, &self.checkpoint.tokenizer, &texts, self.batch_size, gates)?;
        Ok(score(&predictions, self.examples, model.num_labels()))
    }

    /// The analysis metric of `model` with `gates`.
    pub fn metric(&self, model: &BertClassifier, gates: &Gates) -> Result<f64> {
        Ok(self.metric.of(&self.metrics(model, gates)?))
    }

    /// The analysis metric of `files` with every adapter on.
    pub fn metric_of(&self, files: &AdapterFiles) -> Result<f64> {
        self.metric(&self.model(files)?, &Gates::inference())
    }
}
