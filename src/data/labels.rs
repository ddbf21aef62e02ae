//! The mapping between label strings and class ids.

use serde::{Deserialize, Serialize};

use crate::error::{CotoError, Result};

/// Class names in id order. Built from data, names are sorted, so the same label set always
/// gets the same ids.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabelMap {
    labels: Vec<String>,
}

impl LabelMap {
    /// The sorted distinct labels of `names`.
    pub fn from_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Self {
        let mut labels: Vec<String> = names.into_iter().map(str::to_string).collect();
        labels.sort_unstable();
        labels.dedup();
        Self { labels }
    }

    /// A map with the given labels in the given order (e.g. read from a saved adapter).
    pub fn from_ordered(labels: Vec<String>) -> Self {
        Self { labels }
    }

    /// Number of classes.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no classes.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The id of `label`; the error lists the known labels.
    pub fn id(&self, label: &str) -> Result<usize> {
        self.labels.iter().position(|l| l == label).ok_or_else(|| CotoError::Data {
            source_name: "label map".into(),
            message: format!("unknown label {label:?}; the known labels are {:?}", self.labels),
        })
    }

    /// The name of class `id`.
    pub fn name(&self, id: usize) -> &str {
        self.labels.get(id).map(String::as_str).unwrap_or("?")
    }

    /// All names in id order.
    pub fn names(&self) -> &[String] {
        &self.labels
    }
}
