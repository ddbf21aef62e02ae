//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod tiny;

use std::path::PathBuf;

use burn::tensor::{Device, DeviceKind, Tensor};
use coto::model::{HostTensor, WeightMap};

/// The devices every numeric test runs on: burn's CPU backend and wgpu (Mesa's llvmpipe in CI).
/// Set `COTO_SKIP_WGPU=1` on a machine without any Vulkan, Metal or DX12 adapter.
pub fn devices() -> Vec<(&'static str, Device)> {
    let mut devices = vec![("flex", Device::flex())];
    if std::env::var_os("COTO_SKIP_WGPU").is_none() {
        devices.push(("wgpu", Device::wgpu(DeviceKind::DefaultDevice)));
    }
    devices
}

/// Path of a file under `tests/fixtures`.
pub fn fixture_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

/// Reads a safetensors fixture.
pub fn fixture(name: &str) -> WeightMap {
    WeightMap::from_file(&fixture_path(name)).expect("fixture loads")
}

/// Downloads a tensor.
pub fn host<const D: usize>(tensor: Tensor<D>) -> HostTensor {
    HostTensor::from_tensor(tensor)
}

/// The largest absolute difference divided by the largest absolute expected value: the
/// relative error in the max norm, which stays meaningful where single entries are near zero.
pub fn relative_error(actual: &HostTensor, expected: &HostTensor) -> f64 {
    assert_eq!(actual.shape, expected.shape, "shapes differ");
    let scale = expected.data.iter().fold(0f64, |m, &e| m.max(e.abs() as f64));
    let diff = actual
        .data
        .iter()
        .zip(&expected.data)
        .fold(0f64, |m, (&a, &e)| m.max((a as f64 - e as f64).abs()));
    diff / scale.max(f64::MIN_POSITIVE)
}

/// The largest absolute difference.
pub fn max_abs_error(actual: &HostTensor, expected: &HostTensor) -> f64 {
    assert_eq!(actual.shape, expected.shape, "shapes differ");
    actual
        .data
        .iter()
        .zip(&expected.data)
        .fold(0f64, |m, (&a, &e)| m.max((a as f64 - e as f64).abs()))
}

/// Asserts `relative_error(actual, expected) <= tolerance`, naming the quantity and device.
pub fn assert_relative(what: &str, device: &str, actual: &HostTensor, expected: &HostTensor, tolerance: f64) {
    let error = relative_error(actual, expected);
    assert!(
        error <= tolerance,
        "{what} on {device}: relative error {error:.3e} exceeds {tolerance:.0e}"
    );
}
