//! Linear mode connectivity between two adapters of the same task: the metric along the
//! straight line `ΔW(λ) = (1 − λ)·ΔW₁ + λ·ΔW₂` (heads interpolated the same way), and the
//! barrier, the largest drop below the line between the end points.

use serde::{Deserialize, Serialize};

use crate::adapter::{AdapterFiles, HeadChoice, MergeMethod, merge_adapters};
use crate::error::Result;

/// The metric along the interpolation path.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConnectivityReport {
    /// Interpolation weights `λ`, from 0 (the first adapter) to 1 (the second).
    pub lambdas: Vec<f64>,
    /// The metric at each `λ`.
    pub metrics: Vec<f64>,
    /// `max_λ [(1 − λ)·m(0) + λ·m(1) − m(λ)]`, at least 0.
    pub barrier: f64,
}

/// Evaluates `points` evenly spaced interpolations (11 in the usual plot) between `first` and
/// `second` with `evaluate`.
pub fn linear_mode_connectivity(
    first: &AdapterFiles,
    second: &AdapterFiles,
    points: usize,
    mut evaluate: impl FnMut(&AdapterFiles) -> Result<f64>,
) -> Result<ConnectivityReport> {
    let points = points.max(2);
    let lambdas: Vec<f64> = (0..points).map(|k| k as f64 / (points - 1) as f64).collect();
    let mut metrics = Vec::with_capacity(points);
    for &lambda in &lambdas {
        let merged = merge_adapters(&[first, second], &[1.0 - lambda, lambda], MergeMethod::Linear, None, HeadChoice::Average)?;
        metrics.push(evaluate(&merged)?);
    }
    let (start, end) = (metrics[0], metrics[points - 1]);
    let barrier = lambdas
        .iter()
        .zip(&metrics)
        .map(|(&lambda, &m)| (1.0 - lambda) * start + lambda * end - m)
        .fold(0.0, f64::max);
    Ok(ConnectivityReport {
        lambdas,
        metrics,
        barrier,
    })
}

impl ConnectivityReport {
    /// One CSV row per point: lambda, metric.
    pub fn to_csv(&self) -> String {
        let mut csv = String::from("lambda,metric\n");
        for (lambda, metric) in self.lambdas.iter().zip(&self.metrics) {
            csv.push_str(&format!("{lambda:.3},{metric:.6}\n"));
        }
        csv
    }

    /// The path as a line chart.
    pub fn chart(&self, title: &str, metric: &str) -> String {
        let series = super::svg::Series {
            label: format!("barrier {:.4}", self.barrier),
            points: self.lambdas.iter().copied().zip(self.metrics.iter().copied()).collect(),
        };
        super::svg::line_chart_svg(title, "λ (0: first adapter, 1: second)", metric, &[series])
    }
}
