//! Adding LoRA adapters to a BERT encoder by module name, PEFT-style.

use burn::tensor::Device;

use super::bert::BertModel;
use crate::coto::AdapterSlot;
use crate::error::{CotoError, Result};
use burn::module::Param;

use super::weights::HostTensor;
use crate::linalg::Matrix;
use crate::lora::{LoraAdapter, LoraConfig, LoraInit, LoraLinear, PissaOrigin, initial_magnitude, pissa_init};
use crate::rng::CotoRng;

/// Module names a target may end with, relative to `encoder.layer.N`.
pub const TARGETABLE_MODULES: [&str; 6] = [
    "attention.self.query",
    "attention.self.key",
    "attention.self.value",
    "attention.output.dense",
    "intermediate.dense",
    "output.dense",
];

/// Whether `module` (a path relative to the layer) is selected by `target`: PEFT's rule, an exact
/// match or a match of the path's trailing components (`output.dense` selects both
/// `attention.output.dense` and the layer's `output.dense`).
fn selects(target: &str, module: &str) -> bool {
    module == target
        || module
            .strip_suffix(target)
            .is_some_and(|head| head.ends_with('.'))
}

/// Checks that every target names a module of a BERT layer.
pub fn validate_targets(targets: &[String]) -> Result<()> {
    for target in targets {
        if !TARGETABLE_MODULES.iter().any(|m| selects(target, m)) {
            return Err(CotoError::setting(
                "target_modules",
                target,
                "unknown module; choose from query, key, value, attention.output.dense, \
                 intermediate.dense, output.dense",
            ));
        }
    }
    Ok(())
}

/// Adds a fresh adapter to every encoder module selected by `config.target_modules`, layer by
/// layer in module order, and returns the adapters' slots for grouping. `A` is drawn from `rng`.
pub fn inject_lora(
    model: &mut BertModel,
    config: &LoraConfig,
    rng: &mut CotoRng,
    device: &Device,
) -> Result<Vec<AdapterSlot>> {
    config.validate()?;
    validate_targets(&config.target_modules)?;
    let mut slots = Vec::new();
    for (layer_index, layer) in model.encoder.layer.iter_mut().enumerate() {
        for (name, linear) in layer.linears_mut() {
            if !config.target_modules.iter().any(|t| selects(t, name)) {
                continue;
            }
            let (d_in, d_out) = (linear.in_features(), linear.out_features());
            if config.r > d_in.min(d_out) {
                return Err(CotoError::setting(
                    "r",
                    config.r,
                    format!("the rank must not exceed the layer's smaller dimension, {} for {name}", d_in.min(d_out)),
                ));
            }
            let index = slots.len();
            let adapter = LoraAdapter::init(config, d_in, d_out, index, rng, device);
            attach_variant(linear, adapter, config, device);
            slots.push(AdapterSlot {
                index,
                name: format!("encoder.layer.{layer_index}.{name}"),
                layer: layer_index,
            });
        }
    }
    Ok(slots)
}

/// Attaches `adapter` to `linear` in the form `config` asks for: DoRA's magnitude, HiRA's
/// Hadamard update, or PiSSA's SVD factors with the residual base weight.
fn attach_variant(linear: &mut LoraLinear, mut adapter: LoraAdapter, config: &LoraConfig, device: &Device) {
    if config.init == LoraInit::Pissa {
        // burn stores the weight as [in, out]; PiSSA works on PyTorch's [out, in].
        let weight = HostTensor::from_tensor(linear.base.weight.val()).transposed();
        let matrix = Matrix::from_f32(weight.shape[0], weight.shape[1], &weight.data);
        let init = pissa_init(&matrix, config.r, config.scaling());
        let upload = |m: &Matrix| HostTensor::new(vec![m.rows, m.cols], m.to_f32()).to_tensor::<2>(device);
        adapter.lora_a = Param::from_tensor(upload(&init.lora_a));
        adapter.lora_b = Param::from_tensor(upload(&init.lora_b));
        adapter.pissa_origin = Some(PissaOrigin {
            lora_a: Param::from_tensor(upload(&init.lora_a)).set_require_grad(false),
            lora_b: Param::from_tensor(upload(&init.lora_b)).set_require_grad(false),
        });
        let residual = upload(&init.residual.transpose());
        linear.base.weight = Param::from_tensor(residual).set_require_grad(false);
    }
    if config.use_dora {
        let magnitude = initial_magnitude(linear.base.weight.val(), &adapter);
        adapter.magnitude = Some(Param::from_tensor(magnitude));
    }
    adapter.hadamard = config.use_hira;
    linear.attach(adapter);
}

/// The slots of the adapters a model already carries (e.g. loaded from a file), in gate order.
pub fn adapter_slots(model: &BertModel) -> Vec<AdapterSlot> {
    let mut slots = Vec::new();
    for (layer_index, layer) in model.encoder.layer.iter().enumerate() {
        for (name, linear) in layer.linears() {
            if let Some(adapter) = &linear.adapter {
                slots.push(AdapterSlot {
                    index: adapter.index,
                    name: format!("encoder.layer.{layer_index}.{name}"),
                    layer: layer_index,
                });
            }
        }
    }
    slots.sort_by_key(|slot| slot.index);
    slots
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffix_rule_matches_peft() {
        assert!(selects("query", "attention.self.query"));
        assert!(selects("output.dense", "attention.output.dense"));
        assert!(selects("output.dense", "output.dense"));
        assert!(selects("attention.output.dense", "attention.output.dense"));
        assert!(!selects("attention.output.dense", "output.dense"));
        assert!(!selects("ery", "attention.self.query"));
    }

    #[test]
    fn unknown_target_is_rejected() {
        let err = validate_targets(&["qurey".to_string()]).unwrap_err();
        assert!(err.to_string().contains("qurey"), "{err}");
    }
}
