//! BERT's self-attention core on burn's CPU backend (flex) as one fused backend extension:
//! `softmax(Q·Kᵀ/√d + bias)`, dropout on the probabilities, times `V`, forward and backward,
//! per (sequence, head) in cache-sized tiles on all cores.
//!
//! Composed from burn operations the same math took about half of a MiniLM training step on
//! the CPU. flex multiplies the `seq × head_dim × seq` products through a general matrix
//! library at under 20 GFLOP/s (measured at MiniLM's shapes). The mask, softmax, dropout and
//! their gradients each make a pass over `batch × heads × seq²` values. Here each head's scores
//! stay in a tile of `seq²` floats, and only the probabilities and the dropout draws are kept
//! for the backward pass.
//!
//! Inputs and output keep the linear layers' layout `[batch, seq, heads · head_dim]`, so no
//! head split or merge is copied. The sequence and head sizes are padded to a multiple of
//! [`TILE`] inside the kernel: padded keys get a zero probability, padded query rows and
//! head columns are never written out.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Flex, TensorMetadata, backend_extension};
use burn::tensor::TensorData;

use super::register_gradients;
use super::simd::simd_dispatch;
use super::threads::{float32_values, row_major};
use super::threads::ThreadPlan;
use super::tile::{Left, MulAdd, TILE, add_product, exp};
use crate::rng::splitmix64;

/// The settings of one attention call.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AttentionSpec {
    /// Number of heads. The last input dimension must be a multiple of it.
    pub heads: usize,
    /// Probability of zeroing each attention probability (dropout), `0` in evaluation.
    pub dropout: f64,
    /// Key of the dropout draws: the same key gives the same draws on any number of threads.
    pub mask_key: u64,
}

/// Multi-head scaled dot-product attention on the CPU backend.
#[backend_extension(Flex, Autodiff)]
pub trait CpuAttention: Backend {
    /// Attends with `q`, `k`, `v` of shape `[batch, seq, heads · head_dim]` and the additive
    /// key bias `[batch, seq]`, large negative for padded keys (it gets no gradient). Returns
    /// the heads' contexts side by side, `[batch, seq, heads · head_dim]` (float32 tensors).
    fn cpu_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        key_bias: FloatTensor<Self>,
        spec: AttentionSpec,
    ) -> FloatTensor<Self>;
}

/// The kernels behind [`CpuAttention`] on a backend without autodiff.
pub trait CpuAttentionParts: Backend {
    /// The state a tracked forward pass keeps for the backward pass.
    type Saved: Clone + Send + fmt::Debug + 'static;

    /// Computes the attention output, and with `save` what the backward pass needs.
    fn attention_forward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        key_bias: FloatTensor<Self>,
        spec: AttentionSpec,
        save: bool,
    ) -> (FloatTensor<Self>, Option<Self::Saved>);

    /// Computes the gradients of `q`, `k` and `v` from the output's gradient `dy`, each only
    /// where `needed` is set.
    fn attention_backward(saved: Self::Saved, dy: FloatTensor<Self>, needed: [bool; 3]) -> [Option<FloatTensor<Self>>; 3];
}

/// Sizes of one attention call.
#[derive(Debug, Clone, Copy)]
struct Geometry {
    batch: usize,
    seq: usize,
    heads: usize,
    head_dim: usize,
    /// `seq` padded to a multiple of [`TILE`].
    seq_pad: usize,
    /// `head_dim` padded to a multiple of [`TILE`].
    dim_pad: usize,
}

impl Geometry {
    fn new(shape: &[usize], heads: usize) -> Self {
        assert_eq!(shape.len(), 3, "attention inputs are [batch, seq, hidden], got {shape:?}");
        let [batch, seq, hidden] = [shape[0], shape[1], shape[2]];
        assert!(heads > 0, "attention needs at least one head");
        assert!(hidden % heads == 0, "hidden size {hidden} is not a multiple of {heads} heads");
        let head_dim = hidden / heads;
        Self { batch, seq, heads, head_dim, seq_pad: seq.next_multiple_of(TILE), dim_pad: head_dim.next_multiple_of(TILE) }
    }

    fn hidden(&self) -> usize {
        self.heads * self.head_dim
    }

    /// Values per sequence in `[seq, hidden]` inputs and outputs.
    fn rows_len(&self) -> usize {
        self.seq * self.hidden()
    }

    /// Values per sequence of the kept probabilities, `[heads, seq_pad, seq_pad]`.
    fn probs_len(&self) -> usize {
        self.heads * self.seq_pad * self.seq_pad
    }
}

/// The state a tracked CPU attention keeps: the inputs, the probabilities before dropout, and
/// which of them dropout kept (when dropout is on).
#[derive(Clone)]
pub struct FlexAttentionSaved {
    q: FloatTensor<Flex>,
    k: FloatTensor<Flex>,
    v: FloatTensor<Flex>,
    probs: Arc<Vec<f32>>,
    keep_flags: Option<Arc<Vec<u8>>>,
    geometry: Geometry,
    spec: AttentionSpec,
}

impl fmt::Debug for FlexAttentionSaved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FlexAttentionSaved").field("geometry", &self.geometry).field("spec", &self.spec).finish()
    }
}

impl CpuAttentionParts for Flex {
    type Saved = FlexAttentionSaved;

    fn attention_forward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        key_bias: FloatTensor<Self>,
        spec: AttentionSpec,
        save: bool,
    ) -> (FloatTensor<Self>, Option<Self::Saved>) {
        let shape = q.shape();
        let geometry = Geometry::new(&shape, spec.heads);
        for (name, tensor) in [("k", &k), ("v", &v)] {
            assert_eq!(tensor.shape(), shape, "attention `{name}` differs in shape from `q`");
        }
        let (q, k, v, key_bias) = (row_major(q), row_major(k), row_major(v), row_major(key_bias));
        let bias = float32_values(&key_bias);
        assert_eq!(bias.len(), geometry.batch * geometry.seq, "the key bias must be [batch, seq]");

        let dropout = spec.dropout > 0.0;
        let mut output = vec![0f32; geometry.batch * geometry.rows_len()];
        let probs_len = if save { geometry.probs_len() } else { 0 };
        let keep_len = if dropout { probs_len } else { 0 };
        let mut probs = vec![0f32; geometry.batch * probs_len];
        let mut keep_flags = vec![0u8; geometry.batch * keep_len];
        let inputs = Inputs { q: float32_values(&q), k: float32_values(&k), v: float32_values(&v), bias };
        let plan = ThreadPlan::new(geometry.batch);
        let jobs = plan
            .ranges()
            .into_iter()
            .zip(plan.split(&mut output, geometry.rows_len()))
            .zip(plan.split(&mut probs, probs_len))
            .zip(plan.split(&mut keep_flags, keep_len))
            .map(|(((sequences, output), probs), keep_flags)| ForwardJob { sequences, output, probs, keep_flags })
            .collect();
        plan.run(jobs, |job| forward_job(&geometry, &spec, &inputs, job));

        let output = FloatTensor::<Self>::from_data(TensorData::new(output, shape));
        let saved = save.then(|| FlexAttentionSaved {
            q,
            k,
            v,
            probs: Arc::new(probs),
            keep_flags: dropout.then(|| Arc::new(keep_flags)),
            geometry,
            spec,
        });
        (output, saved)
    }

    fn attention_backward(saved: Self::Saved, dy: FloatTensor<Self>, needed: [bool; 3]) -> [Option<FloatTensor<Self>>; 3] {
        let geometry = saved.geometry;
        let shape = saved.q.shape();
        let dy = row_major(dy);
        let len = geometry.batch * geometry.rows_len();
        let buffer = |need: bool| vec![0f32; if need { len } else { 0 }];
        let (mut dq, mut dk, mut dv) = (buffer(needed[0]), buffer(needed[1]), buffer(needed[2]));
        let inputs = Inputs {
            q: float32_values(&saved.q),
            k: float32_values(&saved.k),
            v: float32_values(&saved.v),
            bias: &[],
        };

        let upstream = float32_values(&dy);
        let probs: &[f32] = &saved.probs;
        let keep_flags: &[u8] = saved.keep_flags.as_deref().map_or(&[], |flags| flags.as_slice());
        let rows = |need: bool| if need { geometry.rows_len() } else { 0 };
        let plan = ThreadPlan::new(geometry.batch);
        let jobs = plan
            .ranges()
            .into_iter()
            .zip(plan.split(&mut dq, rows(needed[0])))
            .zip(plan.split(&mut dk, rows(needed[1])))
            .zip(plan.split(&mut dv, rows(needed[2])))
            .map(|(((sequences, dq), dk), dv)| BackwardJob { sequences, dq, dk, dv })
            .collect();

        let saved_parts = SavedParts { inputs: &inputs, upstream, probs, keep_flags };
        plan.run(jobs, |job| backward_job(&geometry, &saved.spec, &saved_parts, job));
        let wrap = |values: Vec<f32>, need: bool| {
            need.then(|| FloatTensor::<Self>::from_data(TensorData::new(values, shape.clone())))
        };

        [wrap(dq, needed[0]), wrap(dk, needed[1]), wrap(dv, needed[2])]
    }
}

impl CpuAttention for Flex {
    fn cpu_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        key_bias: FloatTensor<Self>,
        spec: AttentionSpec,
    ) -> FloatTensor<Self> {
        <Flex as CpuAttentionParts>::attention_forward(q, k, v, key_bias, spec, false).0
    }
}

/// The backward step of [`CpuAttention`].
#[derive(Debug)]
struct AttentionBackward;

impl<B: Backend + CpuAttentionParts> Backward<B, 3> for AttentionBackward {
    type State = B::Saved;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let dy = grads.consume::<B>(&ops.node);
        let parents = ops.parents.map(|parent| parent.map(|node| node.id));
        let gradients = B::attention_backward(ops.state, dy, parents.map(|parent| parent.is_some()));
        register_gradients::<B, 3>(grads, parents, gradients);
    }
}

impl<B: Backend + CpuAttentionParts, C: CheckpointStrategy> CpuAttention for Autodiff<B, C> {
    fn cpu_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        key_bias: FloatTensor<Self>,
        spec: AttentionSpec,
    ) -> FloatTensor<Self> {
        let nodes = [q.node(), k.node(), v.node()];
        let (q, k, v) = (q.into_primitive(), k.into_primitive(), v.into_primitive());
        let key_bias = key_bias.into_primitive();
        match AttentionBackward.prepare::<C>(nodes).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let (output, saved) = B::attention_forward(q, k, v, key_bias, spec, true);
                prep.finish(saved.expect("a forward pass asked to save returns its state"), output)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::attention_forward(q, k, v, key_bias, spec, false).0),
        }
    }
}

/// The forward inputs as float32 values, `[batch, seq, hidden]` and the bias `[batch, seq]`.
struct Inputs<'a> {
    q: &'a [f32],
    k: &'a [f32],
    v: &'a [f32],
    bias: &'a [f32],
}

/// The backward pass's operands: the inputs, the output's gradient, the kept probabilities
/// `[batch, heads, seq_pad, seq_pad]`, and the dropout draws (empty without dropout).
struct SavedParts<'a> {
    inputs: &'a Inputs<'a>,
    upstream: &'a [f32],
    probs: &'a [f32],
    keep_flags: &'a [u8],
}

/// One thread's share of a forward pass: a range of sequences and their parts of the output,
/// the kept probabilities and the dropout draws (the last two empty when not kept).
struct ForwardJob<'a> {
    sequences: Range<usize>,
    output: &'a mut [f32],
    probs: &'a mut [f32],
    keep_flags: &'a mut [u8],
}

/// One thread's share of a backward pass: a range of sequences and their parts of the three
/// gradients (empty where a gradient is not needed).
struct BackwardJob<'a> {
    sequences: Range<usize>,
    dq: &'a mut [f32],
    dk: &'a mut [f32],
    dv: &'a mut [f32],
}

/// Per-thread work buffers, zeroed once: padded rows and columns are never written, so they
/// stay zero for every head.
struct Scratch {
    /// A head's `Q·scale` (forward) or `dY` (backward), `[seq_pad, dim_pad]`.
    rows: Vec<f32>,
    /// A head's `Kᵀ` (forward) or `Vᵀ` (backward), `[dim_pad, seq_pad]`.
    columns: Vec<f32>,
    /// A head's `V` (forward), or `K` or `Q` (backward), `[seq_pad, dim_pad]`.
    values: Vec<f32>,
    /// A product of width `head_dim`, `[seq_pad, dim_pad]`.
    product: Vec<f32>,
    /// The probabilities when they are not kept (forward) or `dP` (backward), `[seq_pad, seq_pad]`.
    square: Vec<f32>,
    /// The probabilities after dropout, `[seq_pad, seq_pad]`.
    dropped: Vec<f32>,
    /// `dS` (backward), `[seq_pad, seq_pad]`.
    scores_grad: Vec<f32>,
}

impl Scratch {
    fn new(g: &Geometry) -> Self {
        let narrow = || vec![0f32; g.seq_pad * g.dim_pad];
        let square = || vec![0f32; g.seq_pad * g.seq_pad];
        Self {
            rows: narrow(),
            columns: narrow(),
            values: narrow(),
            product: narrow(),
            square: square(),
            dropped: square(),
            scores_grad: square(),
        }
    }
}

/// Dropout draws for one attention call: element `(b, h, i, j)` is kept when a hash of its
/// index and the key is at or above `prob · 2³²`.
struct Draws {
    key: u64,
    threshold: u64,
    keep_scale: f32,
}

impl Draws {
    fn new(spec: &AttentionSpec) -> Self {
        Self {
            key: spec.mask_key,
            threshold: (spec.dropout * 4_294_967_296.0) as u64,
            keep_scale: (1.0 / (1.0 - spec.dropout)) as f32,
        }
    }

    /// Returns whether element `index` (of `[batch, heads, seq, seq]`) is kept.
    #[inline(always)]
    fn keeps(&self, index: u64) -> bool {
        splitmix64(self.key ^ index.wrapping_mul(0xD1B5_4A32_D192_ED03)) & 0xFFFF_FFFF >= self.threshold
    }
}

/// Large negative score for the padded keys, as the model's own mask.
const MASKED: f32 = f32::MIN;

simd_dispatch! {
    /// Runs [`forward_sequences`] for the detected instruction set.
    fn forward_job(g: &Geometry, spec: &AttentionSpec, inputs: &Inputs<'_>, job: ForwardJob<'_>) => forward_sequences
}

simd_dispatch! {
    /// Runs [`backward_sequences`] for the detected instruction set.
    fn backward_job(g: &Geometry, spec: &AttentionSpec, saved: &SavedParts<'_>, job: BackwardJob<'_>) => backward_sequences
}

/// Computes the forward pass for the sequences of `job`.
#[inline(always)]
fn forward_sequences<F: MulAdd>(g: &Geometry, spec: &AttentionSpec, inputs: &Inputs<'_>, job: ForwardJob<'_>) {
    let (sp, dp) = (g.seq_pad, g.dim_pad);
    let square = sp * sp;
    let scale = 1.0 / (g.head_dim as f32).sqrt();
    let draws = (spec.dropout > 0.0).then(|| Draws::new(spec));
    let mut s = Scratch::new(g);
    for (local, b) in job.sequences.clone().enumerate() {
        let rows = b * g.rows_len()..(b + 1) * g.rows_len();
        let bias = &inputs.bias[b * g.seq..(b + 1) * g.seq];
        let output = &mut job.output[local * g.rows_len()..(local + 1) * g.rows_len()];
        for h in 0..g.heads {
            let slot = (local * g.heads + h) * square;
            let probs = if job.probs.is_empty() { &mut s.square[..] } else { &mut job.probs[slot..slot + square] };
            gather(&inputs.q[rows.clone()], g, h, scale, &mut s.rows);
            gather_transposed(&inputs.k[rows.clone()], g, h, &mut s.columns);
            gather(&inputs.v[rows.clone()], g, h, 1.0, &mut s.values);

            for row in probs.chunks_exact_mut(sp) {
                row[..g.seq].copy_from_slice(bias);
                row[g.seq..].fill(MASKED);
            }
            add_product::<F>((sp, sp, dp), &s.rows, Left::Rows(dp), &s.columns, sp, probs, sp);
            for (i, row) in probs.chunks_exact_mut(sp).enumerate() {
                if i < g.seq { softmax(row) } else { row.fill(0.0) }
            }

            let weights: &[f32] = match &draws {
                None => probs,
                Some(draws) => {
                    let first = ((b * g.heads + h) * g.seq * g.seq) as u64;
                    for i in 0..g.seq {
                        let range = i * sp..i * sp + g.seq;
                        for (j, (out, &p)) in s.dropped[range.clone()].iter_mut().zip(&probs[range.clone()]).enumerate() {
                            let keep = draws.keeps(first + (i * g.seq + j) as u64);
                            *out = if keep { p * draws.keep_scale } else { 0.0 };
                            if !job.keep_flags.is_empty() {
                                job.keep_flags[slot + i * sp + j] = u8::from(keep);
                            }
                        }
                    }
                    &s.dropped
                }
            };
            s.product.fill(0.0);
            add_product::<F>((sp, dp, sp), weights, Left::Rows(sp), &s.values, dp, &mut s.product, dp);
            scatter(&s.product, g, h, output);
        }
    }
}

/// Computes the backward pass for the sequences of `job`.
#[inline(always)]
fn backward_sequences<F: MulAdd>(g: &Geometry, spec: &AttentionSpec, saved: &SavedParts<'_>, job: BackwardJob<'_>) {
    let (sp, dp) = (g.seq_pad, g.dim_pad);
    let square = sp * sp;
    let scale = 1.0 / (g.head_dim as f32).sqrt();
    let keep_scale = (1.0 / (1.0 - spec.dropout)) as f32;
    let inputs = saved.inputs;
    let mut s = Scratch::new(g);
    for (local, b) in job.sequences.clone().enumerate() {
        let rows = b * g.rows_len()..(b + 1) * g.rows_len();
        let out_rows = local * g.rows_len()..(local + 1) * g.rows_len();
        for h in 0..g.heads {
            let slot = (b * g.heads + h) * square;
            let probs = &saved.probs[slot..slot + square];
            gather(&saved.upstream[rows.clone()], g, h, 1.0, &mut s.rows);
            gather_transposed(&inputs.v[rows.clone()], g, h, &mut s.columns);
            s.square.fill(0.0);
            add_product::<F>((sp, sp, dp), &s.rows, Left::Rows(dp), &s.columns, sp, &mut s.square, sp);

            // dP = dropout(dPd); dS = scale · P ⊙ (dP − Σⱼ dP·P), row by row.
            for i in 0..g.seq {
                let range = i * sp..(i + 1) * sp;
                let p = &probs[range.clone()];
                let grad = &mut s.square[range.clone()];
                let dropped = &mut s.dropped[range.clone()];
                if saved.keep_flags.is_empty() {
                    dropped.copy_from_slice(p);
                } else {
                    let keep_flags = &saved.keep_flags[slot + i * sp..slot + (i + 1) * sp];
                    for ((d, g), (&p, &k)) in dropped.iter_mut().zip(grad.iter_mut()).zip(p.iter().zip(keep_flags)) {
                        let factor = f32::from(k) * keep_scale;
                        *d = p * factor;
                        *g *= factor;
                    }
                }
                let dot = dot::<F>(grad, p);
                for ((out, &g), &p) in s.scores_grad[range].iter_mut().zip(grad.iter()).zip(p) {
                    *out = scale * p * (g - dot);
                }
            }

            if !job.dv.is_empty() {
                s.product.fill(0.0);
                add_product::<F>((sp, dp, sp), &s.dropped, Left::Transposed(sp), &s.rows, dp, &mut s.product, dp);
                scatter(&s.product, g, h, &mut job.dv[out_rows.clone()]);
            }
            if !job.dq.is_empty() {
                gather(&inputs.k[rows.clone()], g, h, 1.0, &mut s.values);
                s.product.fill(0.0);
                add_product::<F>((sp, dp, sp), &s.scores_grad, Left::Rows(sp), &s.values, dp, &mut s.product, dp);
                scatter(&s.product, g, h, &mut job.dq[out_rows.clone()]);
            }
            if !job.dk.is_empty() {
                gather(&inputs.q[rows.clone()], g, h, 1.0, &mut s.values);
                s.product.fill(0.0);
                add_product::<F>((sp, dp, sp), &s.scores_grad, Left::Transposed(sp), &s.values, dp, &mut s.product, dp);
                scatter(&s.product, g, h, &mut job.dk[out_rows.clone()]);
            }
        }
    }
}

/// Replaces a row of scores by its softmax. The row length is a multiple of [`TILE`], so the
/// maximum and the sum run over `TILE` lanes at once.
#[inline(always)]
fn softmax(row: &mut [f32]) {
    let mut lanes = [MASKED; TILE];
    for chunk in row.chunks_exact(TILE) {
        for (lane, &x) in lanes.iter_mut().zip(chunk) {
            *lane = lane.max(x);
        }
    }
    let max = lanes.iter().fold(MASKED, |m, &x| m.max(x));
    let mut sums = [0f32; TILE];
    for chunk in row.chunks_exact_mut(TILE) {
        for (sum, x) in sums.iter_mut().zip(chunk) {
            *x = exp(*x - max);
            *sum += *x;
        }
    }
    let inverse = 1.0 / sums.iter().sum::<f32>();
    for x in row.iter_mut() {
        *x *= inverse;
    }
}

/// Returns `Σ a·b` over rows whose length is a multiple of [`TILE`].
#[inline(always)]
fn dot<F: MulAdd>(a: &[f32], b: &[f32]) -> f32 {
    let mut sums = [0f32; TILE];
    for (x, y) in a.chunks_exact(TILE).zip(b.chunks_exact(TILE)) {
        for ((sum, &x), &y) in sums.iter_mut().zip(x).zip(y) {
            *sum = F::mul_add(x, y, *sum);
        }
    }
    sums.iter().sum()
}

/// Copies head `h` of one sequence's `[seq, hidden]` rows, times `scale`, into `[seq_pad, dim_pad]`.
#[inline(always)]
fn gather(rows: &[f32], g: &Geometry, h: usize, scale: f32, out: &mut [f32]) {
    let columns = h * g.head_dim..(h + 1) * g.head_dim;
    for (row, out_row) in rows.chunks_exact(g.hidden()).zip(out.chunks_exact_mut(g.dim_pad)) {
        for (out, &x) in out_row.iter_mut().zip(&row[columns.clone()]) {
            *out = x * scale;
        }
    }
}

/// Copies head `h` of one sequence's `[seq, hidden]` rows, transposed, into `[dim_pad, seq_pad]`.
#[inline(always)]
fn gather_transposed(rows: &[f32], g: &Geometry, h: usize, out: &mut [f32]) {
    // Column by column, so that the writes run along `out`'s rows.
    for (d, out_row) in out.chunks_exact_mut(g.seq_pad).take(g.head_dim).enumerate() {
        let column = h * g.head_dim + d;
        for (out, row) in out_row.iter_mut().zip(rows.chunks_exact(g.hidden())) {
            *out = row[column];
        }
    }
}

/// Writes the `[seq_pad, dim_pad]` product of head `h` into one sequence's `[seq, hidden]` rows.
#[inline(always)]
fn scatter(product: &[f32], g: &Geometry, h: usize, rows: &mut [f32]) {
    let columns = h * g.head_dim..(h + 1) * g.head_dim;
    for (row, product_row) in rows.chunks_exact_mut(g.hidden()).zip(product.chunks_exact(g.dim_pad)) {
        row[columns.clone()].copy_from_slice(&product_row[..g.head_dim]);
    }
}
