//! The frozen base layers' `y = x·W + b` on burn's CPU backend (flex) as a backend extension,
//! forward and backward, on all cores through coto's register-tile product.
//!
//! burn flex hands these products to a general matrix library. On the development machine's two
//! AVX-512 cores it reached about 110 GFLOP/s for wide outputs (`384 → 1536` at MiniLM's
//! shapes) and about 200 GFLOP/s otherwise. The tile product reaches 170 to 215 GFLOP/s for
//! all three shapes of MiniLM's layers. `coto bench --device cpu` measures the effect on a
//! training step.

use std::fmt;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Flex, TensorMetadata, backend_extension};
use burn::tensor::{Shape, TensorData};

use super::simd::simd_dispatch;
use super::threads::{ThreadPlan, float32_values, row_major};
use super::tile::{Left, MulAdd, TILE, add_product};

/// A linear layer on the CPU backend.
#[backend_extension(Flex, Autodiff)]
pub trait CpuLinear: Backend {
    /// Computes `x·weight + bias` for `x: [..., in]`, `weight: [in, out]` and `bias: [out]`
    /// (float32 tensors, `in` and `out` multiples of 16).
    fn cpu_linear(x: FloatTensor<Self>, weight: FloatTensor<Self>, bias: FloatTensor<Self>) -> FloatTensor<Self>;
}

/// The kernels behind [`CpuLinear`] on a backend without autodiff.
pub trait CpuLinearParts: Backend {
    /// Computes `x·weight + bias`.
    fn linear_forward(x: FloatTensor<Self>, weight: FloatTensor<Self>, bias: FloatTensor<Self>) -> FloatTensor<Self>;
    /// Computes the input's gradient `dy·weightᵀ`, shaped as `x`.
    fn linear_input_grad(weight: FloatTensor<Self>, dy: FloatTensor<Self>, x_shape: Shape) -> FloatTensor<Self>;
    /// Computes the weight's gradient `xᵀ·dy`.
    fn linear_weight_grad(x: FloatTensor<Self>, dy: FloatTensor<Self>) -> FloatTensor<Self>;
    /// Computes the bias's gradient, the sum of `dy` over all rows.
    fn linear_bias_grad(dy: FloatTensor<Self>) -> FloatTensor<Self>;
}

/// Returns whether [`CpuLinear`] takes a layer of these sizes.
pub fn cpu_linear_fits(inputs: usize, outputs: usize) -> bool {
    inputs % TILE == 0 && outputs % TILE == 0 && inputs > 0 && outputs > 0
}

/// The operands of one product `C (+)= A·B` over rows split among threads.
#[derive(Clone, Copy)]
struct Product<'a> {
    /// `A`, `[rows, k]` (or `[k, m]` stored transposed).
    a: &'a [f32],
    left_transposed: bool,
    /// `B`, `[k, n]` row-major.
    b: &'a [f32],
    m: usize,
    n: usize,
    k: usize,
}

impl CpuLinearParts for Flex {
    fn linear_forward(x: FloatTensor<Self>, weight: FloatTensor<Self>, bias: FloatTensor<Self>) -> FloatTensor<Self> {
        let [inputs, outputs] = matrix_dims(&weight);
        let mut shape = x.shape();
        let last = shape.num_dims() - 1;
        assert_eq!(shape[last], inputs, "the input has {} features, the weight {inputs}", shape[last]);
        let (x, weight, bias) = (row_major(x), row_major(weight), row_major(bias));
        let values = float32_values(&x);
        let rows = values.len() / inputs;
        let bias = float32_values(&bias);
        assert_eq!(bias.len(), outputs, "the bias must have {outputs} values");

        // Every row starts as the bias, written once instead of zeroed and then copied.
        let mut output = bias.repeat(rows);
        let product = Product { a: values, left_transposed: false, b: float32_values(&weight), m: rows, n: outputs, k: inputs };
        add_rows_parallel(&product, &mut output);
        shape[last] = outputs;
        FloatTensor::<Self>::from_data(TensorData::new(output, shape))
    }

    fn linear_input_grad(weight: FloatTensor<Self>, dy: FloatTensor<Self>, x_shape: Shape) -> FloatTensor<Self> {
        let [inputs, outputs] = matrix_dims(&weight);
        let (weight, dy) = (row_major(weight), row_major(dy));
        let upstream = float32_values(&dy);
        let rows = upstream.len() / outputs;
        // `B = Wᵀ`, `[out, in]`, copied once: the tile product reads `B` row by row.
        let mut weight_t = vec![0f32; inputs * outputs];
        for (i, row) in float32_values(&weight).chunks_exact(outputs).enumerate() {
            for (o, &w) in row.iter().enumerate() {
                weight_t[o * inputs + i] = w;
            }
        }
        let mut grad = vec![0f32; rows * inputs];
        let product = Product { a: upstream, left_transposed: false, b: &weight_t, m: rows, n: inputs, k: outputs };
        add_rows_parallel(&product, &mut grad);
        FloatTensor::<Self>::from_data(TensorData::new(grad, x_shape))
    }

    fn linear_weight_grad(x: FloatTensor<Self>, dy: FloatTensor<Self>) -> FloatTensor<Self> {
        let (x, dy) = (row_major(x), row_major(dy));
        let (values, upstream) = (float32_values(&x), float32_values(&dy));
        let inputs = x.shape()[x.shape().num_dims() - 1];
        let outputs = dy.shape()[dy.shape().num_dims() - 1];
        let rows = values.len() / inputs;
        let mut grad = vec![0f32; inputs * outputs];
        let product = Product { a: values, left_transposed: true, b: upstream, m: inputs, n: outputs, k: rows };
        add_rows_parallel(&product, &mut grad);
        FloatTensor::<Self>::from_data(TensorData::new(grad, [inputs, outputs]))
    }

    fn linear_bias_grad(dy: FloatTensor<Self>) -> FloatTensor<Self> {
        let dy = row_major(dy);
        let outputs = dy.shape()[dy.shape().num_dims() - 1];
        let mut grad = vec![0f32; outputs];
        for row in float32_values(&dy).chunks_exact(outputs) {
            for (sum, &value) in grad.iter_mut().zip(row) {
                *sum += value;
            }
        }
        FloatTensor::<Self>::from_data(TensorData::new(grad, [outputs]))
    }
}

impl CpuLinear for Flex {
    fn cpu_linear(x: FloatTensor<Self>, weight: FloatTensor<Self>, bias: FloatTensor<Self>) -> FloatTensor<Self> {
        <Flex as CpuLinearParts>::linear_forward(x, weight, bias)
    }
}

/// The saved operands of a tracked [`CpuLinear`]: the input (when the weight needs a gradient),
/// the weight, and the input's shape.
#[derive(Clone)]
pub struct LinearSaved<B: Backend> {
    x: Option<FloatTensor<B>>,
    weight: FloatTensor<B>,
    x_shape: Shape,
}

impl<B: Backend> fmt::Debug for LinearSaved<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LinearSaved").field("x_shape", &self.x_shape).finish()
    }
}

/// The backward step of [`CpuLinear`].
#[derive(Debug)]
struct LinearBackward;

impl<B: Backend + CpuLinearParts> Backward<B, 3> for LinearBackward {
    type State = LinearSaved<B>;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let dy = grads.consume::<B>(&ops.node);
        let [x_node, weight_node, bias_node] = ops.parents;
        let saved = ops.state;
        if let Some(node) = bias_node {
            grads.register::<B>(node.id, B::linear_bias_grad(dy.clone()));
        }
        if let (Some(node), Some(x)) = (weight_node, saved.x) {
            grads.register::<B>(node.id, B::linear_weight_grad(x, dy.clone()));
        }
        if let Some(node) = x_node {
            grads.register::<B>(node.id, B::linear_input_grad(saved.weight, dy, saved.x_shape));
        }
    }
}

impl<B: Backend + CpuLinearParts, C: CheckpointStrategy> CpuLinear for Autodiff<B, C> {
    fn cpu_linear(x: FloatTensor<Self>, weight: FloatTensor<Self>, bias: FloatTensor<Self>) -> FloatTensor<Self> {
        let weight_tracked = weight.is_tracked();
        let nodes = [x.node(), weight.node(), bias.node()];
        let (x, weight, bias) = (x.into_primitive(), weight.into_primitive(), bias.into_primitive());
        match LinearBackward.prepare::<C>(nodes).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let saved = LinearSaved { x: weight_tracked.then(|| x.clone()), weight: weight.clone(), x_shape: x.shape() };
                prep.finish(saved, B::linear_forward(x, weight, bias))
            }
            OpsKind::UnTracked(prep) => prep.finish(B::linear_forward(x, weight, bias)),
        }
    }
}

/// Returns `[rows, columns]` of a matrix.
fn matrix_dims(weight: &FloatTensor<Flex>) -> [usize; 2] {
    let shape = weight.shape();
    assert_eq!(shape.num_dims(), 2, "a linear weight is [in, out], got {shape:?}");
    [shape[0], shape[1]]
}

/// Adds `A·B` to `out` (`m × n`), the rows shared among threads in blocks of [`TILE`]; a last
/// block of fewer rows runs through a zero-padded copy.
fn add_rows_parallel(product: &Product<'_>, out: &mut [f32]) {
    let blocks = product.m / TILE;
    let plan = ThreadPlan::new(blocks);
    let jobs: Vec<_> = plan.ranges().into_iter().zip(plan.split(&mut out[..blocks * TILE * product.n], TILE * product.n)).collect();
    plan.run(jobs, |(range, part)| add_rows(product, range.start * TILE, range.len() * TILE, part));

    let tail = product.m - blocks * TILE;
    if tail > 0 {
        let start = blocks * TILE;
        let mut padded = vec![0f32; TILE * product.n];
        padded[..tail * product.n].copy_from_slice(&out[start * product.n..]);
        if product.left_transposed {
            // Gather the tail's columns of the stored `[k, m]` matrix into a `[k, TILE]` block.
            let mut a = vec![0f32; product.k * TILE];
            for (p, row) in product.a.chunks_exact(product.m).enumerate() {
                a[p * TILE..p * TILE + tail].copy_from_slice(&row[start..]);
            }
            let block = Product { a: &a, m: TILE, ..*product };
            add_rows(&block, 0, TILE, &mut padded);
        } else {
            let mut a = vec![0f32; TILE * product.k];
            a[..tail * product.k].copy_from_slice(&product.a[start * product.k..]);
            let block = Product { a: &a, m: TILE, ..*product };
            add_rows(&block, 0, TILE, &mut padded);
        }
        out[start * product.n..].copy_from_slice(&padded[..tail * product.n]);
    }
}

simd_dispatch! {
    /// Runs [`add_rows_generic`] for the detected instruction set.
    fn add_rows(product: &Product<'_>, first: usize, count: usize, out: &mut [f32]) => add_rows_generic
}

/// Adds rows `first..first + count` of `A·B` to `out` (those rows only).
#[inline(always)]
fn add_rows_generic<F: MulAdd>(product: &Product<'_>, first: usize, count: usize, out: &mut [f32]) {
    let Product { a, left_transposed, b, m, n, k } = *product;
    if left_transposed {
        add_product::<F>((count, n, k), &a[first..], Left::Transposed(m), b, n, out, n);
    } else {
        add_product::<F>((count, n, k), &a[first * k..], Left::Rows(k), b, n, out, n);
    }
}
