//! Turning records into a labelled train/validation split.

use rand::seq::SliceRandom;

use super::labels::LabelMap;
use super::read::RawRecord;
use crate::error::{CotoError, Result};
use crate::rng;

/// A text with its class id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Example {
    /// The text.
    pub text: String,
    /// Class id in the dataset's [`LabelMap`].
    pub label: usize,
}

/// Training and validation examples with their label map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dataset {
    /// Examples to train on.
    pub train: Vec<Example>,
    /// Held-out examples for evaluation.
    pub validation: Vec<Example>,
    /// Class names.
    pub labels: LabelMap,
}

/// The generator stream reserved for the train/validation split.
const SPLIT_STREAM: u64 = 3;

/// Builds a dataset from `records`. With `validation` records, those are the validation set;
/// otherwise a seeded, stratified `validation_fraction` of each class is held out (at least one
/// example of every class that has two or more).
pub fn prepare_dataset(
    records: Vec<RawRecord>,
    validation: Option<Vec<RawRecord>>,
    validation_fraction: f64,
    seed: u64,
    source: &str,
) -> Result<Dataset> {
    let fail = |message: String| CotoError::Data {
        source_name: source.to_string(),
        message,
    };
    let labels = LabelMap::from_names(records.iter().map(|r| r.label.as_str()));
    if labels.len() < 2 {
        return Err(fail(format!(
            "only one class ({:?}) in {} records; a classifier needs at least two",
            labels.names(),
            records.len()
        )));
    }
    let to_example = |record: RawRecord| -> Result<Example> {
        let label = labels.id(&record.label).map_err(|_| {
            fail(format!(
                "line {}: label {:?} does not occur in the training data, whose labels are {:?}",
                record.line,
                record.label,
                labels.names()
            ))
        })?;
        Ok(Example {
            text: record.text,
            label,
        })
    };

    if let Some(validation) = validation {
        let train = records.into_iter().map(to_example).collect::<Result<Vec<_>>>()?;
        let validation = validation.into_iter().map(to_example).collect::<Result<Vec<_>>>()?;
        return Ok(Dataset {
            train,
            validation,
            labels,
        });
    }

    if !(validation_fraction > 0.0 && validation_fraction < 1.0) {
        return Err(CotoError::setting(
            "validation_fraction",
            validation_fraction,
            "expected a fraction in (0, 1), or give a separate validation file",
        ));
    }
    let mut by_class: Vec<Vec<Example>> = vec![Vec::new(); labels.len()];
    for record in records {
        let example = to_example(record)?;
        by_class[example.label].push(example);
    }
    let mut rng = rng::seeded(seed, SPLIT_STREAM);
    let (mut train, mut validation) = (Vec::new(), Vec::new());
    for mut class in by_class {
        class.shuffle(&mut rng);
        let held_out = if class.len() >= 2 {
            ((class.len() as f64 * validation_fraction).round() as usize).clamp(1, class.len() - 1)
        } else {
            0
        };
        validation.extend(class.drain(..held_out));
        train.extend(class);
    }
    train.shuffle(&mut rng);
    // Shuffled too, so that any prefix of the validation set is a sample of every class
    // (the loop above appends the classes one after another).
    validation.shuffle(&mut rng);
    Ok(Dataset {
        train,
        validation,
        labels,
    })
}
