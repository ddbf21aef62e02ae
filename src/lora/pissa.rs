//! PiSSA initialisation: the adapter starts as the principal part of the weight. With
//! `W = U·diag(S)·Vᵀ`, `A = diag(sqrt(S_r / s))·V_rᵀ`, `B = U_r·diag(sqrt(S_r / s))`, and the
//! base keeps the residual `W − s·B·A` (PEFT's `init_lora_weights = "pissa"`).

use crate::linalg::{Matrix, svd};

/// PiSSA's factors and residual for a weight in PyTorch's `[out, in]` layout.
#[derive(Debug, Clone)]
pub struct PissaInit {
    /// `A`, `[r, in]`.
    pub lora_a: Matrix,
    /// `B`, `[out, r]`.
    pub lora_b: Matrix,
    /// `W − s·B·A`, `[out, in]`.
    pub residual: Matrix,
}

/// Computes PiSSA's initialisation of rank `r` with scaling `s` from `weight` (`[out, in]`),
/// with an exact SVD in f64.
pub fn pissa_init(weight: &Matrix, r: usize, scaling: f64) -> PissaInit {
    let decomposition = svd(weight);
    let r = r.min(decomposition.s.len());
    let roots: Vec<f64> = decomposition.s[..r].iter().map(|&s| (s / scaling).sqrt()).collect();
    let mut lora_a = decomposition.v.columns(0, r).transpose();
    let mut lora_b = decomposition.u.columns(0, r);
    for (k, &root) in roots.iter().enumerate() {
        for i in 0..lora_a.cols {
            lora_a.set(k, i, lora_a.at(k, i) * root);
        }
        for o in 0..lora_b.rows {
            lora_b.set(o, k, lora_b.at(o, k) * root);
        }
    }
    let residual = weight.clone().add(&lora_b.matmul(&lora_a).scale(-scaling));
    PissaInit {
        lora_a,
        lora_b,
        residual,
    }
}
