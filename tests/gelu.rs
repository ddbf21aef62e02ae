//! BERT's exact GELU and its gradient on each device, against the closed forms in f64:
//! `gelu(x) = x·Φ(x)` and `gelu'(x) = Φ(x) + x·φ(x)`, over inputs as large as a real
//! checkpoint's feed-forward layer produces.

mod common;

use burn::tensor::{Tensor, TensorData};
use coto::model::exact_gelu;

/// erf to about 1e-15 (Abramowitz and Stegun 7.1.26 is too coarse for a reference), from its
/// Taylor series for small inputs and its continued fraction for large ones.
fn erf(x: f64) -> f64 {
    if x < 0.0 {
        return -erf(-x);
    }
    if x < 3.0 {
        let (mut term, mut sum, mut n) = (x, x, 0.0);
        while term.abs() > 1e-17 * sum.abs() {
            n += 1.0;
            term *= -x * x / n;
            sum += term / (2.0 * n + 1.0);
        }
        return sum * 2.0 / std::f64::consts::PI.sqrt();
    }
    // erfc(x) = exp(−x²)/√π · 1/(x + (1/2)/(x + 1/(x + (3/2)/(x + …)))).
    let mut fraction = x;
    for k in (1..60).rev() {
        fraction = x + (k as f64 / 2.0) / fraction;
    }
    1.0 - (-x * x).exp() / std::f64::consts::PI.sqrt() / fraction
}

#[test]
fn gelu_value_and_gradient_are_exact() {
    // [−12, 12] in steps of 0.01, repeated past 100 000 values so that the CPU kernel splits
    // the work across threads, with chunk borders inside the sweep.
    let inputs: Vec<f32> = (0..100_003).map(|i| ((i % 2401) as f32 - 1200.0) / 100.0).collect();
    for (name, device) in common::devices() {
        let device = device.autodiff();
        let x = Tensor::<1>::from_data(TensorData::new(inputs.clone(), [inputs.len()]), &device).require_grad();
        let y = exact_gelu(x.clone());
        let grads = y.clone().sum().backward();
        let values: Vec<f32> = y.inner().into_data().try_to_vec().unwrap();
        let slopes: Vec<f32> = x.grad(&grads).expect("x has a gradient").into_data().try_to_vec().unwrap();

        for ((&x, &value), &slope) in inputs.iter().zip(&values).zip(&slopes) {
            let x64 = x as f64;
            let cdf = 0.5 * (1.0 + erf(x64 / std::f64::consts::SQRT_2));
            let pdf = (-0.5 * x64 * x64).exp() / (2.0 * std::f64::consts::PI).sqrt();
            let (value_error, slope_error) = ((value as f64 - x64 * cdf).abs(), (slope as f64 - (cdf + x64 * pdf)).abs());
            assert!(value_error <= 2e-5, "gelu({x}) on {name}: {value}, expected {}", x64 * cdf);
            assert!(slope_error <= 2e-5, "gelu'({x}) on {name}: {slope}, expected {}", cdf + x64 * pdf);
        }
    }
}

/// A transposed (not row-major) input gives the transposed result, in both directions.
#[test]
fn gelu_of_transposed_input_matches() {
    let values: Vec<f32> = (0..120_000).map(|i| ((i * 7919) % 2401) as f32 / 100.0 - 12.0).collect();
    for (name, device) in common::devices() {
        let device = device.autodiff();
        let x = Tensor::<2>::from_data(TensorData::new(values.clone(), [300, 400]), &device).require_grad();
        let transposed = exact_gelu(x.clone().transpose());
        let direct = exact_gelu(x.clone()).transpose();
        let (a, b): (Vec<f32>, Vec<f32>) = (
            transposed.clone().inner().into_data().try_to_vec().unwrap(),
            direct.inner().into_data().try_to_vec().unwrap(),
        );
        assert_eq!(a, b, "gelu of a transposed input on {name}");

        let weights = Tensor::<2>::from_data(TensorData::new(values.clone(), [400, 300]), &device);
        let grads = (transposed * weights.clone()).sum().backward();
        let slopes: Vec<f32> = x.grad(&grads).expect("x has a gradient").into_data().try_to_vec().unwrap();
        let expected_grads = (exact_gelu(x.clone()) * weights.transpose()).sum().backward();
        let expected: Vec<f32> = x.grad(&expected_grads).expect("x has a gradient").into_data().try_to_vec().unwrap();
        assert_eq!(slopes, expected, "gelu gradient through a transposed input on {name}");
    }
}
