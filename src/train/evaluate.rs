//! Inference over many texts: predictions of one model, of an ensemble, and metrics.

use super::metrics::{Metrics, argmax_rows, cross_entropy_rows};
use crate::coto::Gates;
use crate::data::Example;
use crate::error::{CotoError, Result};
use crate::model::{BertClassifier, TextTokenizer};
use burn::tensor::Tensor;

/// Predictions for a set of examples.
#[derive(Debug, Clone, PartialEq)]
pub struct Predictions {
    /// Logits, `[examples, classes]` row-major.
    pub logits: Vec<f32>,
    /// Predicted class ids.
    pub predicted: Vec<usize>,
}

/// Runs `model` (an inference copy, e.g. from `valid()`) on `texts` in batches of `batch_size`
/// with every adapter on. Texts are batched in order of length, so that each batch pads little,
/// and the results come back in the input order.
pub fn predict_texts(
    model: &BertClassifier,
    tokenizer: &TextTokenizer,
    texts: &[&str],
    batch_size: usize,
) -> Result<Predictions> {
    predict_texts_gated(model, tokenizer, texts, batch_size, &Gates::inference())
}

/// [`predict_texts`] with some adapters switched off by `gates` (for pruning and Shapley
/// analyses).
pub fn predict_texts_gated(
    model: &BertClassifier,
    tokenizer: &TextTokenizer,
    texts: &[&str],
    batch_size: usize,
    gates: &Gates,
) -> Result<Predictions> {
    let pending = PendingLogits::run(model, tokenizer, texts, batch_size, gates)?;
    let values = pending
        .outputs
        .iter()
        .map(|output| output.clone().into_data().try_into_vec_as::<f32>().map_err(conversion_error))
        .collect::<Result<Vec<_>>>()?;
    Ok(pending.assemble(values))
}

/// [`predict_texts`] without blocking on the device, for WebGPU in a browser.
pub async fn predict_texts_async(
    model: &BertClassifier,
    tokenizer: &TextTokenizer,
    texts: &[&str],
    batch_size: usize,
) -> Result<Predictions> {
    let pending = PendingLogits::run(model, tokenizer, texts, batch_size, &Gates::inference())?;
    let mut values = Vec::with_capacity(pending.outputs.len());
    for output in &pending.outputs {
        let data = output
            .clone()
            .into_data_async()
            .await
            .map_err(|e| CotoError::Device(format!("reading logits failed: {e:?}")))?;
        values.push(data.try_into_vec_as::<f32>().map_err(conversion_error)?);
    }
    Ok(pending.assemble(values))
}

/// Logits computed batch by batch, still on the device.
struct PendingLogits {
    classes: usize,
    count: usize,
    chunks: Vec<Vec<usize>>,
    outputs: Vec<Tensor<2>>,
}

impl PendingLogits {
    fn run(
        model: &BertClassifier,
        tokenizer: &TextTokenizer,
        texts: &[&str],
        batch_size: usize,
        gates: &Gates,
    ) -> Result<Self> {
        let device = model.classifier.weight.val().device();
        let ids = texts
            .iter()
            .map(|text| tokenizer.encode_ids(text))
            .collect::<Result<Vec<_>>>()?;
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| ids[i].len());
        let chunks: Vec<Vec<usize>> = order.chunks(batch_size.max(1)).map(<[usize]>::to_vec).collect();
        let outputs = chunks
            .iter()
            .map(|chunk| {
                let rows: Vec<&[u32]> = chunk.iter().map(|&i| ids[i].as_slice()).collect();
                let (input_ids, mask) = tokenizer.pad_batch(&rows).to_tensors(&device);
                model.forward(input_ids, mask, gates)
            })
            .collect();
        Ok(Self {
            classes: model.num_labels(),
            count: texts.len(),
            chunks,
            outputs,
        })
    }

    fn assemble(self, values: Vec<Vec<f32>>) -> Predictions {
        let classes = self.classes;
        let mut logits = vec![0f32; self.count * classes];
        for (chunk, output) in self.chunks.iter().zip(values) {
            for (row, &index) in output.chunks_exact(classes).zip(chunk) {
                logits[index * classes..(index + 1) * classes].copy_from_slice(row);
            }
        }
        let predicted = argmax_rows(&logits, classes);
        Predictions { logits, predicted }
    }
}

fn conversion_error(error: burn::tensor::DataError) -> CotoError {
    CotoError::Device(format!("logits are not float32: {error:?}"))
}

/// Averages the logits of several models (the same task, e.g. adapters from different seeds):
/// the ensemble that merging is compared against.
pub fn predict_ensemble(
    models: &[&BertClassifier],
    tokenizer: &TextTokenizer,
    texts: &[&str],
    batch_size: usize,
) -> Result<Predictions> {
    let first = models.first().ok_or_else(|| CotoError::setting("adapters", 0, "an ensemble needs at least one model"))?;
    let classes = first.num_labels();
    let mut sum = vec![0f32; texts.len() * classes];
    for model in models {
        if model.num_labels() != classes {
            return Err(CotoError::setting(
                "adapters",
                model.num_labels(),
                format!("every ensemble member needs {classes} classes"),
            ));
        }
        let predictions = predict_texts(model, tokenizer, texts, batch_size)?;
        sum.iter_mut().zip(&predictions.logits).for_each(|(s, &l)| *s += l);
    }
    let logits: Vec<f32> = sum.iter().map(|&s| s / models.len() as f32).collect();
    let predicted = argmax_rows(&logits, classes);
    Ok(Predictions { logits, predicted })
}

/// Loss, accuracy and macro-F1 of `predictions` against the gold labels of `examples`.
pub fn score(predictions: &Predictions, examples: &[Example], classes: usize) -> Metrics {
    let gold: Vec<usize> = examples.iter().map(|e| e.label).collect();
    let losses = cross_entropy_rows(&predictions.logits, classes, &gold);
    Metrics::compute(&predictions.predicted, &gold, &losses, classes)
}
