//! Hand-written kernels.
//!
//! - WGSL kernels for the LoRA layer (`shaders/*.wgsl`) run automatically for active plain-LoRA
//!   adapters on wgpu devices (native and WebGPU). [`set_fused_kernels`] or
//!   `COTO_FUSED_KERNELS=0` switches them off for comparison.
//! - On burn's CPU backend, coto's own attention, base linear layers, LayerNorm and exact GELU
//!   run in place of the composed burn operations, vectorised for the CPU's instruction set.
//!
//! NOTE: the WGSL kernels are tested for correctness on llvmpipe and in Chromium's WebGPU;
//! their speed has been measured only on llvmpipe, where they match the composed operations.

mod attention;
mod gelu;
mod layer_norm;
mod linear;
mod ops;
pub(crate) mod simd;
mod threads;
pub(crate) mod tile;
mod wgsl;

use std::sync::atomic::{AtomicU8, Ordering};

use burn::nn::{LayerNorm, Linear};
use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Dispatch};
use burn::tensor::{DType, Device, Tensor};

pub use attention::{AttentionSpec, CpuAttention, CpuAttentionParts, FlexAttentionSaved};
pub use gelu::{CpuGelu, CpuGeluParts};
pub use layer_norm::{CpuLayerNorm, CpuLayerNormParts, LayerNormSaved};
pub use linear::{CpuLinear, CpuLinearParts, LinearSaved, cpu_linear_fits};
pub use ops::{LoraKernelParts, LoraKernels};

use crate::lora::LoraAdapter;
use crate::model::apply_dropout;

/// 0: not decided yet (read `COTO_FUSED_KERNELS` on first use), 1: off, 2: on.
static FUSED: AtomicU8 = AtomicU8::new(0);

/// Turns the fused kernels on or off for every later forward pass.
pub fn set_fused_kernels(enabled: bool) {
    FUSED.store(if enabled { 2 } else { 1 }, Ordering::SeqCst);
}

/// Returns whether the fused kernels are on: the last [`set_fused_kernels`], else on unless
/// the environment sets `COTO_FUSED_KERNELS=0`.
pub fn fused_kernels_enabled() -> bool {
    match FUSED.load(Ordering::SeqCst) {
        1 => false,
        2 => true,
        _ => {
            let enabled = std::env::var("COTO_FUSED_KERNELS").map_or(true, |v| v != "0");
            set_fused_kernels(enabled);
            enabled
        }
    }
}

/// Returns whether the fused kernels apply on `device`: they are on, and it is a wgpu device.
pub fn kernels_apply(device: &Device) -> bool {
    fused_kernels_enabled() && device.clone().without_autodiff() != Device::flex()
}

/// Registers each computed gradient with its parent node (parents that are not tracked get none).
pub(crate) fn register_gradients<B: Backend, const N: usize>(
    grads: &mut Gradients,
    parents: [Option<NodeId>; N],
    gradients: [Option<FloatTensor<B>>; N],
) {
    for (parent, gradient) in parents.into_iter().zip(gradients) {
        if let (Some(node), Some(gradient)) = (parent, gradient) {
            grads.register::<B>(node, gradient);
        }
    }
}

/// Applies the frozen base layer `x·W + b`: coto's own kernel on burn's CPU backend where the
/// sizes suit it and the CPU has AVX-512, else burn's linear layer.
///
/// NOTE: on other CPUs (AVX2, ARM, WebAssembly) the tile product has not been measured against
/// burn's matrix library, which has tuned kernels for them, so burn's layer stays.
pub fn base_linear<const D: usize>(base: &Linear, x: Tensor<D>) -> Tensor<D> {
    let [inputs, outputs] = base.weight.dims();
    let on_cpu = x.device().without_autodiff() == Device::flex() && x.dtype() == DType::F32 && simd::has_avx512();
    match &base.bias {
        Some(bias) if on_cpu && cpu_linear_fits(inputs, outputs) => {
            Tensor::from_dispatch(<Dispatch as CpuLinear>::cpu_linear(
                x.into_dispatch(),
                base.weight.val().into_dispatch(),
                bias.val().into_dispatch(),
            ))
        }
        _ => base.forward(x),
    }
}

/// Applies `norm` (with its `epsilon`) over the last dimension of `x`: coto's own kernel on
/// burn's CPU backend, else burn's layer normalisation.
pub fn layer_norm<const D: usize>(norm: &LayerNorm, epsilon: f64, x: Tensor<D>) -> Tensor<D> {
    let on_cpu = x.device().without_autodiff() == Device::flex() && x.dtype() == DType::F32;
    match &norm.beta {
        Some(beta) if on_cpu => Tensor::from_dispatch(<Dispatch as CpuLayerNorm>::cpu_layer_norm(
            x.into_dispatch(),
            norm.gamma.val().into_dispatch(),
            beta.val().into_dispatch(),
            epsilon,
        )),
        _ => norm.forward(x),
    }
}

/// Computes the plain-LoRA layer `y = x·W + b + scaling · (dropout(x)·Aᵀ)·Bᵀ` through the
/// fused kernels, shapes `[..., in]` to `[..., out]`.
pub fn fused_lora_linear<const D: usize>(base: &Linear, adapter: &LoraAdapter, x: Tensor<D>) -> Tensor<D> {
    let dims = x.dims();
    let inputs = dims[D - 1];
    let rows: usize = dims[..D - 1].iter().product();
    let weight = base.weight.val();
    let outputs = weight.dims()[1];
    let bias = match &base.bias {
        Some(bias) => bias.val(),
        None => Tensor::zeros([outputs], &weight.device()),
    };

    let x = x.reshape([rows, inputs]);
    // Without dropout `apply_dropout` returns `x` itself, which the backward pass detects and
    // then computes the whole input gradient in one kernel.
    let xd = apply_dropout(&adapter.dropout, x.clone());
    let output = <burn::backend::Dispatch as LoraKernels>::lora_linear(
        x.into_dispatch(),
        xd.into_dispatch(),
        weight.into_dispatch(),
        bias.into_dispatch(),
        adapter.lora_a.val().into_dispatch(),
        adapter.lora_b.val().into_dispatch(),
        adapter.scaling as f32,
    );
    let mut out_dims = dims;
    out_dims[D - 1] = outputs;
    Tensor::<2>::from_dispatch(output).reshape(out_dims)
}
