//! Dropout stability: the metric with each single layer's adapters dropped, and with random
//! subsets of layers dropped at several keep rates.

use rand::Rng;
use serde::{Deserialize, Serialize};

use super::shapley::Player;
use crate::coto::Gates;
use crate::error::Result;
use crate::rng;

/// The metric with random subsets kept at one rate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeepRateResult {
    /// Probability that each player is kept.
    pub keep_rate: f64,
    /// Mean metric over the draws.
    pub mean: f64,
    /// Standard deviation over the draws.
    pub std: f64,
    /// Number of draws.
    pub draws: usize,
}

/// Results of a stability analysis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StabilityReport {
    /// Metric with every adapter on.
    pub all_on: f64,
    /// Metric with one player dropped, per player.
    pub single_drop: Vec<(String, f64)>,
    /// Metric under random subsets, per keep rate.
    pub random: Vec<KeepRateResult>,
}

/// Measures the metric with each player dropped in turn, and with each player kept with
/// probability `keep_rate` for each rate, over `draws` seeded draws.
pub fn dropout_stability(
    players: &[Player],
    adapter_count: usize,
    keep_rates: &[f64],
    draws: usize,
    seed: u64,
    mut evaluate: impl FnMut(&Gates) -> Result<f64>,
) -> Result<StabilityReport> {
    let gates_for = |kept: &[bool]| {
        let mut active = vec![false; adapter_count];
        for (player, &on) in players.iter().zip(kept) {
            for &index in &player.adapters {
                active[index] = on;
            }
        }
        Gates::from_vec(active)
    };
    let n = players.len();
    let all_on = evaluate(&gates_for(&vec![true; n]))?;
    let mut single_drop = Vec::with_capacity(n);
    for (i, player) in players.iter().enumerate() {
        let mut kept = vec![true; n];
        kept[i] = false;
        single_drop.push((player.name.clone(), evaluate(&gates_for(&kept))?));
    }
    let mut rng = rng::seeded(seed, 12);
    let mut random = Vec::with_capacity(keep_rates.len());
    for &keep_rate in keep_rates {
        let mut values = Vec::with_capacity(draws);
        for _ in 0..draws {
            let kept: Vec<bool> = (0..n).map(|_| rng.random::<f64>() < keep_rate).collect();
            values.push(evaluate(&gates_for(&kept))?);
        }
        let mean = values.iter().sum::<f64>() / values.len().max(1) as f64;
        let std = (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / values.len().max(1) as f64).sqrt();
        random.push(KeepRateResult {
            keep_rate,
            mean,
            std,
            draws,
        });
    }
    Ok(StabilityReport {
        all_on,
        single_drop,
        random,
    })
}

impl StabilityReport {
    /// CSV rows: `drop,<player>,metric` per single drop, `keep,<rate>,mean,std,draws` per rate.
    pub fn to_csv(&self) -> String {
        let mut csv = format!("kind,what,metric,std,draws\nall_on,,{:.6},,\n", self.all_on);
        for (name, metric) in &self.single_drop {
            csv.push_str(&format!("drop,{name},{metric:.6},,\n"));
        }
        for r in &self.random {
            csv.push_str(&format!("keep,{},{:.6},{:.6},{}\n", r.keep_rate, r.mean, r.std, r.draws));
        }
        csv
    }

    /// The metric against the keep rate (1.0 is every adapter on).
    pub fn chart(&self, title: &str, metric: &str) -> String {
        let mut points: Vec<(f64, f64)> = self.random.iter().map(|r| (r.keep_rate, r.mean)).collect();
        points.push((1.0, self.all_on));
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        let series = super::svg::Series {
            label: "mean over draws".into(),
            points,
        };
        super::svg::line_chart_svg(title, "fraction of layers' adapters kept", metric, &[series])
    }
}
