//! The fused LoRA layer as a burn backend extension: a WGSL implementation on the cubecl
//! (wgpu) backend, and an autodiff implementation whose backward pass runs the backward
//! kernels and reuses the forward pass's `h = x · Aᵀ`.
//!
//! All tensors here are 2-D: `[rows, features]`, rows being every token of the batch.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;
use burn::backend::ops::FloatTensorOps;
use burn::backend::wgpu::CubeTensor;
use burn::backend::{Autodiff, Backend, Cube, TensorMetadata, backend_extension};
use burn::tensor::Shape;

use super::wgsl::{MAX_GROUPS, Shader, launch};

/// The fused LoRA layer, `y = x · W + bias + s · (xd · Aᵀ) · Bᵀ`, where `xd` is the adapter's
/// input (the layer input after the adapter's dropout, or the same tensor without dropout).
#[backend_extension(Cube, Autodiff)]
pub trait LoraKernels: Backend {
    /// Shapes: `x`, `xd` `[rows, in]`; `weight` `[in, out]` (burn's layout); `bias` `[out]`;
    /// `lora_a` `[r, in]`; `lora_b` `[out, r]`; output `[rows, out]`.
    fn lora_linear(
        x: FloatTensor<Self>,
        xd: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        lora_a: FloatTensor<Self>,
        lora_b: FloatTensor<Self>,
        scaling: f32,
    ) -> FloatTensor<Self>;
}

/// The kernels behind [`LoraKernels`] on a backend without autodiff.
pub trait LoraKernelParts: Backend {
    /// Runs the forward pass and returns `(y, h)`, keeping `h = xd · Aᵀ` for the backward pass.
    /// The bias and the low-rank term are added in the epilogue of the base product.
    fn lora_forward(
        x: FloatTensor<Self>,
        xd: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        lora_a: FloatTensor<Self>,
        lora_b: FloatTensor<Self>,
        scaling: f32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);

    /// From the output gradient `dy`: `(g, dA, dB)` with `g = s · dY · B`,
    /// `dA = gᵀ · xd`, `dB = s · dYᵀ · h`.
    fn lora_backward_factors(
        dy: FloatTensor<Self>,
        xd: FloatTensor<Self>,
        lora_b: FloatTensor<Self>,
        hidden: FloatTensor<Self>,
        scaling: f32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);

    /// Computes the input gradient when `x` and `xd` are one tensor, `dx = dY · Wᵀ + g · A`,
    /// with the low-rank term added in the epilogue of the base product.
    fn lora_backward_input(
        dy: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        g: FloatTensor<Self>,
        lora_a: FloatTensor<Self>,
    ) -> FloatTensor<Self>;
}

fn dims(tensor: &CubeTensor) -> [usize; 2] {
    let shape = tensor.shape();
    [shape[0], shape[1]]
}

impl LoraKernelParts for Cube {
    fn lora_forward(
        x: CubeTensor,
        xd: CubeTensor,
        weight: CubeTensor,
        bias: CubeTensor,
        lora_a: CubeTensor,
        lora_b: CubeTensor,
        scaling: f32,
    ) -> (CubeTensor, CubeTensor) {
        let [rows, inputs] = dims(&x);
        let [_, outputs] = dims(&weight);
        let [rank, _] = dims(&lora_a);
        let dims_down = [rows, inputs, rank, LAYOUT_A].map(|d| d as u32);
        let hidden = launch(Shader::Project, &[xd, lora_a], [rows, rank], &dims_down, None);
        // The base product stays with burn's tuned matmul; the bias and the low-rank term
        // follow in one epilogue pass.
        let base = Cube::float_matmul(x, weight);
        let output = launch(
            Shader::Forward,
            &[base, bias, hidden.clone(), lora_b],
            [rows, outputs],
            &[rows, outputs, rank].map(|d| d as u32),
            Some(scaling),
        );
        (output, hidden)
    }

    fn lora_backward_factors(
        dy: CubeTensor,
        xd: CubeTensor,
        lora_b: CubeTensor,
        hidden: CubeTensor,
        scaling: f32,
    ) -> (CubeTensor, CubeTensor, CubeTensor) {
        let [rows, outputs] = dims(&dy);
        let [_, rank] = dims(&lora_b);
        let g = launch(
            Shader::Project,
            &[dy.clone(), lora_b],
            [rows, rank],
            &[rows, outputs, rank, LAYOUT_B].map(|d| d as u32),
            Some(scaling),
        );
        let grad_b = factor_gradient(dy, hidden, scaling);
        let grad_a = factor_gradient(g.clone(), xd, 1.0);
        (g, grad_a, grad_b)
    }

    fn lora_backward_input(dy: CubeTensor, weight: CubeTensor, g: CubeTensor, lora_a: CubeTensor) -> CubeTensor {
        let [rows, _] = dims(&dy);
        let [inputs, _] = dims(&weight);
        let [rank, _] = dims(&lora_a);
        let base = Cube::float_matmul(dy, Cube::float_transpose(weight));
        launch(Shader::GradInput, &[base, g, lora_a], [rows, inputs], &[rows, inputs, rank].map(|d| d as u32), None)
    }
}

/// `lora_project.wgsl`'s factor layouts: A is `[r, inner]`, B is `[inner, r]`.
const LAYOUT_A: usize = 0;
const LAYOUT_B: usize = 1;

/// Rows per chunk of the factor-gradient reductions: long enough that the partial sums stay
/// few, short enough that a 2048-token batch spreads over eight workgroup rows.
const CHUNK_ROWS: usize = 256;

/// Computes `scale · lhsᵀ · rhs`, summed over the rows: chunked partial sums from the shader,
/// then burn's reduction over the chunks.
///
/// NOTE: on llvmpipe a single invocation summing more than 65 535 rows returned wrong sums that
/// changed from run to run. The cause is not known, so the chunks keep every loop short.
fn factor_gradient(lhs: CubeTensor, rhs: CubeTensor, scale: f32) -> CubeTensor {
    let [rows, m] = dims(&lhs);
    let [_, n] = dims(&rhs);
    let chunk = CHUNK_ROWS.max(rows.div_ceil(MAX_GROUPS as usize));
    let chunks = rows.div_ceil(chunk).max(1);
    let dims = [rows, m, n, chunk].map(|d| d as u32);
    let partial = launch(Shader::GradFactors, &[lhs, rhs], [chunks, m * n], &dims, Some(scale));
    let total = Cube::float_sum_dim(partial, 0);
    Cube::float_reshape(total, Shape::from([m, n]))
}

impl LoraKernels for Cube {
    fn lora_linear(
        x: CubeTensor,
        xd: CubeTensor,
        weight: CubeTensor,
        bias: CubeTensor,
        lora_a: CubeTensor,
        lora_b: CubeTensor,
        scaling: f32,
    ) -> CubeTensor {
        <Cube as LoraKernelParts>::lora_forward(x, xd, weight, bias, lora_a, lora_b, scaling).0
    }
}

/// The backward step of the fused layer. Parents: `x`, `xd`, `A`, `B`; the base weight and bias
/// are frozen constants.
#[derive(Debug)]
struct LoraBackward;

/// State of the backward step: `xd`, `W`, `A`, `B`, the saved `h`, the scaling, and whether
/// `x` and `xd` are one tensor (no adapter dropout).
type LoraState<B> = (
    FloatTensor<B>,
    FloatTensor<B>,
    FloatTensor<B>,
    FloatTensor<B>,
    FloatTensor<B>,
    f32,
    bool,
);

impl<B: Backend + LoraKernelParts> Backward<B, 4> for LoraBackward {
    type State = LoraState<B>;

    fn backward(self, ops: Ops<Self::State, 4>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let (xd, weight, lora_a, lora_b, hidden, scaling, same_input) = ops.state;
        let dy = grads.consume::<B>(&ops.node);
        let [x_parent, xd_parent, a_parent, b_parent] = ops.parents;

        let (g, grad_a, grad_b) = B::lora_backward_factors(dy.clone(), xd, lora_b, hidden, scaling);
        if let Some(node) = a_parent {
            grads.register::<B>(node.id, grad_a);
        }
        if let Some(node) = b_parent {
            grads.register::<B>(node.id, grad_b);
        }
        if same_input {
            if let Some(node) = x_parent {
                grads.register::<B>(node.id, B::lora_backward_input(dy, weight, g, lora_a));
            }
            return;
        }
        if let Some(node) = x_parent {
            grads.register::<B>(node.id, B::float_matmul(dy, B::float_transpose(weight)));
        }
        if let Some(node) = xd_parent {
            grads.register::<B>(node.id, B::float_matmul(g, lora_a));
        }
    }
}

impl<B: Backend + LoraKernelParts, C: CheckpointStrategy> LoraKernels for Autodiff<B, C> {
    fn lora_linear(
        x: FloatTensor<Self>,
        xd: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        lora_a: FloatTensor<Self>,
        lora_b: FloatTensor<Self>,
        scaling: f32,
    ) -> FloatTensor<Self> {
        let same_input = x.id() == xd.id();
        let nodes = [x.node(), xd.node(), lora_a.node(), lora_b.node()];
        let (x, xd) = (x.into_primitive(), xd.into_primitive());
        let (weight, bias) = (weight.into_primitive(), bias.into_primitive());
        let (lora_a, lora_b) = (lora_a.into_primitive(), lora_b.into_primitive());
        match LoraBackward.prepare::<C>(nodes).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let (output, hidden) = B::lora_forward(x, xd.clone(), weight.clone(), bias, lora_a.clone(), lora_b.clone(), scaling);
                prep.finish((xd, weight, lora_a, lora_b, hidden, scaling, same_input), output)
            }
            OpsKind::UnTracked(prep) => {
                let (output, _) = B::lora_forward(x, xd, weight, bias, lora_a, lora_b, scaling);
                prep.finish(output)
            }
        }
    }
}
