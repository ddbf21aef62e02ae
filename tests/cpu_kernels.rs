//! Tests of coto's CPU kernels against the same math composed from burn operations. They cover
//! the fused attention (`kernels::CpuAttention`: values, gradients, padding of odd sizes,
//! dropout draws), the base linear layer (`kernels::CpuLinear`) and layer normalisation
//! (`kernels::CpuLayerNorm`).

use burn::backend::Dispatch;
use burn::module::Param;
use burn::nn::LayerNormConfig;
use burn::tensor::activation::softmax;
use burn::tensor::{Device, Distribution, Gradients, Tensor, TensorData};
use coto::kernels::{AttentionSpec, CpuAttention, CpuLinear, layer_norm};

/// Runs the fused kernel on `[batch, seq, heads · head_dim]` inputs and a `[batch, seq]` bias.
fn fused(q: Tensor<3>, k: Tensor<3>, v: Tensor<3>, bias: Tensor<2>, spec: AttentionSpec) -> Tensor<3> {
    Tensor::from_dispatch(<Dispatch as CpuAttention>::cpu_attention(
        q.into_dispatch(),
        k.into_dispatch(),
        v.into_dispatch(),
        bias.into_dispatch(),
        spec,
    ))
}

/// Computes the same attention from burn operations, without dropout.
fn composed(q: Tensor<3>, k: Tensor<3>, v: Tensor<3>, bias: Tensor<2>, heads: usize) -> Tensor<3> {
    let [batch, seq, hidden] = q.dims();
    let head_dim = hidden / heads;
    let split = |t: Tensor<3>| t.reshape([batch, seq, heads, head_dim]).swap_dims(1, 2);
    let scores = split(q).matmul(split(k).swap_dims(2, 3)) / (head_dim as f64).sqrt() + bias.reshape([batch, 1, 1, seq]);
    softmax(scores, 3).matmul(split(v)).swap_dims(1, 2).reshape([batch, seq, hidden])
}

/// Builds a key bias that masks the last `masked[b]` keys of sequence `b`, as the model does.
fn key_bias(masked: &[usize], seq: usize, device: &Device) -> Tensor<2> {
    let values: Vec<f32> =
        masked.iter().flat_map(|&m| (0..seq).map(move |j| if j + m >= seq { f32::MIN } else { 0.0 })).collect();
    Tensor::from_data(TensorData::new(values, [masked.len(), seq]), device)
}

fn max_abs_diff(a: Tensor<3>, b: Tensor<3>) -> f32 {
    (a - b).abs().max().into_scalar()
}

/// Returns the largest difference between the gradients of `param` in two backward passes.
fn grad_diff<const D: usize>(param: &Tensor<D>, got: &Gradients, want: &Gradients) -> f32 {
    (param.grad(got).unwrap() - param.grad(want).unwrap()).abs().max().into_scalar()
}

fn no_dropout(heads: usize) -> AttentionSpec {
    AttentionSpec { heads, dropout: 0.0, mask_key: 0 }
}

#[test]
fn attention_matches_composed_ops() {
    // Sequence 13 and head size 6 are padded to 16 inside the kernel. Head size 32 and
    // sequence 40 take the kernel's wider tiles.
    for (batch, seq, heads, head_dim) in [(3, 13, 3, 6), (2, 40, 2, 32)] {
        let device = Device::flex().autodiff();
        let hidden = heads * head_dim;
        let input = || Tensor::<3>::random([batch, seq, hidden], Distribution::Normal(0.0, 1.5), &device).require_grad();
        let (q, k, v) = (input(), input(), input());
        let bias = key_bias(&[0, 5, 2][..batch], seq, &device);
        let weights = Tensor::<3>::random([batch, seq, hidden], Distribution::Normal(0.0, 1.0), &device);

        let got = fused(q.clone(), k.clone(), v.clone(), bias.clone(), no_dropout(heads));
        let want = composed(q.clone(), k.clone(), v.clone(), bias, heads);
        let diff = max_abs_diff(got.clone(), want.clone());
        assert!(diff < 1e-5, "{batch}×{seq}×{heads}×{head_dim}: outputs differ by {diff}");

        let got_grads = (got * weights.clone()).sum().backward();
        let want_grads = (want * weights).sum().backward();
        for (name, x) in [("q", &q), ("k", &k), ("v", &v)] {
            let (got, want) = (x.grad(&got_grads).unwrap(), x.grad(&want_grads).unwrap());
            let scale: f32 = want.clone().abs().max().into_scalar();
            let diff = max_abs_diff(got, want);
            assert!(diff < 1e-5 * (1.0 + scale), "{batch}×{seq}×{heads}×{head_dim}: d{name} differs by {diff}");
        }
    }
}

#[test]
fn attention_untracked_equals_tracked() {
    let plain = Device::flex();
    let input = |device: &Device| Tensor::<3>::random([2, 20, 24], Distribution::Default, device);
    let (q, k, v) = (input(&plain), input(&plain), input(&plain));
    let bias = key_bias(&[3, 0], 20, &plain);
    let spec = AttentionSpec { heads: 4, dropout: 0.2, mask_key: 11 };
    let untracked = fused(q.clone(), k.clone(), v.clone(), bias.clone(), spec);

    let device = plain.autodiff();
    let on = |t: Tensor<3>| Tensor::<3>::from_data(t.into_data(), &device).require_grad();
    let tracked = fused(on(q), on(k), on(v), Tensor::from_data(bias.into_data(), &device), spec);
    tracked.into_data().assert_eq(&untracked.into_data(), true);
}

/// With `V` the identity of each head, the output rows are the dropped-out probabilities, so
/// each value is either 0 or the undropped probability over `1 − p`.
#[test]
fn attention_dropout_fraction_and_scale() {
    let (batch, seq, heads, prob) = (64, 16, 2, 0.25);
    let device = Device::flex();
    let hidden = heads * seq;
    let q = Tensor::<3>::random([batch, seq, hidden], Distribution::Default, &device);
    let k = Tensor::<3>::random([batch, seq, hidden], Distribution::Default, &device);
    let identity: Vec<f32> = (0..batch * seq * hidden).map(|e| f32::from(e % hidden % seq == e / hidden % seq)).collect();
    let v = Tensor::<3>::from_data(TensorData::new(identity, [batch, seq, hidden]), &device);
    let bias = Tensor::<2>::zeros([batch, seq], &device);

    let spec = AttentionSpec { heads, dropout: prob, mask_key: 42 };
    let dropped = fused(q.clone(), k.clone(), v.clone(), bias.clone(), spec).into_data().try_into_vec_as::<f32>().unwrap();
    let full = fused(q.clone(), k.clone(), v.clone(), bias.clone(), no_dropout(heads)).into_data().try_into_vec_as::<f32>().unwrap();
    let mut zeros = 0;
    for (&d, &f) in dropped.iter().zip(&full) {
        if d == 0.0 {
            zeros += 1;
        } else {
            assert!((d - f / (1.0 - prob as f32)).abs() < 1e-6, "kept value {d} is not {f} / (1 − p)");
        }
    }
    // 32 768 draws: the binomial standard error at p = 0.25 is 0.0024. Allow five of them.
    let fraction = f64::from(zeros) / dropped.len() as f64;
    assert!((fraction - prob).abs() < 0.012, "dropped fraction {fraction}, expected {prob}");

    let again = fused(q.clone(), k.clone(), v.clone(), bias.clone(), spec).into_data().try_into_vec_as::<f32>().unwrap();
    assert_eq!(again, dropped, "the same key must draw the same mask");
    let other = AttentionSpec { mask_key: 43, ..spec };
    let different = fused(q, k, v, bias, other).into_data().try_into_vec_as::<f32>().unwrap();
    assert_ne!(different, dropped, "another key must draw another mask");
}

/// With dropout on, the gradient must still be the derivative of the forward pass with the
/// same draws, so it is compared with central differences along random directions.
#[test]
fn attention_dropout_gradient_finite_differences() {
    let (batch, seq, heads, head_dim) = (2, 9, 2, 5);
    let hidden = heads * head_dim;
    let device = Device::flex().autodiff();
    let spec = AttentionSpec { heads, dropout: 0.3, mask_key: 7 };
    let random = |seed_shift: f64| {
        Tensor::<3>::random([batch, seq, hidden], Distribution::Normal(seed_shift, 1.0), &device)
    };
    let (q, k, v) = (random(0.0).require_grad(), random(0.0).require_grad(), random(0.0).require_grad());
    let weights = random(0.0);
    let bias = key_bias(&[2, 0], seq, &device);
    let loss = |q: Tensor<3>, k: Tensor<3>, v: Tensor<3>| -> Tensor<1> {
        (fused(q, k, v, bias.clone(), spec) * weights.clone()).sum()
    };
    let grads = loss(q.clone(), k.clone(), v.clone()).backward();

    let eps = 1e-2;
    for input in 0..3 {
        let direction = random(0.0).detach();
        let shifted = |sign: f64| {
            let step = direction.clone() * (sign * eps);
            let [mut a, mut b, mut c] = [q.clone().detach(), k.clone().detach(), v.clone().detach()];
            match input {
                0 => a = a + step,
                1 => b = b + step,
                _ => c = c + step,
            }
            f64::from(loss(a, b, c).into_scalar::<f32>())
        };
        let numeric = (shifted(1.0) - shifted(-1.0)) / (2.0 * eps);
        let grad = [&q, &k, &v][input].grad(&grads).unwrap();
        let analytic = f64::from((grad * direction.inner()).sum().into_scalar::<f32>());
        assert!(
            (numeric - analytic).abs() < 2e-3 * (1.0 + analytic.abs()),
            "input {input}: finite difference {numeric}, gradient {analytic}"
        );
    }
}

#[test]
fn linear_matches_burn_linear() {
    // 111 rows: six blocks of 16 on the threads, then a padded tail of 15.
    let device = Device::flex().autodiff();
    let x = Tensor::<3>::random([3, 37, 48], Distribution::Normal(0.0, 1.0), &device).require_grad();
    let weight = Tensor::<2>::random([48, 32], Distribution::Normal(0.0, 0.5), &device).require_grad();
    let bias = Tensor::<1>::random([32], Distribution::Normal(0.0, 0.5), &device).require_grad();
    let upstream = Tensor::<3>::random([3, 37, 32], Distribution::Normal(0.0, 1.0), &device);

    let got = Tensor::<3>::from_dispatch(<Dispatch as CpuLinear>::cpu_linear(
        x.clone().into_dispatch(),
        weight.clone().into_dispatch(),
        bias.clone().into_dispatch(),
    ));
    let want = burn::tensor::module::linear(x.clone(), weight.clone(), Some(bias.clone()));
    let diff = max_abs_diff(got.clone(), want.clone());
    assert!(diff < 1e-5, "outputs differ by {diff}");

    let got_grads = (got * upstream.clone()).sum().backward();
    let want_grads = (want * upstream).sum().backward();
    let dx = max_abs_diff(x.grad(&got_grads).unwrap(), x.grad(&want_grads).unwrap());
    assert!(dx < 1e-4, "dx differs by {dx}");
    let dw = grad_diff(&weight, &got_grads, &want_grads);
    assert!(dw < 1e-3, "dW differs by {dw}");
    let db = grad_diff(&bias, &got_grads, &want_grads);
    assert!(db < 1e-3, "db differs by {db}");
}

#[test]
fn layer_norm_matches_burn_layer_norm() {
    // 111 rows make a ragged last unit of work, and width 20 leaves a remainder after 16 lanes.
    for width in [48, 20] {
        let device = Device::flex().autodiff();
        let mut norm = LayerNormConfig::new(width).with_epsilon(1e-12).init(&device);
        norm.gamma = Param::from_tensor(Tensor::random([width], Distribution::Normal(1.0, 0.3), &device));
        let beta = Tensor::<1>::random([width], Distribution::Normal(0.0, 0.3), &device);
        norm.beta = Some(Param::from_tensor(beta));
        let x = Tensor::<3>::random([3, 37, width], Distribution::Normal(0.5, 2.0), &device).require_grad();
        let upstream = Tensor::<3>::random([3, 37, width], Distribution::Normal(0.0, 1.0), &device);

        let got = layer_norm(&norm, 1e-12, x.clone());
        let want = norm.forward(x.clone());
        let diff = max_abs_diff(got.clone(), want.clone());
        assert!(diff < 1e-5, "width {width}: outputs differ by {diff}");

        let got_grads = (got * upstream.clone()).sum().backward();
        let want_grads = (want * upstream).sum().backward();
        let dx = max_abs_diff(x.grad(&got_grads).unwrap(), x.grad(&want_grads).unwrap());
        assert!(dx < 1e-4, "width {width}: dx differs by {dx}");
        let dgamma = grad_diff(&norm.gamma.val(), &got_grads, &want_grads);
        assert!(dgamma < 1e-3, "width {width}: dgamma differs by {dgamma}");
        let dbeta = grad_diff(&norm.beta.as_ref().unwrap().val(), &got_grads, &want_grads);
        assert!(dbeta < 1e-3, "width {width}: dbeta differs by {dbeta}");
    }
}
