//! DoRA (weight-decomposed low-rank adaptation), as PEFT computes it:
//! `W' = m · (W + s·B·A) / ‖W + s·B·A‖`, the norm taken per output and detached from the graph,
//! evaluated as `y = x·Wᵀ + b + (m/‖·‖ − 1)·(x·Wᵀ) + (m/‖·‖)·s·(x·Aᵀ)·Bᵀ`.

use burn::module::Param;
use burn::nn::Linear;
use burn::tensor::module::linear;
use burn::tensor::Tensor;

use super::layer::LoraAdapter;
use crate::model::{apply_dropout, dropout_is_active};

/// The DoRA forward pass of `adapter` on `base`, shapes `[..., in]` to `[..., out]`.
pub fn forward<const D: usize>(adapter: &LoraAdapter, magnitude: &Param<Tensor<1>>, base: &Linear, x: Tensor<D>) -> Tensor<D> {
    let weight = base.weight.val();
    let low_rank = adapter.lora_a.val().detach().transpose().matmul(adapter.lora_b.val().detach().transpose());
    let norm = column_norms(weight.clone() + low_rank * adapter.scaling).detach();
    let scale = (magnitude.val().unsqueeze::<2>() / norm).unsqueeze::<D>();

    let dropout_on = dropout_is_active(&adapter.dropout, &x.device());
    let base_product = linear(x.clone(), weight.clone(), None);
    let base_output = match &base.bias {
        Some(bias) => base_product.clone() + bias.val().unsqueeze::<D>(),
        None => base_product.clone(),
    };
    let dropped = apply_dropout(&adapter.dropout, x);
    // With adapter dropout PEFT recomputes the base product from the dropped input.
    let inner = if dropout_on {
        linear(dropped.clone(), weight, None)
    } else {
        base_product
    };
    let lora = linear(linear(dropped, adapter.lora_a.val().transpose(), None), adapter.lora_b.val().transpose(), None);
    base_output + (scale.clone() - 1.0) * inner + scale * lora * adapter.scaling
}

/// `m · (W + ΔW) / ‖W + ΔW‖` for a weight and update in burn's `[in, out]` layout.
pub fn merged_weight(weight: Tensor<2>, low_rank: Tensor<2>, magnitude: Tensor<1>) -> Tensor<2> {
    let direction = weight + low_rank;
    let norm = column_norms(direction.clone());
    direction * (magnitude.unsqueeze::<2>() / norm)
}

/// The L2 norm of each output's weights: the columns of an `[in, out]` matrix, as `[1, out]`.
pub fn column_norms(weight: Tensor<2>) -> Tensor<2> {
    weight.powi_scalar(2).sum_dim(0).sqrt()
}

/// DoRA's initial magnitude: `‖W + s·B·A‖` per output, for a weight in `[in, out]` layout.
pub fn initial_magnitude(weight: Tensor<2>, adapter: &LoraAdapter) -> Tensor<1> {
    let low_rank = adapter.delta_weight().transpose();
    let [_, out] = weight.dims();
    column_norms(weight.detach() + low_rank).reshape([out]).detach()
}
