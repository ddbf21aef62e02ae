//! The exact (erf-based) GELU of BERT's feed-forward layers, with an exact gradient on every
//! device.
//!
//! burn's CPU backend has a fused GELU whose backward pass is the exact derivative. burn's
//! GPU backends (0.22) differentiate GELU with the derivative of the tanh approximation, which
//! is off by up to 9e-4 and takes `tanh` of arguments above 44 for inputs above about 10. On
//! Chromium's SwiftShader WebGPU adapter that gave NaN gradients for MiniLM's feed-forward
//! layers. So on GPU devices GELU is composed from `erf`, whose gradient `2/√π·exp(−u²)` cannot
//! overflow.

use std::f64::consts::FRAC_1_SQRT_2;

use burn::tensor::activation::gelu as fused_gelu;
use burn::tensor::{Device, Tensor};

/// Applies `x · Φ(x) = x/2 · (1 + erf(x/√2))` element-wise.
pub fn exact_gelu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    if x.device().without_autodiff() == Device::flex() {
        return fused_gelu(x);
    }
    let cdf = x.clone().mul_scalar(FRAC_1_SQRT_2).erf().add_scalar(1.0).mul_scalar(0.5);
    x * cdf
}
