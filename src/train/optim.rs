//! AdamW over the trainable parameters (adapters and head), with global-norm gradient clipping.
//!
//! Gradients and optimizer state are keyed by the parameter's module path (for example
//! `bert.encoder.layer.0.attention.self_attention.query.adapter.lora_a`), so state can be saved
//! and matched to a rebuilt model. A parameter with no gradient in a step (a dropped CoTo
//! adapter) is skipped entirely, weight decay and step count included, as PyTorch's AdamW does
//! for parameters whose `.grad` is `None`.

use std::collections::BTreeMap;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{Device, Gradients, Tensor};

use crate::error::{CotoError, Result};
use crate::model::{HostTensor, WeightMap};

const MOMENTS_SOURCE: &str = "optimizer state";

/// Gradients of the trainable parameters, flattened, by module path.
#[derive(Debug, Default)]
pub struct ParamGrads {
    grads: BTreeMap<String, Tensor<1>>,
}

impl ParamGrads {
    /// Takes the gradients of `module`'s trainable parameters out of `grads`.
    pub fn collect<M: Module>(grads: &mut Gradients, module: &M) -> Self {
        let mut collector = GradCollector {
            grads,
            path: Vec::new(),
            out: BTreeMap::new(),
        };
        module.visit(&mut collector);
        Self { grads: collector.out }
    }

    /// Adds `other`'s gradients into these (gradient accumulation).
    pub fn accumulate(&mut self, other: ParamGrads) {
        for (path, grad) in other.grads {
            let merged = match self.grads.remove(&path) {
                Some(existing) => existing + grad,
                None => grad,
            };
            self.grads.insert(path, merged);
        }
    }

    /// Paths of the parameters that have a gradient.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.grads.keys().map(String::as_str)
    }

    /// The gradient of the parameter at `path`, flattened.
    pub fn get(&self, path: &str) -> Option<&Tensor<1>> {
        self.grads.get(path)
    }

    /// The L2 norm over all gradients together, as a one-element tensor (reading it is left to
    /// the caller, so that no device synchronisation happens here).
    pub fn global_norm(&self) -> Option<Tensor<1>> {
        let squares: Vec<Tensor<1>> = self.grads.values().map(|g| g.clone().powi_scalar(2).sum()).collect();
        if squares.is_empty() {
            return None;
        }
        Some(Tensor::cat(squares, 0).sum().sqrt())
    }

    /// Scales all gradients by `min(1, max_norm / (norm + 1e-6))`, PyTorch's `clip_grad_norm_`,
    /// with device-side arithmetic only, and returns the norm before clipping. `max_norm = 0`
    /// only measures.
    pub fn clip_global_norm(&mut self, max_norm: f64) -> Option<Tensor<1>> {
        let norm = self.global_norm()?;
        if max_norm > 0.0 {
            let factor = (norm.clone() + 1e-6).recip().mul_scalar(max_norm).clamp_max(1.0);
            for grad in self.grads.values_mut() {
                *grad = grad.clone() * factor.clone();
            }
        }
        Some(norm)
    }
}

struct GradCollector<'a> {
    grads: &'a mut Gradients,
    path: Vec<String>,
    out: BTreeMap<String, Tensor<1>>,
}

impl ModuleVisitor for GradCollector<'_> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let value = param.val();
        if !value.is_require_grad() {
            return;
        }
        if let Some(grad) = value.grad_remove(self.grads) {
            self.out.insert(self.path.join("."), grad.flatten::<1>(0, D - 1));
        }
    }
}

/// AdamW's hyperparameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWConfig {
    /// Decay of the first moment. Default: 0.9.
    pub beta1: f64,
    /// Decay of the second moment. Default: 0.999.
    pub beta2: f64,
    /// Added to the denominator for stability. Default: 1e-8.
    pub epsilon: f64,
    /// Decoupled weight decay. Default: 0.01.
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.999,
            epsilon: 1e-8,
            weight_decay: 0.01,
        }
    }
}

/// One parameter's optimizer state.
#[derive(Debug, Clone)]
pub struct Moments {
    /// Updates applied so far to this parameter.
    pub step: u64,
    /// First moment, flattened.
    pub m: Tensor<1>,
    /// Second moment, flattened.
    pub v: Tensor<1>,
}

/// AdamW with per-parameter state keyed by module path.
#[derive(Debug, Clone)]
pub struct AdamW {
    config: AdamWConfig,
    states: BTreeMap<String, Moments>,
}

impl AdamW {
    /// An optimizer with no state yet.
    pub fn new(config: AdamWConfig) -> Self {
        Self {
            config,
            states: BTreeMap::new(),
        }
    }

    /// The per-parameter state.
    pub fn states(&self) -> &BTreeMap<String, Moments> {
        &self.states
    }

    /// Replaces the per-parameter state (when resuming).
    pub fn set_states(&mut self, states: BTreeMap<String, Moments>) {
        self.states = states;
    }

    /// Copies the moments to the host as `{path}#m` and `{path}#v`, with each parameter's step
    /// count.
    pub fn export_moments(&self) -> (WeightMap, BTreeMap<String, u64>) {
        let mut tensors = WeightMap::new(MOMENTS_SOURCE);
        for (name, moment) in self.moment_tensors() {
            tensors.insert(name, HostTensor::from_tensor(moment));
        }
        (tensors, self.update_counts())
    }

    /// Copies the moments like [`AdamW::export_moments`], without blocking on the device (for
/// browsers).
    pub async fn export_moments_async(&self) -> Result<(WeightMap, BTreeMap<String, u64>)> {
        let mut tensors = WeightMap::new(MOMENTS_SOURCE);
        for (name, moment) in self.moment_tensors() {
            tensors.insert(name, HostTensor::from_tensor_async(moment).await?);
        }
        Ok((tensors, self.update_counts()))
    }

    fn moment_tensors(&self) -> Vec<(String, Tensor<1>)> {
        self.states
            .iter()
            .flat_map(|(path, moments)| {
                [(format!("{path}#m"), moments.m.clone()), (format!("{path}#v"), moments.v.clone())]
            })
            .collect()
    }

    fn update_counts(&self) -> BTreeMap<String, u64> {
        self.states.iter().map(|(path, moments)| (path.clone(), moments.step)).collect()
    }

    /// Replaces the state with moments exported by [`AdamW::export_moments`], uploaded to
    /// `device` (a device without autodiff).
    pub fn import_moments(&mut self, tensors: &WeightMap, steps: &BTreeMap<String, u64>, device: &Device) -> Result<()> {
        let mut states = BTreeMap::new();
        for (path, &step) in steps {
            let moment = |suffix: &str| {
                let name = format!("{path}#{suffix}");
                tensors.get_any(&name).map(|t| t.to_tensor::<1>(device)).ok_or_else(|| CotoError::Weights {
                    path: tensors.source().to_path_buf(),
                    message: format!("optimizer moment `{name}` is missing"),
                })
            };
            states.insert(path.clone(), Moments { step, m: moment("m")?, v: moment("v")? });
        }
        self.states = states;
        Ok(())
    }

    /// Applies one update with learning rate `lr` to every parameter of `module` that has a
    /// gradient in `grads`, and returns the updated module.
    pub fn step<M: Module>(&mut self, module: M, grads: ParamGrads, lr: f64) -> M {
        let mut mapper = AdamWMapper {
            optimizer: self,
            grads: grads.grads,
            path: Vec::new(),
            lr,
        };
        module.map(&mut mapper)
    }

    fn update(&mut self, path: &str, param: Tensor<1>, grad: Tensor<1>, lr: f64) -> Tensor<1> {
        let AdamWConfig {
            beta1,
            beta2,
            epsilon,
            weight_decay,
        } = self.config;
        let state = self.states.entry(path.to_string()).or_insert_with(|| Moments {
            step: 0,
            m: grad.zeros_like(),
            v: grad.zeros_like(),
        });
        state.step += 1;
        state.m = state.m.clone() * beta1 + grad.clone() * (1.0 - beta1);
        state.v = state.v.clone() * beta2 + grad.powi_scalar(2) * (1.0 - beta2);

        let bias_correction1 = 1.0 - beta1.powi(state.step as i32);
        let bias_correction2 = 1.0 - beta2.powi(state.step as i32);
        let denominator = state.v.clone().sqrt() / bias_correction2.sqrt() + epsilon;
        let decayed = param * (1.0 - lr * weight_decay);
        decayed - state.m.clone() / denominator * (lr / bias_correction1)
    }
}

struct AdamWMapper<'a> {
    optimizer: &'a mut AdamW,
    grads: BTreeMap<String, Tensor<1>>,
    path: Vec<String>,
    lr: f64,
}

impl ModuleMapper for AdamWMapper<'_> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let path = self.path.join(".");
        let Some(grad) = self.grads.remove(&path) else {
            return param;
        };
        let (id, tensor, mapper) = param.consume();
        let dims = tensor.dims();
        let require_grad = tensor.is_require_grad();
        let flat = tensor.inner().flatten::<1>(0, D - 1);
        let updated = self.optimizer.update(&path, flat, grad, self.lr).reshape(dims);
        let mut updated = Tensor::from_inner(updated);
        if require_grad {
            updated = updated.require_grad();
        }
        Param::from_mapped_value(id, updated, mapper)
    }
}
