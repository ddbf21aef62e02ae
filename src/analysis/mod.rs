//! The CoTo paper's diagnostics of trained adapters: Shapley values of adapters (estimated with
//! the multilinear extension), linear mode connectivity between two adapters, and the stability
//! of the metric when adapters are dropped. Each takes an evaluation function, so the same code
//! serves any metric, model and device.

mod connectivity;
mod evaluator;
mod shapley;
mod stability;
mod svg;

pub use connectivity::{ConnectivityReport, linear_mode_connectivity};
pub use evaluator::Evaluator;
pub use shapley::{Player, PlayerValue, ShapleyReport, players_by_group, players_by_module, shapley_values};
pub use stability::{KeepRateResult, StabilityReport, dropout_stability};
pub use svg::{Series, heatmap_svg, line_chart_svg};

use serde::{Deserialize, Serialize};

/// The metric an analysis maximises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum AnalysisMetric {
    /// Validation accuracy.
    #[default]
    Accuracy,
    /// Minus the validation cross-entropy, so that larger is better.
    NegativeLoss,
}

impl AnalysisMetric {
    /// The metric's value for a set of evaluation results.
    pub fn of(self, metrics: &crate::train::Metrics) -> f64 {
        match self {
            Self::Accuracy => metrics.accuracy,
            Self::NegativeLoss => -metrics.loss,
        }
    }
}
