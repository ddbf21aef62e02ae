//! Classification metrics.

use serde::{Deserialize, Serialize};

/// Loss, accuracy and macro-F1 over an evaluation set.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// Mean cross-entropy.
    pub loss: f64,
    /// Fraction of correct predictions.
    pub accuracy: f64,
    /// Unweighted mean over classes of F1 (a class never predicted nor present counts 0, as
    /// scikit-learn's `zero_division=0`).
    pub macro_f1: f64,
    /// Number of examples.
    pub examples: usize,
}

impl Metrics {
    /// Computes the metrics from predicted and gold class ids and per-example losses.
    pub fn compute(predicted: &[usize], gold: &[usize], losses: &[f64], num_classes: usize) -> Self {
        let examples = gold.len();
        let correct = predicted.iter().zip(gold).filter(|(p, g)| p == g).count();
        let mut f1_sum = 0.0;
        for class in 0..num_classes {
            let tp = predicted.iter().zip(gold).filter(|&(&p, &g)| p == class && g == class).count() as f64;
            let fp = predicted.iter().zip(gold).filter(|&(&p, &g)| p == class && g != class).count() as f64;
            let fn_ = predicted.iter().zip(gold).filter(|&(&p, &g)| p != class && g == class).count() as f64;
            let denominator = 2.0 * tp + fp + fn_;
            f1_sum += if denominator > 0.0 { 2.0 * tp / denominator } else { 0.0 };
        }
        Self {
            loss: losses.iter().sum::<f64>() / examples.max(1) as f64,
            accuracy: correct as f64 / examples.max(1) as f64,
            macro_f1: f1_sum / num_classes.max(1) as f64,
            examples,
        }
    }
}

/// Index of the largest value of each row of `logits` (`[rows, classes]`, row-major).
pub fn argmax_rows(logits: &[f32], classes: usize) -> Vec<usize> {
    logits
        .chunks_exact(classes)
        .map(|row| {
            row.iter()
                .enumerate()
                .fold((0, f32::NEG_INFINITY), |best, (i, &v)| if v > best.1 { (i, v) } else { best })
                .0
        })
        .collect()
}

/// Cross-entropy of each row of `logits` against its gold class, computed stably in f64.
pub fn cross_entropy_rows(logits: &[f32], classes: usize, gold: &[usize]) -> Vec<f64> {
    logits
        .chunks_exact(classes)
        .zip(gold)
        .map(|(row, &label)| {
            let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
            let log_sum = row.iter().map(|&v| (v as f64 - max).exp()).sum::<f64>().ln() + max;
            log_sum - row[label] as f64
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macro_f1_of_known_case() {
        // Class 0: tp 2, fp 1, fn 0 -> F1 0.8; class 1: tp 1, fp 0, fn 1 -> F1 2/3.
        let metrics = Metrics::compute(&[0, 0, 0, 1], &[0, 0, 1, 1], &[0.0; 4], 2);
        assert!((metrics.macro_f1 - (0.8 + 2.0 / 3.0) / 2.0).abs() < 1e-12);
        assert!((metrics.accuracy - 0.75).abs() < 1e-12);
    }

    #[test]
    fn cross_entropy_of_uniform_logits() {
        let losses = cross_entropy_rows(&[0.0, 0.0, 0.0, 0.0], 2, &[0, 1]);
        for loss in losses {
            assert!((loss - 2f64.ln()).abs() < 1e-12);
        }
    }
}
