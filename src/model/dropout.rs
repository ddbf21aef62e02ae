//! Dropout for the encoder and head. On burn's CPU backend the masks come from a counter-based
//! generator filled by all cores, which is several times faster than the backend's per-element
//! sampler; on GPU devices burn's own generator runs on the device.

use std::cell::Cell;

use burn::nn::Dropout;
use burn::tensor::{Device, Tensor, TensorData};

use crate::kernels::simd::simd_dispatch;
use crate::kernels::tile::MulAdd;
use crate::rng::splitmix64;

thread_local! {
    /// Seed of the CPU masks of the current step on this thread, and the masks drawn since.
    /// Per thread, so that trainers on different threads do not disturb each other's streams.
    static MASK_STREAM: Cell<(u64, u64)> = const { Cell::new((0, 0)) };
}

/// Seeds the masks of the following forward passes on this thread (the trainer calls this once
/// per step, so a step's masks do not depend on what ran before it).
pub fn seed_masks(seed: u64) {
    MASK_STREAM.with(|stream| stream.set((seed, 0)));
}

/// Whether `dropout` changes its input on `device`: its flag on, an autodiff (training) device,
/// and a probability above 0.
pub fn dropout_is_active(dropout: &Dropout, device: &Device) -> bool {
    dropout.training.is_enabled() && device.is_autodiff() && dropout.prob > 0.0
}

/// Applies `dropout` to `x`: in training (the module's flag on and `x` on an autodiff device)
/// each element is zeroed with probability `prob` and the rest are scaled by `1 / (1 − prob)`;
/// otherwise `x` is returned unchanged.
pub fn apply_dropout<const D: usize>(dropout: &Dropout, x: Tensor<D>) -> Tensor<D> {
    let device = x.device();
    if !dropout_is_active(dropout, &device) {
        return x;
    }
    if device.clone().without_autodiff() != Device::flex() {
        return dropout.forward(x);
    }
    let shape = x.dims();
    let mask = cpu_mask(shape.iter().product(), dropout.prob);
    x * Tensor::<D>::from_data(TensorData::new(mask, shape), &device)
}

/// Returns the key of the next CPU mask on this thread: a hash of the step's seed and the
/// number of masks drawn since it was set.
pub fn next_mask_key() -> u64 {
    let (seed, stream) = MASK_STREAM.with(|cell| {
        let (seed, drawn) = cell.get();
        cell.set((seed, drawn + 1));
        (seed, drawn)
    });
    splitmix64(seed ^ splitmix64(stream))
}

/// Draws a mask of `len` values, each `0` with probability `prob` and `1 / (1 − prob)` otherwise.
fn cpu_mask(len: usize, prob: f64) -> Vec<f32> {
    let key = next_mask_key();
    // Compare 32-bit draws against `prob · 2³²`: the probability is exact to 2⁻³².
    let threshold = (prob * 4_294_967_296.0) as u64;
    let keep_scale = (1.0 / (1.0 - prob)) as f32;

    let fill = move |index: usize, chunk: usize, part: &mut [f32]| {
        fill_mask(key, (index * chunk / 2) as u64, threshold, keep_scale, part);
    };

    let mut mask = vec![0f32; len];
    // Browsers (wasm32) report no parallelism and cannot spawn threads here.
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(8);
    if threads == 1 {
        fill(0, len.next_multiple_of(2), &mut mask);
        return mask;
    }
    let chunk = len.div_ceil(threads).max(1 << 16).next_multiple_of(2);
    std::thread::scope(|scope| {
        for (index, part) in mask.chunks_mut(chunk).enumerate() {
            scope.spawn(move || fill(index, chunk, part));
        }
    });
    mask
}

simd_dispatch! {
    /// Fills `part` with mask values from the draws of pairs `offset..`, vectorised for the
    /// detected instruction set.
    fn fill_mask(key: u64, offset: u64, threshold: u64, keep_scale: f32, part: &mut [f32]) => fill_mask_generic
}

#[inline(always)]
fn fill_mask_generic<F: MulAdd>(key: u64, offset: u64, threshold: u64, keep_scale: f32, part: &mut [f32]) {
    for (pair, values) in part.chunks_mut(2).enumerate() {
        let bits = splitmix64(key ^ (offset + pair as u64).wrapping_mul(0xD1B5_4A32_D192_ED03));
        for (k, value) in values.iter_mut().enumerate() {
            let draw = (bits >> (32 * k)) & 0xFFFF_FFFF;
            *value = if draw < threshold { 0.0 } else { keep_scale };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_drops_the_requested_fraction() {
        seed_masks(5);
        let mask = cpu_mask(1_000_000, 0.1);
        let dropped = mask.iter().filter(|&&v| v == 0.0).count() as f64 / mask.len() as f64;
        // Binomial standard error at n = 10⁶, p = 0.1 is 3e-4; allow 5 of them.
        assert!((dropped - 0.1).abs() < 1.5e-3, "dropped fraction {dropped}");
        let kept: Vec<f32> = mask.iter().copied().filter(|&v| v != 0.0).collect();
        assert!(kept.iter().all(|&v| (v - 1.0 / 0.9).abs() < 1e-6));
    }

    #[test]
    fn masks_repeat_after_reseeding() {
        seed_masks(9);
        let first = cpu_mask(1000, 0.5);
        seed_masks(9);
        assert_eq!(cpu_mask(1000, 0.5), first);
        assert_ne!(cpu_mask(1000, 0.5), first, "a second draw of a step must differ");
    }
}
