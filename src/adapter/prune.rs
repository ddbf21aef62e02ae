//! Pruning adapters: dropping whole adapters by layer or module, or zeroing the
//! smallest-magnitude entries of each update `ΔW`.

use std::str::FromStr;

use super::files::AdapterFiles;
use super::peft::lora_tensor_name;
use crate::error::{CotoError, Result};
use crate::linalg::{Matrix, svd};
use crate::model::HostTensor;

/// Which adapters to drop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrunePattern {
    /// Every odd layer (1, 3, 5, ...), keeping the even ones.
    EveryOther,
    /// The lowest third of the layers.
    Lower,
    /// The middle third of the layers.
    Middle,
    /// The highest third of the layers.
    Upper,
    /// Every adapter on modules matching this name (PEFT's suffix rule, e.g. `query`).
    Module(String),
    /// The listed layers.
    Layers(Vec<usize>),
}

impl FromStr for PrunePattern {
    type Err = CotoError;

    fn from_str(text: &str) -> Result<Self> {
        Ok(match text {
            "every-other" => Self::EveryOther,
            "lower" => Self::Lower,
            "middle" => Self::Middle,
            "upper" => Self::Upper,
            _ if text.starts_with("layers=") => {
                let layers = text["layers=".len()..]
                    .split(',')
                    .map(|n| n.trim().parse::<usize>())
                    .collect::<std::result::Result<Vec<_>, _>>()
                    .map_err(|_| CotoError::setting("pattern", text, "write layers as `layers=0,2,4`"))?;
                Self::Layers(layers)
            }
            _ if crate::model::validate_targets(&[text.to_string()]).is_ok() => Self::Module(text.to_string()),
            _ => {
                return Err(CotoError::setting(
                    "pattern",
                    text,
                    "expected every-other, lower, middle, upper, a module name (query, key, value, ...) \
                     or layers=0,2,4",
                ));
            }
        })
    }
}

impl PrunePattern {
    /// Whether the adapter at `slot` (e.g. `encoder.layer.3.attention.self.query`) of a model
    /// with `num_layers` layers is dropped. Thirds are `[0, round(L/3))`, `[round(L/3),
    /// round(2L/3))` and the rest.
    pub fn drops(&self, slot: &str, num_layers: usize) -> bool {
        let layer = slot.split('.').nth(2).and_then(|n| n.parse::<usize>().ok()).unwrap_or(usize::MAX);
        let third = |k: usize| ((num_layers * k) as f64 / 3.0).round() as usize;
        match self {
            Self::EveryOther => layer % 2 == 1,
            Self::Lower => layer < third(1),
            Self::Middle => (third(1)..third(2)).contains(&layer),
            Self::Upper => layer >= third(2) && layer < num_layers,
            Self::Module(name) => slot.ends_with(&format!(".{name}")),
            Self::Layers(layers) => layers.contains(&layer),
        }
    }
}

/// Returns `adapter` with the adapters selected by `pattern` switched off: their `A` and `B`
/// are zero, so `ΔW = 0` there and the files still load in PEFT unchanged.
pub fn prune_adapter(adapter: &AdapterFiles, pattern: &PrunePattern, num_layers: usize) -> Result<AdapterFiles> {
    if adapter.config.use_dora {
        return Err(CotoError::setting(
            "pattern",
            format!("{pattern:?}"),
            "a DoRA adapter with zero factors still rescales the weight by its magnitude vector, \
             so pruning DoRA adapters is not supported",
        ));
    }
    let mut pruned = adapter.clone();
    let mut dropped = 0;
    for slot in adapter.slot_names() {
        if !pattern.drops(&slot, num_layers) {
            continue;
        }
        dropped += 1;
        for factor in ["lora_A", "lora_B"] {
            let name = lora_tensor_name(&slot, factor);
            let tensor = adapter.weights.get_any(&name).expect("slot names come from the tensors");
            pruned.weights.insert(name, HostTensor::new(tensor.shape.clone(), vec![0.0; tensor.data.len()]));
        }
    }
    if dropped == 0 {
        return Err(CotoError::setting(
            "pattern",
            format!("{pattern:?}"),
            format!("selects none of the adapter's {} modules", adapter.slot_names().len()),
        ));
    }
    note_origin(&mut pruned, format!("pruned {dropped} adapters ({pattern:?})"));
    Ok(pruned)
}

/// Returns `adapter` with the fraction `sparsity` of smallest-magnitude entries of each `ΔW` set
/// to zero. The sparse updates are no longer low-rank, so each is stored exactly as factors of
/// its full rank (`B = U·Σ`, `A = Vᵀ` from its SVD), padded to one rank for all modules.
pub fn sparsify_adapter(adapter: &AdapterFiles, sparsity: f64) -> Result<AdapterFiles> {
    if adapter.config.use_dora || adapter.is_hira() {
        return Err(CotoError::setting(
            "sparsity",
            sparsity,
            "magnitude pruning works on low-rank updates B·A; DoRA and HiRA adapters are not supported",
        ));
    }
    if !(0.0..1.0).contains(&sparsity) {
        return Err(CotoError::setting("sparsity", sparsity, "expected a fraction in [0, 1)"));
    }
    let slots = adapter.slot_names();
    let mut factors = Vec::with_capacity(slots.len());
    for slot in &slots {
        let mut delta = adapter.delta(slot)?;
        zero_smallest(&mut delta, sparsity);
        let decomposition = svd(&delta);
        let largest = decomposition.s.first().copied().unwrap_or(0.0);
        let rank = decomposition.s.iter().filter(|&&s| s > largest * 1e-7).count().max(1);
        factors.push((slot, decomposition, rank));
    }
    let rank = factors.iter().map(|(_, _, r)| *r).max().unwrap_or(1);

    let mut sparse = adapter.clone();
    for (slot, decomposition, _) in factors {
        let (out, inp) = (decomposition.u.rows, decomposition.v.rows);
        let mut a = Matrix::zeros(rank, inp);
        let mut b = Matrix::zeros(out, rank);
        for k in 0..rank.min(decomposition.s.len()) {
            for i in 0..inp {
                a.set(k, i, decomposition.v.at(i, k));
            }
            for o in 0..out {
                b.set(o, k, decomposition.u.at(o, k) * decomposition.s[k]);
            }
        }
        sparse.weights.insert(lora_tensor_name(slot, "lora_A"), HostTensor::new(vec![rank, inp], a.to_f32()));
        sparse.weights.insert(lora_tensor_name(slot, "lora_B"), HostTensor::new(vec![out, rank], b.to_f32()));
    }
    // The factors hold the whole update, so scaling is 1: lora_alpha = r.
    sparse.config.r = rank;
    sparse.config.lora_alpha = rank as f64;
    sparse.config.use_rslora = false;
    note_origin(&mut sparse, format!("magnitude-pruned to sparsity {sparsity}"));
    Ok(sparse)
}

/// Sets the `fraction` of entries with the smallest magnitude to zero.
pub fn zero_smallest(matrix: &mut Matrix, fraction: f64) {
    let count = (matrix.data.len() as f64 * fraction).round() as usize;
    if count == 0 {
        return;
    }
    let mut order: Vec<usize> = (0..matrix.data.len()).collect();
    order.sort_by(|&i, &j| matrix.data[i].abs().total_cmp(&matrix.data[j].abs()));
    for &index in &order[..count] {
        matrix.data[index] = 0.0;
    }
}

fn note_origin(adapter: &mut AdapterFiles, what: String) {
    if let Some(run) = adapter.run.as_mut() {
        run.origin = Some(match run.origin.take() {
            Some(previous) => format!("{previous}; {what}"),
            None => what,
        });
    }
}
