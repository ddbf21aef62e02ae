//! The LoRA-wrapped linear layer and its adapter.

use burn::module::{Module, Param};
use burn::nn::{Dropout, DropoutConfig, Linear};
use burn::tensor::module::linear;
use burn::tensor::{Device, Tensor, TensorData};
use rand::Rng;

use super::config::{LoraConfig, LoraInit};
use crate::coto::Gates;
use crate::model::apply_dropout;
use crate::rng::{CotoRng, standard_normal};

/// A trainable low-rank update `ΔW = scaling · B·A` for one linear layer.
#[derive(Module, Debug)]
pub struct LoraAdapter {
    /// Down-projection `A`, shape `[r, in]` (PEFT's `lora_A.weight`).
    pub lora_a: Param<Tensor<2>>,
    /// Up-projection `B`, shape `[out, r]` (PEFT's `lora_B.weight`), zero at initialisation.
    pub lora_b: Param<Tensor<2>>,
    /// `lora_alpha / r`.
    pub scaling: f64,
    /// Dropout on the adapter input (training only).
    pub dropout: Dropout,
    /// Position of this adapter in the model's gate vector.
    pub index: usize,
}

impl LoraAdapter {
    /// Creates a freshly initialised adapter for a layer with `in_features` inputs and
    /// `out_features` outputs, drawing `A` from `rng` so that initialisation is identical on
    /// every device.
    pub fn init(
        config: &LoraConfig,
        in_features: usize,
        out_features: usize,
        index: usize,
        rng: &mut CotoRng,
        device: &Device,
    ) -> Self {
        let r = config.r;
        let values: Vec<f32> = match config.init {
            LoraInit::KaimingUniform => {
                let bound = 1.0 / (in_features as f64).sqrt();
                (0..r * in_features)
                    .map(|_| rng.random_range(-bound..bound) as f32)
                    .collect()
            }
            LoraInit::Gaussian => {
                let std = 1.0 / r as f64;
                (0..r * in_features)
                    .map(|_| (standard_normal(rng) * std) as f32)
                    .collect()
            }
        };
        let lora_a = Tensor::from_data(TensorData::new(values, [r, in_features]), device);
        let lora_b = Tensor::zeros([out_features, r], device);
        Self::from_tensors(lora_a, lora_b, config.scaling(), config.lora_dropout, index)
    }

    /// Wraps existing factors `A: [r, in]` and `B: [out, r]` as trainable parameters.
    pub fn from_tensors(
        lora_a: Tensor<2>,
        lora_b: Tensor<2>,
        scaling: f64,
        dropout: f64,
        index: usize,
    ) -> Self {
        Self {
            lora_a: Param::from_tensor(lora_a),
            lora_b: Param::from_tensor(lora_b),
            scaling,
            dropout: DropoutConfig::new(dropout).init(),
            index,
        }
    }

    /// The rank `r`.
    pub fn rank(&self) -> usize {
        self.lora_a.shape().dims::<2>()[0]
    }

    /// Computes `scaling · B·A(dropout(x))`, shapes `[..., in]` to `[..., out]`, in PEFT's order
    /// of operations so that results match PEFT to rounding.
    pub fn forward_delta<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let x = apply_dropout(&self.dropout, x);
        let hidden = linear(x, self.lora_a.val().transpose(), None);
        linear(hidden, self.lora_b.val().transpose(), None) * self.scaling
    }

    /// `ΔW = scaling · B·A`, shape `[out, in]` (PyTorch's layout), detached from any graph.
    pub fn delta_weight(&self) -> Tensor<2> {
        let a = self.lora_a.val().detach();
        let b = self.lora_b.val().detach();
        b.matmul(a) * self.scaling
    }
}

/// A frozen linear layer with an optional LoRA adapter: `y = x·Wᵀ + b + scaling · (x·Aᵀ)·Bᵀ`.
///
/// The base weight and bias never receive gradients. When the adapter's gate is off, `forward`
/// returns the base output and does not touch `A` or `B`, so the autodiff graph holds no adapter
/// node and the adapter's parameters get no gradient.
#[derive(Module, Debug)]
pub struct LoraLinear {
    /// The frozen base layer, weight stored in burn's layout `[in, out]`.
    pub base: Linear,
    /// The adapter, if this module is a LoRA target.
    pub adapter: Option<LoraAdapter>,
    /// Whether the adapter's `ΔW` has been added into the base weight.
    pub merged: bool,
}

impl LoraLinear {
    /// Wraps `base` with no adapter, freezing its weight and bias.
    pub fn new(base: Linear) -> Self {
        Self {
            base: base.no_grad(),
            adapter: None,
            merged: false,
        }
    }

    /// Attaches `adapter`, replacing any previous one.
    pub fn with_adapter(mut self, adapter: LoraAdapter) -> Self {
        self.attach(adapter);
        self
    }

    /// Attaches `adapter` in place, replacing any previous one.
    pub fn attach(&mut self, adapter: LoraAdapter) {
        self.adapter = Some(adapter);
        self.merged = false;
    }

    /// Number of input features.
    pub fn in_features(&self) -> usize {
        self.base.weight.shape().dims::<2>()[0]
    }

    /// Number of output features.
    pub fn out_features(&self) -> usize {
        self.base.weight.shape().dims::<2>()[1]
    }

    /// Applies the layer, shapes `[..., in]` to `[..., out]`.
    ///
    /// `active` is this adapter's CoTo gate. With the gate off (or no adapter, or the adapter
    /// merged into the base weight) only the base product is computed.
    pub fn forward<const D: usize>(&self, x: Tensor<D>, active: bool) -> Tensor<D> {
        match &self.adapter {
            Some(adapter) if active && !self.merged => {
                let base = self.base.forward(x.clone());
                base + adapter.forward_delta(x)
            }
            _ => self.base.forward(x),
        }
    }

    /// Applies the layer with the adapter's gate looked up in `gates` by the adapter's index.
    pub fn forward_gated<const D: usize>(&self, x: Tensor<D>, gates: &Gates) -> Tensor<D> {
        let active = self
            .adapter
            .as_ref()
            .is_some_and(|adapter| gates.is_active(adapter.index));
        self.forward(x, active)
    }

    /// `ΔW = scaling · B·A` in PyTorch's `[out, in]` layout, or `None` without an adapter.
    pub fn delta_weight(&self) -> Option<Tensor<2>> {
        self.adapter.as_ref().map(LoraAdapter::delta_weight)
    }

    /// Adds `ΔW` into the base weight, so that inference needs one matmul. No-op without an
    /// adapter or when already merged.
    pub fn merge(self) -> Self {
        self.shift_base(true)
    }

    /// Subtracts `ΔW` from the base weight again, restoring the unmerged layer.
    pub fn unmerge(self) -> Self {
        self.shift_base(false)
    }

    fn shift_base(mut self, merge: bool) -> Self {
        let Some(delta) = self.delta_weight() else {
            return self;
        };
        if self.merged == merge {
            return self;
        }
        // The base weight is `[in, out]`, the transpose of ΔW's layout.
        let delta = delta.transpose();
        self.base.weight = self.base.weight.map(|weight| {
            let weight = weight.detach();
            let shifted = if merge { weight + delta } else { weight - delta };
            shifted.set_require_grad(false)
        });
        self.merged = merge;
        self
    }
}
