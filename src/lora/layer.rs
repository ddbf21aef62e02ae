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
    /// DoRA's trainable magnitude `m`, one entry per output (PEFT's `lora_magnitude_vector`).
    pub magnitude: Option<Param<Tensor<1>>>,
    /// HiRA: the update is `W ⊙ (scaling·B·A)` instead of `scaling·B·A`.
    pub hadamard: bool,
    /// PiSSA: the factors at initialisation (frozen), which the saved file subtracts so that it
    /// applies to the original weight.
    pub pissa_origin: Option<PissaOrigin>,
}

/// PiSSA's initial factors `A₀: [r, in]` and `B₀: [out, r]`, frozen.
#[derive(Module, Debug)]
pub struct PissaOrigin {
    /// `A₀`.
    pub lora_a: Param<Tensor<2>>,
    /// `B₀`.
    pub lora_b: Param<Tensor<2>>,
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
            // PiSSA's factors come from the base weight; see `super::pissa`. This placeholder
            // is replaced before use.
            LoraInit::Pissa => vec![0.0; r * in_features],
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
            magnitude: None,
            hadamard: false,
            pissa_origin: None,
        }
    }

    /// Applies the adapted layer `base` with this adapter on: `[..., in]` to `[..., out]`.
    pub fn forward<const D: usize>(&self, base: &Linear, x: Tensor<D>) -> Tensor<D> {
        if let Some(magnitude) = &self.magnitude {
            return super::dora::forward(self, magnitude, base, x);
        }
        if self.hadamard {
            return super::hira::forward(self, base, x);
        }
        if crate::kernels::kernels_apply(&x.device()) {
            return crate::kernels::fused_lora_linear(base, self, x);
        }
        crate::kernels::base_linear(base, x.clone()) + self.forward_delta(x)
    }

    /// The update this adapter adds to `weight` (burn's `[in, out]` layout), detached:
    /// `(scaling·B·A)ᵀ` for LoRA, `W ⊙ (scaling·B·A)ᵀ` for HiRA, and `m·(W + ΔW)/‖W + ΔW‖ − W`
    /// for DoRA.
    pub fn effective_delta(&self, weight: Tensor<2>) -> Tensor<2> {
        let low_rank = self.delta_weight().transpose();
        if let Some(magnitude) = &self.magnitude {
            return super::dora::merged_weight(weight.clone(), low_rank, magnitude.val().detach()) - weight;
        }
        if self.hadamard {
            return weight * low_rank;
        }
        low_rank
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

/// A frozen linear layer with an optional LoRA adapter: `y = x·Wᵀ + b + scaling · (x·Aᵀ)·Bᵀ`
/// (or the DoRA or HiRA form of the update).
///
/// The base weight and bias never receive gradients. When the adapter's gate is off, `forward`
/// returns the base output and does not touch the adapter's parameters, so the autodiff graph
/// holds no adapter node and they get no gradient.
#[derive(Module, Debug)]
pub struct LoraLinear {
    /// The frozen base layer, weight stored in burn's layout `[in, out]`.
    pub base: Linear,
    /// The adapter, if this module is a LoRA target.
    pub adapter: Option<LoraAdapter>,
    /// The update added into the base weight by [`LoraLinear::merge`], kept so that
    /// [`LoraLinear::unmerge`] restores the weight exactly (frozen, `[in, out]`).
    pub merged_delta: Option<Param<Tensor<2>>>,
}

impl LoraLinear {
    /// Wraps `base` with no adapter, freezing its weight and bias.
    pub fn new(base: Linear) -> Self {
        Self {
            base: base.no_grad(),
            adapter: None,
            merged_delta: None,
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
    }

    /// Whether the adapter's update has been added into the base weight.
    pub fn is_merged(&self) -> bool {
        self.merged_delta.is_some()
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
            Some(adapter) if active && !self.is_merged() => adapter.forward(&self.base, x),
            _ => crate::kernels::base_linear(&self.base, x),
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

    /// The adapter's update of the weight in PyTorch's `[out, in]` layout, or `None` without an
    /// adapter: `scaling · B·A` for LoRA, and the equivalent additive update for DoRA and HiRA.
    pub fn delta_weight(&self) -> Option<Tensor<2>> {
        let adapter = self.adapter.as_ref()?;
        let weight = self.base.weight.val().detach();
        let weight = match &self.merged_delta {
            Some(delta) => weight - delta.val(),
            None => weight,
        };
        Some(adapter.effective_delta(weight).transpose())
    }

    /// Adds the adapter's update into the base weight, so that inference needs one matmul.
    /// No-op without an adapter or when already merged.
    pub fn merge(mut self) -> Self {
        let Some(adapter) = &self.adapter else {
            return self;
        };
        if self.is_merged() {
            return self;
        }
        let delta = adapter.effective_delta(self.base.weight.val().detach());
        self.base.weight = self.base.weight.map(|weight| (weight.detach() + delta.clone()).set_require_grad(false));
        self.merged_delta = Some(Param::from_tensor(delta).set_require_grad(false));
        self
    }

    /// Subtracts the merged update from the base weight again, restoring the unmerged layer.
    pub fn unmerge(mut self) -> Self {
        let Some(delta) = self.merged_delta.take() else {
            return self;
        };
        let delta = delta.val();
        self.base.weight = self.base.weight.map(|weight| (weight.detach() - delta).set_require_grad(false));
        self
    }
}
