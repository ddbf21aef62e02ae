//! Merging adapters trained on the same base: the weighted sum of their updates
//! `ΔW = Σ wᵢ·scalingᵢ·Bᵢ·Aᵢ`, kept exact by concatenating ranks or truncated back to a rank by
//! SVD.

use super::files::{AdapterFiles, RunInfo};
use super::peft::{TargetModules, head_tensor_name, lora_tensor_name};
use crate::error::{CotoError, Result};
use crate::linalg::{Matrix, svd_of_product};
use crate::model::{HostTensor, WeightMap};

/// How the summed update is represented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MergeMethod {
    /// Concatenated ranks: `A = [A₁; A₂; …]`, `B = [w₁s₁B₁, w₂s₂B₂, …]`, exactly `Σ wᵢ sᵢ Bᵢ Aᵢ`
    /// at rank `Σ rᵢ`.
    Linear,
    /// The same as [`MergeMethod::Linear`] (PEFT's name for the concatenation).
    Cat,
    /// The best rank-`r` approximation of the sum (truncated SVD), `r` by default the largest
    /// input rank.
    Svd,
}

/// Which classification head the merged adapter carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadChoice {
    /// The first adapter's head (for a multi-task merge, evaluate each task with its own head).
    First,
    /// The weighted average of the heads (same-task merges; the label sets must agree).
    Average,
}

/// Merges `adapters` with `weights`. Fails when they were trained on different bases, adapt
/// different modules, or have different shapes.
pub fn merge_adapters(
    adapters: &[&AdapterFiles],
    weights: &[f64],
    method: MergeMethod,
    rank: Option<usize>,
    head: HeadChoice,
) -> Result<AdapterFiles> {
    check_compatible(adapters, weights)?;
    let first = adapters[0];
    let slots = first.slot_names();
    let mut merged = WeightMap::new("merged adapter");
    let mut merged_rank = 0;
    for slot in &slots {
        let mut a_rows: Vec<Matrix> = Vec::new();
        let mut b_cols: Vec<Matrix> = Vec::new();
        for (adapter, &weight) in adapters.iter().zip(weights) {
            let (a, b) = adapter.factors(slot)?;
            a_rows.push(Matrix::from_f32(a.shape[0], a.shape[1], &a.data));
            b_cols.push(Matrix::from_f32(b.shape[0], b.shape[1], &b.data).scale(weight * adapter.scaling()));
        }
        let a_cat = stack_rows(&a_rows);
        let b_cat = stack_columns(&b_cols);
        let (a_new, b_new) = match method {
            MergeMethod::Linear | MergeMethod::Cat => (a_cat, b_cat),
            MergeMethod::Svd => {
                let r = rank.unwrap_or_else(|| a_rows.iter().map(|a| a.rows).max().unwrap_or(1));
                truncate(&b_cat, &a_cat, r)
            }
        };
        merged_rank = a_new.rows;
        merged.insert(lora_tensor_name(slot, "lora_A"), HostTensor::new(vec![a_new.rows, a_new.cols], a_new.to_f32()));
        merged.insert(lora_tensor_name(slot, "lora_B"), HostTensor::new(vec![b_new.rows, b_new.cols], b_new.to_f32()));
    }

    let (weight, bias) = match head {
        HeadChoice::First => {
            let (w, b) = first.head()?;
            (w.clone(), b.clone())
        }
        HeadChoice::Average => average_heads(adapters, weights)?,
    };
    merged.insert(head_tensor_name("weight"), weight);
    merged.insert(head_tensor_name("bias"), bias);

    // The scaling is folded into B, so the merged adapter has lora_alpha = r (scaling 1).
    let mut config = first.config.clone();
    config.r = merged_rank;
    config.lora_alpha = merged_rank as f64;
    config.use_rslora = false;
    let method_name = format!("{method:?}").to_lowercase();
    let run = RunInfo {
        coto_version: env!("CARGO_PKG_VERSION").into(),
        labels: first.labels()?.names().to_vec(),
        train: None,
        steps: 0,
        metrics: None,
        base_model: first.run.as_ref().and_then(|r| r.base_model.clone()),
        origin: Some(format!("merge ({method_name}) of {} adapters with weights {weights:?}", adapters.len())),
    };
    Ok(AdapterFiles {
        weights: merged,
        config,
        run: Some(run),
    })
}

fn check_compatible(adapters: &[&AdapterFiles], weights: &[f64]) -> Result<()> {
    if adapters.len() < 2 {
        return Err(CotoError::setting("adapters", adapters.len(), "merging needs at least two adapters"));
    }
    if weights.len() != adapters.len() {
        return Err(CotoError::setting(
            "weights",
            format!("{weights:?}"),
            format!("give one weight per adapter ({} adapters)", adapters.len()),
        ));
    }
    let first = adapters[0];
    first.check_supported()?;
    for adapter in adapters {
        if adapter.config.use_dora || adapter.is_hira() {
            return Err(CotoError::setting(
                "adapters",
                if adapter.config.use_dora { "DoRA" } else { "HiRA" },
                "merging sums low-rank updates B·A, which DoRA and HiRA adapters are not; \
                 evaluate them as an ensemble instead",
            ));
        }
    }
    let slots = first.slot_names();
    let targets = |a: &AdapterFiles| match &a.config.target_modules {
        TargetModules::List(list) => {
            let mut list = list.clone();
            list.sort();
            list
        }
        TargetModules::Regex(pattern) => vec![pattern.clone()],
    };
    for (index, other) in adapters.iter().enumerate().skip(1) {
        other.check_supported()?;
        let fail = |what: String| {
            Err(CotoError::setting(
                "adapters",
                format!("adapter {} of {}", index + 1, adapters.len()),
                format!("{what}; only adapters trained on the same base with the same modules merge"),
            ))
        };
        let (base_a, base_b) = (
            first.run.as_ref().and_then(|r| r.base_model.as_deref()),
            other.run.as_ref().and_then(|r| r.base_model.as_deref()),
        );
        if let (Some(a), Some(b)) = (base_a, base_b)
            && base_name(a) != base_name(b)
        {
            return fail(format!("its base model is {b}, the first adapter's is {a}"));
        }
        if targets(other) != targets(first) || other.slot_names() != slots {
            return fail("it adapts other modules than the first adapter".into());
        }
        for slot in &slots {
            let (a0, b0) = first.factors(slot)?;
            let (a1, b1) = other.factors(slot)?;
            if a0.shape[1] != a1.shape[1] || b0.shape[0] != b1.shape[0] {
                return fail(format!("its `{slot}` has another shape"));
            }
        }
    }
    Ok(())
}

/// The directory name of a base model path, so that the same model fetched to two places
/// still matches.
fn base_name(path: &str) -> &str {
    path.trim_end_matches('/').rsplit('/').next().unwrap_or(path)
}

fn average_heads(adapters: &[&AdapterFiles], weights: &[f64]) -> Result<(HostTensor, HostTensor)> {
    let labels = adapters[0].labels()?;
    let total: f64 = weights.iter().sum();
    if total == 0.0 {
        return Err(CotoError::setting("weights", format!("{weights:?}"), "averaging heads needs weights that do not sum to 0"));
    }
    let (w0, b0) = adapters[0].head()?;
    let mut weight = vec![0f64; w0.data.len()];
    let mut bias = vec![0f64; b0.data.len()];
    for (adapter, &w) in adapters.iter().zip(weights) {
        if adapter.labels()? != labels {
            return Err(CotoError::setting(
                "head",
                "average",
                "the adapters have different label sets; keep each task's own head instead",
            ));
        }
        let (hw, hb) = adapter.head()?;
        weight.iter_mut().zip(&hw.data).for_each(|(t, &v)| *t += w * v as f64 / total);
        bias.iter_mut().zip(&hb.data).for_each(|(t, &v)| *t += w * v as f64 / total);
    }
    Ok((
        HostTensor::new(w0.shape.clone(), weight.iter().map(|&v| v as f32).collect()),
        HostTensor::new(b0.shape.clone(), bias.iter().map(|&v| v as f32).collect()),
    ))
}

fn stack_rows(parts: &[Matrix]) -> Matrix {
    let cols = parts[0].cols;
    let rows = parts.iter().map(|p| p.rows).sum();
    let data = parts.iter().flat_map(|p| p.data.iter().copied()).collect();
    Matrix { rows, cols, data }
}

fn stack_columns(parts: &[Matrix]) -> Matrix {
    let transposed: Vec<Matrix> = parts.iter().map(Matrix::transpose).collect();
    stack_rows(&transposed).transpose()
}

/// The best rank-`r` factors `(A: [r, in], B: [out, r])` of `B_cat · A_cat`.
fn truncate(b_cat: &Matrix, a_cat: &Matrix, r: usize) -> (Matrix, Matrix) {
    let svd = svd_of_product(b_cat, a_cat);
    let r = r.min(svd.s.len());
    let mut b = svd.u.columns(0, r);
    for row in 0..b.rows {
        for k in 0..r {
            b.set(row, k, b.at(row, k) * svd.s[k]);
        }
    }
    let a = svd.v.columns(0, r).transpose();
    (a, b)
}
