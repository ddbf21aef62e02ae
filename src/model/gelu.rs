//! The exact (erf-based) GELU of BERT's feed-forward layers, with an exact gradient on every
//! device.
//!
//! On burn's CPU backend GELU runs as coto's own kernel on all cores (`kernels::CpuGelu`),
//! which is exact in both directions, as burn's fused CPU GELU is. burn's
//! GPU backends (0.22) differentiate GELU with the derivative of the tanh approximation, which
//! is off by up to 9e-4 and takes `tanh` of arguments above 44 for inputs above about 10. On
//! Chromium's SwiftShader WebGPU adapter that gave NaN gradients for MiniLM's feed-forward
//! layers. So on GPU devices GELU is composed from `erf`, whose gradient `2/√π·exp(−u²)` cannot
//! overflow.

use std::f64::consts::FRAC_1_SQRT_2;

use burn::backend::Dispatch;
use burn::tensor::activation::gelu as fused_gelu;
use burn::tensor::{DType, Device, Tensor};

use crate::kernels::CpuGelu;

/// Applies `x · Φ(x) = x/2 · (1 + erf(x/√2))` element-wise.
pub fn exact_gelu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    if x.device().without_autodiff() == Device::flex() {
        if x.dtype() == DType::F32 {
            return Tensor::from_dispatch(<Dispatch as CpuGelu>::cpu_gelu(x.into_dispatch()));
        }
        return fused_gelu(x);
    }
    let cdf = x.clone().mul_scalar(FRAC_1_SQRT_2).erf().add_scalar(1.0).mul_scalar(0.5);
    x * cdf
}
