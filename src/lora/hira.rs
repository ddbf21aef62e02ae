//! HiRA (Hadamard high-rank adaptation): the update is the frozen weight times the low-rank
//! product element-wise, `ΔW = W ⊙ (s·B·A)`, so its rank is not bounded by `r`.

use burn::nn::Linear;
use burn::tensor::Tensor;
use burn::tensor::module::linear;

use super::layer::LoraAdapter;
use crate::model::apply_dropout;

/// The HiRA forward pass, `y = x·Wᵀ + b + dropout(x)·(W ⊙ s·B·A)ᵀ`, shapes `[..., in]` to
/// `[..., out]`. The update is a full `[in, out]` matrix, so a HiRA step costs one more dense
/// product than a LoRA step.
pub fn forward<const D: usize>(adapter: &LoraAdapter, base: &Linear, x: Tensor<D>) -> Tensor<D> {
    let low_rank = adapter.lora_a.val().transpose().matmul(adapter.lora_b.val().transpose()) * adapter.scaling;
    let update = base.weight.val().detach() * low_rank;
    let output = crate::kernels::base_linear(base, x.clone());
    output + linear(apply_dropout(&adapter.dropout, x), update, None)
}
