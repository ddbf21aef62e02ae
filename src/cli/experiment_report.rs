//! The results of `coto experiment` and their Markdown report.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;

use anyhow::Result;
use coto::analysis::{ConnectivityReport, ShapleyReport};
use coto::train::Metrics;
use serde::{Deserialize, Serialize};

use super::experiment::{METHODS, Plan, Preset, RunRecord, method_description};

/// A same-task merge and the ensemble of the same adapters.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MergeRecord {
    pub task: String,
    pub method: String,
    pub adapters: usize,
    pub merged: Metrics,
    pub ensemble: Metrics,
}

/// One pruned adapter.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PruneRecord {
    pub task: String,
    pub method: String,
    pub seed: u64,
    pub pattern: String,
    pub metrics: Metrics,
}

/// One task of a multi-task merge, evaluated with its own head.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MultiTaskRecord {
    pub task: String,
    pub method: String,
    pub seed: u64,
    pub metrics: Metrics,
}

/// Everything the experiment measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Results {
    pub plan: Plan,
    pub machine: String,
    pub minutes: f64,
    pub runs: Vec<RunRecord>,
    pub merges: Vec<MergeRecord>,
    pub pruning: Vec<PruneRecord>,
    pub multi_task: Vec<MultiTaskRecord>,
    pub shapley: BTreeMap<String, ShapleyReport>,
    pub connectivity: BTreeMap<String, ConnectivityReport>,
}

impl Default for Results {
    fn default() -> Self {
        Self {
            plan: Plan {
                preset: Preset::Quick,
                seeds: Vec::new(),
                max_steps: 0,
                max_length: 0,
                lr: 0.0,
                eval_examples: 0,
                analysis_examples: 0,
                shapley_samples: 0,
            },
            machine: String::new(),
            minutes: 0.0,
            runs: Vec::new(),
            merges: Vec::new(),
            pruning: Vec::new(),
            multi_task: Vec::new(),
            shapley: BTreeMap::new(),
            connectivity: BTreeMap::new(),
        }
    }
}

/// `mean ± std` in percent of a list of fractions (population standard deviation).
fn percent(values: &[f64]) -> String {
    if values.is_empty() {
        return "–".into();
    }
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    let std = (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / values.len() as f64).sqrt();
    format!("{:.1} ± {:.1}", 100.0 * mean, 100.0 * std)
}

fn tasks_of(results: &Results) -> Vec<String> {
    let mut tasks: Vec<String> = Vec::new();
    for run in &results.runs {
        if !tasks.contains(&run.task) {
            tasks.push(run.task.clone());
        }
    }
    tasks
}

/// Writes `report.md` into `out`.
pub fn write_report(results: &Results, out: &Path) -> Result<()> {
    let plan = &results.plan;
    let tasks = tasks_of(results);
    let mut md = String::new();
    let _ = writeln!(md, "# coto experiment ({:?} preset)\n", plan.preset);
    let _ = writeln!(
        md,
        "all-MiniLM-L6-v2 with LoRA r 8, alpha 16 on query and value; AdamW, lr {}, batch 16, max \
         length {}, at most {} steps per run; seeds {:?}. Metrics on the first {} examples of each \
         task's validation split (the same 10% split for every run); Shapley values and \
         connectivity on the first {} of those. {}; {:.0} minutes in all.\n",
        plan.lr, plan.max_length, plan.max_steps, plan.seeds, plan.eval_examples, plan.analysis_examples,
        results.machine, results.minutes
    );
    let _ = writeln!(md, "Methods:\n");
    for method in METHODS {
        let _ = writeln!(md, "- `{method}`: {}", method_description(method));
    }
    let _ = writeln!(md, "\nAll numbers are accuracy in percent, mean ± standard deviation over seeds, unless stated.\n");

    let _ = writeln!(md, "## Single adapters\n\n| task | method | accuracy | macro-F1 (%) | training time (s) |\n| --- | --- | --- | --- | --- |");
    for task in &tasks {
        for method in METHODS {
            let runs: Vec<&RunRecord> = results.runs.iter().filter(|r| &r.task == task && r.method == method).collect();
            let accuracy: Vec<f64> = runs.iter().map(|r| r.metrics.accuracy).collect();
            let f1: Vec<f64> = runs.iter().map(|r| r.metrics.macro_f1).collect();
            let seconds = runs.iter().map(|r| r.seconds).sum::<f64>() / runs.len().max(1) as f64;
            let _ = writeln!(md, "| {task} | {method} | {} | {} | {seconds:.0} |", percent(&accuracy), percent(&f1));
        }
    }

    let _ = writeln!(
        md,
        "\n## Merging adapters of the same task from different seeds\n\nLinear merge \
         (`ΔW = Σ ΔWᵢ`, heads averaged) against the ensemble that averages the same adapters' \
         logits.\n\n| task | method | adapters | merged | ensemble |\n| --- | --- | --- | --- | --- |"
    );
    for record in &results.merges {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {:.1} | {:.1} |",
            record.task,
            record.method,
            record.adapters,
            100.0 * record.merged.accuracy,
            100.0 * record.ensemble.accuracy
        );
    }

    let _ = writeln!(
        md,
        "\n## Pruning whole layers' adapters\n\n`every-other` drops layers 1, 3, 5; `lower` \
         layers 0 and 1; `upper` layers 4 and 5.\n\n| task | method | none | every-other | lower | upper |\n| --- | --- | --- | --- | --- | --- |"
    );
    for task in &tasks {
        for method in METHODS {
            let base: Vec<f64> = results
                .runs
                .iter()
                .filter(|r| &r.task == task && r.method == method)
                .map(|r| r.metrics.accuracy)
                .collect();
            let column = |pattern: &str| {
                let values: Vec<f64> = results
                    .pruning
                    .iter()
                    .filter(|p| &p.task == task && p.method == method && p.pattern == pattern)
                    .map(|p| p.metrics.accuracy)
                    .collect();
                percent(&values)
            };
            let _ = writeln!(
                md,
                "| {task} | {method} | {} | {} | {} | {} |",
                percent(&base),
                column("every-other"),
                column("lower"),
                column("upper")
            );
        }
    }

    if !results.multi_task.is_empty() {
        let _ = writeln!(
            md,
            "\n## Multi-task merge\n\nThe three tasks' adapters of one seed merged 1:1:1; each \
             task is evaluated with its own head. \"alone\" is the task's own adapter.\n\n| task | method | merged | alone |\n| --- | --- | --- | --- |"
        );
        for task in &tasks {
            for method in METHODS {
                let merged: Vec<f64> = results
                    .multi_task
                    .iter()
                    .filter(|m| &m.task == task && m.method == method)
                    .map(|m| m.metrics.accuracy)
                    .collect();
                let alone: Vec<f64> = results
                    .runs
                    .iter()
                    .filter(|r| &r.task == task && r.method == method)
                    .map(|r| r.metrics.accuracy)
                    .collect();
                let _ = writeln!(md, "| {task} | {method} | {} | {} |", percent(&merged), percent(&alone));
            }
        }
    }

    let _ = writeln!(
        md,
        "\n## Layer contributions (Shapley values)\n\nShapley value of each layer's adapters for \
         accuracy, estimated with the multilinear extension ({} samples, seed 1's adapter). \
         Balance is the normalised entropy of the positive values: 1 when all layers contribute \
         equally.\n\n| task | method | all on | all off | balance | values by layer (± standard error) | heatmap |\n| --- | --- | --- | --- | --- | --- | --- |",
        plan.shapley_samples
    );
    for (key, report) in &results.shapley {
        let (task, method) = key.split_once('/').unwrap_or((key, ""));
        let values: Vec<String> = report.values.iter().map(|v| format!("{:.3} ± {:.3}", v.value, v.std_error)).collect();
        let _ = writeln!(
            md,
            "| {task} | {method} | {:.1} | {:.1} | {:.2} | {} | [svg](analysis/{task}/{method}-shapley.svg) |",
            100.0 * report.all_on,
            100.0 * report.all_off,
            report.balance(),
            values.join(", ")
        );
    }

    let _ = writeln!(
        md,
        "\n## Linear mode connectivity\n\nAccuracy along `(1 − λ)·ΔW₁ + λ·ΔW₂` between seeds 1 and \
         2 (11 points); the barrier is the largest drop below the straight line between the \
         ends.\n\n| task | method | barrier | plot |\n| --- | --- | --- | --- |"
    );
    for (key, report) in &results.connectivity {
        let (task, method) = key.split_once('/').unwrap_or((key, ""));
        let _ = writeln!(md, "| {task} | {method} | {:.3} | [svg](analysis/{task}/lmc.svg) |", report.barrier);
    }
    coto::adapter::write_atomic(&out.join("report.md"), md.as_bytes())?;
    Ok(())
}
