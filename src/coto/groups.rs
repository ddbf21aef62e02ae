//! Grouping of adapters into CoTo groups: all adapters of a group switch on and off together.

use serde::{Deserialize, Serialize};

use crate::error::{CotoError, Result};

/// One adapter of a model, as the grouping sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdapterSlot {
    /// Position in the model's gate vector.
    pub index: usize,
    /// Full module path in Hugging Face naming, e.g. `encoder.layer.3.attention.self.query`.
    pub name: String,
    /// Transformer layer that holds the adapter.
    pub layer: usize,
}

/// How adapters are grouped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Grouping {
    /// One group per transformer layer: e.g. a layer's query and value adapters switch together.
    #[default]
    Layer,
    /// One group per adapter.
    Adapter,
    /// Explicit groups. Each entry is a module path or a dotted prefix of one
    /// (`encoder.layer.0` covers every adapter of layer 0); every adapter must fall in exactly
    /// one group.
    Custom(Vec<Vec<String>>),
}

/// The resolved groups: for each group, the indices of its adapters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdapterGroups {
    members: Vec<Vec<usize>>,
    adapter_count: usize,
}

impl AdapterGroups {
    /// Resolves `grouping` against the model's adapters.
    pub fn build(grouping: &Grouping, adapters: &[AdapterSlot]) -> Result<Self> {
        if adapters.is_empty() {
            return Err(CotoError::setting(
                "target_modules",
                "(none matched)",
                "the model has no adapters to group; name at least one target module",
            ));
        }
        let members = match grouping {
            Grouping::Layer => {
                let mut layers: Vec<usize> = adapters.iter().map(|a| a.layer).collect();
                layers.sort_unstable();
                layers.dedup();
                layers
                    .iter()
                    .map(|&layer| {
                        adapters
                            .iter()
                            .filter(|a| a.layer == layer)
                            .map(|a| a.index)
                            .collect()
                    })
                    .collect()
            }
            Grouping::Adapter => adapters.iter().map(|a| vec![a.index]).collect(),
            Grouping::Custom(groups) => custom_groups(groups, adapters)?,
        };
        Ok(Self {
            members,
            adapter_count: adapters.len(),
        })
    }

    /// Builds groups from explicit index lists, checking that they partition `0..adapter_count`.
    pub fn from_indices(members: Vec<Vec<usize>>, adapter_count: usize) -> Result<Self> {
        let mut seen = vec![false; adapter_count];
        for (group, indices) in members.iter().enumerate() {
            if indices.is_empty() {
                return Err(CotoError::setting(
                    "groups",
                    format!("group {group}"),
                    "every group needs at least one adapter",
                ));
            }
            for &index in indices {
                if index >= adapter_count || seen[index] {
                    return Err(CotoError::setting(
                        "groups",
                        format!("adapter {index} in group {group}"),
                        format!(
                            "each adapter index in 0..{adapter_count} must appear in exactly one group"
                        ),
                    ));
                }
                seen[index] = true;
            }
        }
        if let Some(missing) = seen.iter().position(|&s| !s) {
            return Err(CotoError::setting(
                "groups",
                format!("adapter {missing}"),
                "every adapter must belong to a group",
            ));
        }
        Ok(Self {
            members,
            adapter_count,
        })
    }

    /// Number of groups.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether there are no groups (never true for a built value).
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Number of adapters covered.
    pub fn adapter_count(&self) -> usize {
        self.adapter_count
    }

    /// Adapter indices of each group.
    pub fn members(&self) -> &[Vec<usize>] {
        &self.members
    }
}

fn custom_groups(groups: &[Vec<String>], adapters: &[AdapterSlot]) -> Result<Vec<Vec<usize>>> {
    let mut members = Vec::with_capacity(groups.len());
    for (group, patterns) in groups.iter().enumerate() {
        let indices: Vec<usize> = adapters
            .iter()
            .filter(|a| patterns.iter().any(|p| path_matches(&a.name, p)))
            .map(|a| a.index)
            .collect();
        if indices.is_empty() {
            return Err(CotoError::setting(
                "groups",
                format!("{patterns:?}"),
                format!("group {group} matches no adapter; adapter names look like `{}`", adapters[0].name),
            ));
        }
        members.push(indices);
    }
    let checked = AdapterGroups::from_indices(members, adapters.len())?;
    Ok(checked.members)
}

/// Whether `name` is `prefix` or lies below it in the dotted module path.
fn path_matches(name: &str, prefix: &str) -> bool {
    name == prefix
        || name
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('.'))
}
