//! Shapley values of adapters by the multilinear extension: for `p ~ U[0, 1]`, include each
//! other player with probability `p`, and average the change in the metric from adding player
//! `i`. The Shapley value is exactly `φᵢ = ∫₀¹ E[f(S ∪ {i}) − f(S)] dp` over such `S`, so the
//! sample mean is unbiased.

use std::collections::HashMap;

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::coto::{AdapterSlot, Gates};
use crate::error::Result;
use crate::rng;

/// A player: a set of adapters that are switched on and off together.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Player {
    /// Display name: `layer 3`, or a module path.
    pub name: String,
    /// Transformer layer.
    pub layer: usize,
    /// Module within the layer (`attention.self.query`), or `all` for a whole layer.
    pub module: String,
    /// Adapter indices.
    pub adapters: Vec<usize>,
}

/// One player per transformer layer, holding all of that layer's adapters.
pub fn players_by_group(slots: &[AdapterSlot]) -> Vec<Player> {
    let mut layers: Vec<usize> = slots.iter().map(|s| s.layer).collect();
    layers.sort_unstable();
    layers.dedup();
    layers
        .into_iter()
        .map(|layer| Player {
            name: format!("layer {layer}"),
            layer,
            module: "all".into(),
            adapters: slots.iter().filter(|s| s.layer == layer).map(|s| s.index).collect(),
        })
        .collect()
}

/// One player per adapter.
pub fn players_by_module(slots: &[AdapterSlot]) -> Vec<Player> {
    slots
        .iter()
        .map(|slot| Player {
            name: slot.name.clone(),
            layer: slot.layer,
            module: slot.name.splitn(4, '.').nth(3).unwrap_or(&slot.name).to_string(),
            adapters: vec![slot.index],
        })
        .collect()
}

/// A player's estimated Shapley value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlayerValue {
    /// The player.
    pub player: Player,
    /// Estimated Shapley value.
    pub value: f64,
    /// Standard error of the estimate.
    pub std_error: f64,
    /// Number of samples.
    pub samples: usize,
}

/// Shapley values of all players, with the metric of the full and the empty coalition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShapleyReport {
    /// Per player.
    pub values: Vec<PlayerValue>,
    /// Metric with every adapter on.
    pub all_on: f64,
    /// Metric with every adapter off (the base model with the trained head).
    pub all_off: f64,
    /// Distinct coalitions evaluated.
    pub evaluations: usize,
}

/// Estimates each player's Shapley value with `samples` draws of `(p, S)`. Each draw evaluates
/// `S` and, for every player, `S` with that player flipped, so one draw costs `players + 1`
/// evaluations (fewer when coalitions repeat) and yields one marginal contribution per player.
/// `evaluate` returns the metric for a gate vector over `adapter_count` adapters.
pub fn shapley_values(
    players: &[Player],
    adapter_count: usize,
    samples: usize,
    seed: u64,
    mut evaluate: impl FnMut(&Gates) -> Result<f64>,
) -> Result<ShapleyReport> {
    let mut rng = rng::seeded(seed, 11);
    let mut cache: HashMap<Vec<bool>, f64> = HashMap::new();
    let mut metric = |members: &[bool], evaluate: &mut dyn FnMut(&Gates) -> Result<f64>| -> Result<f64> {
        if let Some(&value) = cache.get(members) {
            return Ok(value);
        }
        let mut active = vec![false; adapter_count];
        for (player, &on) in players.iter().zip(members) {
            for &index in &player.adapters {
                active[index] = on;
            }
        }
        let value = evaluate(&Gates::from_vec(active))?;
        cache.insert(members.to_vec(), value);
        Ok(value)
    };

    let n = players.len();
    let mut contributions = vec![Vec::with_capacity(samples); n];
    for _ in 0..samples {
        let p: f64 = rng.random();
        let members: Vec<bool> = (0..n).map(|_| rng.random::<f64>() < p).collect();
        let base = metric(&members, &mut evaluate)?;
        for (i, list) in contributions.iter_mut().enumerate() {
            let mut flipped = members.clone();
            flipped[i] = !flipped[i];
            let other = metric(&flipped, &mut evaluate)?;
            list.push(if members[i] { base - other } else { other - base });
        }
    }
    let all_on = metric(&vec![true; n], &mut evaluate)?;
    let all_off = metric(&vec![false; n], &mut evaluate)?;
    let values = players
        .iter()
        .zip(contributions)
        .map(|(player, list)| {
            let mean = list.iter().sum::<f64>() / list.len().max(1) as f64;
            let variance = list.iter().map(|c| (c - mean).powi(2)).sum::<f64>() / (list.len().max(2) - 1) as f64;
            PlayerValue {
                player: player.clone(),
                value: mean,
                std_error: (variance / list.len().max(1) as f64).sqrt(),
                samples: list.len(),
            }
        })
        .collect();
    Ok(ShapleyReport {
        values,
        all_on,
        all_off,
        evaluations: cache.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// For an additive game the Shapley value of each player is its own weight, and every
    /// marginal contribution equals it, so the estimate is exact with zero standard error.
    #[test]
    fn additive_game_gives_exact_values() {
        let weights = [0.1, 0.4, 0.2];
        let players: Vec<Player> = (0..3)
            .map(|i| Player {
                name: format!("p{i}"),
                layer: i,
                module: "all".into(),
                adapters: vec![i],
            })
            .collect();
        let report = shapley_values(&players, 3, 20, 1, |gates| {
            Ok((0..3).filter(|&i| gates.is_active(i)).map(|i| weights[i]).sum())
        })
        .unwrap();
        for (value, weight) in report.values.iter().zip(weights) {
            assert!((value.value - weight).abs() < 1e-12);
            assert!(value.std_error < 1e-12);
        }
    }

    /// For `f(S) = 1` iff both players are in `S`, each player's Shapley value is 1/2.
    #[test]
    fn pair_game_splits_evenly() {
        let players: Vec<Player> = (0..2)
            .map(|i| Player {
                name: format!("p{i}"),
                layer: i,
                module: "all".into(),
                adapters: vec![i],
            })
            .collect();
        let report = shapley_values(&players, 2, 4000, 2, |gates| {
            Ok(if gates.is_active(0) && gates.is_active(1) { 1.0 } else { 0.0 })
        })
        .unwrap();
        for value in &report.values {
            assert!((value.value - 0.5).abs() < 4.0 * value.std_error, "{} ± {}", value.value, value.std_error);
        }
    }
}

impl ShapleyReport {
    /// One CSV row per player: name, layer, module, value, standard error, samples.
    pub fn to_csv(&self) -> String {
        let mut csv = String::from("player,layer,module,shapley_value,std_error,samples\n");
        for v in &self.values {
            csv.push_str(&format!(
                "{},{},{},{:.6},{:.6},{}\n",
                v.player.name, v.player.layer, v.player.module, v.value, v.std_error, v.samples
            ));
        }
        csv
    }

    /// A layer × module heatmap of the values (one column per module, or one for whole layers).
    pub fn heatmap(&self, title: &str) -> String {
        let mut layers: Vec<usize> = self.values.iter().map(|v| v.player.layer).collect();
        layers.sort_unstable();
        layers.dedup();
        let mut modules: Vec<String> = Vec::new();
        for v in &self.values {
            if !modules.contains(&v.player.module) {
                modules.push(v.player.module.clone());
            }
        }
        let grid: Vec<Vec<f64>> = layers
            .iter()
            .map(|&layer| {
                modules
                    .iter()
                    .map(|module| {
                        self.values
                            .iter()
                            .find(|v| v.player.layer == layer && &v.player.module == module)
                            .map_or(0.0, |v| v.value)
                    })
                    .collect()
            })
            .collect();
        let rows: Vec<String> = layers.iter().map(|l| format!("layer {l}")).collect();
        super::svg::heatmap_svg(title, &rows, &modules, &grid)
    }

    /// How evenly the value is spread over players: the normalised entropy of the positive
    /// parts of the values, 1 when all players contribute equally and 0 when one carries all.
    pub fn balance(&self) -> f64 {
        let positive: Vec<f64> = self.values.iter().map(|v| v.value.max(0.0)).collect();
        let total: f64 = positive.iter().sum();
        if total <= 0.0 || positive.len() < 2 {
            return 0.0;
        }
        let entropy: f64 = positive
            .iter()
            .filter(|&&v| v > 0.0)
            .map(|&v| {
                let share = v / total;
                -share * share.ln()
            })
            .sum();
        entropy / (positive.len() as f64).ln()
    }
}
