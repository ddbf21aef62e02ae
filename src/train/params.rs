//! Reading and replacing a model's trainable parameters by module path, for checkpoints.

use std::collections::BTreeMap;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{Tensor, TensorData};

use crate::error::{CotoError, Result};
use crate::model::{HostTensor, WeightMap};

/// Copies every trainable (gradient-requiring) parameter of `module` to the host, keyed by its
/// module path, e.g. `bert.encoder.layer.0.attention.self_attention.query.adapter.lora_a`.
pub fn trainable_params<M: Module>(module: &M) -> WeightMap {
    let mut out = WeightMap::new(PARAMS_SOURCE);
    for (path, shape, values) in trainable_tensors(module) {
        let flat = HostTensor::from_tensor(values);
        out.insert(path, HostTensor::new(shape, flat.data));
    }
    out
}

/// Copies the trainable parameters like [`trainable_params`], without blocking on the device
/// (for browsers).
pub async fn trainable_params_async<M: Module>(module: &M) -> Result<WeightMap> {
    let mut out = WeightMap::new(PARAMS_SOURCE);
    for (path, shape, values) in trainable_tensors(module) {
        let flat = HostTensor::from_tensor_async(values).await?;
        out.insert(path, HostTensor::new(shape, flat.data));
    }
    Ok(out)
}

const PARAMS_SOURCE: &str = "trainable parameters";

/// Lists every trainable parameter of `module` as `(path, shape, flattened values)`.
fn trainable_tensors<M: Module>(module: &M) -> Vec<(String, Vec<usize>, Tensor<1>)> {
    let mut reader = ParamReader {
        path: Vec::new(),
        out: Vec::new(),
    };
    module.visit(&mut reader);
    reader.out
}

/// Replaces the trainable parameters of `module` that appear in `values`, keeping each
/// parameter's identity and gradient setting. Fails unless every trainable parameter was found
/// with the same shape.
pub fn load_trainable_params<M: Module>(module: M, values: &WeightMap) -> Result<M> {
    let mut writer = ParamWriter {
        values,
        path: Vec::new(),
        problems: BTreeMap::new(),
    };
    let module = module.map(&mut writer);
    match writer.problems.into_iter().next() {
        None => Ok(module),
        Some((path, problem)) => Err(CotoError::Weights {
            path: values.source().to_path_buf(),
            message: format!("parameter `{path}`: {problem}; the checkpoint was saved from another model or settings"),
        }),
    }
}

struct ParamReader {
    path: Vec<String>,
    out: Vec<(String, Vec<usize>, Tensor<1>)>,
}

impl ModuleVisitor for ParamReader {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let value = param.val();
        if value.is_require_grad() {
            let shape = value.dims().to_vec();
            let count = shape.iter().product::<usize>();
            self.out.push((self.path.join("."), shape, value.reshape([count])));
        }
    }
}

struct ParamWriter<'a> {
    values: &'a WeightMap,
    path: Vec<String>,
    problems: BTreeMap<String, String>,
}

impl ModuleMapper for ParamWriter<'_> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let path = self.path.join(".");
        let (id, tensor, mapper) = param.consume();
        if !tensor.is_require_grad() {
            return Param::from_mapped_value(id, tensor, mapper);
        }
        let Some(saved) = self.values.get_any(&path) else {
            self.problems.insert(path, "missing from the checkpoint".into());
            return Param::from_mapped_value(id, tensor, mapper);
        };
        let dims = tensor.dims();
        if saved.shape != dims {
            self.problems
                .insert(path, format!("saved shape {:?}, model shape {dims:?}", saved.shape));
            return Param::from_mapped_value(id, tensor, mapper);
        }
        let device = tensor.device();
        let restored = Tensor::<D>::from_data(TensorData::new(saved.data.clone(), dims), &device).require_grad();
        Param::from_mapped_value(id, restored, mapper)
    }
}
