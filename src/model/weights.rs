//! Checkpoint tensors by Hugging Face name, read from safetensors, and the burn layers built
//! from them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use burn::module::Param;
use burn::nn::{Embedding, LayerNorm, LayerNormConfig, Linear};
use burn::tensor::{Device, Tensor, TensorData};
use safetensors::{Dtype, SafeTensors};

use crate::error::{CotoError, Result};

/// A tensor held in host memory as `f32`, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    /// Dimensions, outermost first.
    pub shape: Vec<usize>,
    /// Values, row-major.
    pub data: Vec<f32>,
}

impl HostTensor {
    /// A tensor from its shape and values; panics if they disagree, which is a programming error.
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Self {
        assert_eq!(shape.iter().product::<usize>(), data.len(), "shape {shape:?} does not match data");
        Self { shape, data }
    }

    /// Uploads the tensor to `device` as a rank-`D` tensor.
    pub fn to_tensor<const D: usize>(&self, device: &Device) -> Tensor<D> {
        Tensor::from_data(TensorData::new(self.data.clone(), self.shape.clone()), device)
    }

    /// Downloads a tensor to the host. Needs synchronous readback, which browsers do not offer
    /// for GPU tensors; use [`HostTensor::from_tensor_async`] there.
    pub fn from_tensor<const D: usize>(tensor: Tensor<D>) -> Self {
        let shape = tensor.dims().to_vec();
        Self::from_data(shape, tensor.into_data())
    }

    /// Downloads a tensor to the host without blocking, on every platform.
    pub async fn from_tensor_async<const D: usize>(tensor: Tensor<D>) -> Result<Self> {
        let shape = tensor.dims().to_vec();
        let data = tensor
            .into_data_async()
            .await
            .map_err(|e| CotoError::Device(format!("reading a tensor from the device failed: {e:?}")))?;
        Ok(Self::from_data(shape, data))
    }

    fn from_data(shape: Vec<usize>, data: TensorData) -> Self {
        let values = data.convert::<f32>().try_into_vec_as::<f32>().unwrap_or_default();
        Self::new(shape, values)
    }

    /// The transpose of a matrix.
    pub fn transposed(&self) -> Self {
        let [rows, cols] = [self.shape[0], self.shape[1]];
        let mut data = vec![0.0; self.data.len()];
        for r in 0..rows {
            for c in 0..cols {
                data[c * rows + r] = self.data[r * cols + c];
            }
        }
        Self::new(vec![cols, rows], data)
    }
}

/// Floating-point tensors of a checkpoint, by name. Integer buffers (such as BERT's
/// `embeddings.position_ids`) are not weights and are skipped.
#[derive(Debug, Clone, Default)]
pub struct WeightMap {
    source: PathBuf,
    tensors: HashMap<String, HostTensor>,
    /// Tensors of other dtypes that were not read, with their dtype, for error messages.
    skipped: HashMap<String, String>,
}

impl WeightMap {
    /// An empty map; `source` names it in error messages.
    pub fn new(source: impl Into<PathBuf>) -> Self {
        Self {
            source: source.into(),
            tensors: HashMap::new(),
            skipped: HashMap::new(),
        }
    }

    /// Reads every floating-point tensor of a safetensors file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| CotoError::io("failed to read", path, e))?;
        Self::from_bytes(&bytes, path)
    }

    /// Parses a safetensors buffer; `source` names it in error messages.
    pub fn from_bytes(bytes: &[u8], source: &Path) -> Result<Self> {
        let invalid = |message: String| CotoError::Weights {
            path: source.to_path_buf(),
            message,
        };
        let file = SafeTensors::deserialize(bytes).map_err(|e| {
            invalid(format!("not a readable safetensors file ({e}); download it again"))
        })?;
        let mut map = Self::new(source);
        for (name, view) in file.tensors() {
            let data = match view.dtype() {
                Dtype::F32 => decode(view.data(), 4, |b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
                Dtype::F16 => decode(view.data(), 2, |b| {
                    burn::tensor::f16::from_le_bytes([b[0], b[1]]).to_f32()
                }),
                Dtype::BF16 => decode(view.data(), 2, |b| {
                    burn::tensor::bf16::from_le_bytes([b[0], b[1]]).to_f32()
                }),
                Dtype::F64 => decode(view.data(), 8, |b| {
                    f64::from_le_bytes(b.try_into().unwrap_or([0; 8])) as f32
                }),
                other => {
                    map.skipped.insert(name.to_string(), format!("{other:?}"));
                    continue;
                }
            };
            map.insert(name, HostTensor::new(view.shape().to_vec(), data));
        }
        Ok(map)
    }

    /// Adds or replaces a tensor.
    pub fn insert(&mut self, name: impl Into<String>, tensor: HostTensor) {
        self.tensors.insert(name.into(), tensor);
    }

    /// Removes `prefix` from every name that has it (checkpoints of task models store the
    /// encoder under `bert.`).
    pub fn without_prefix(mut self, prefix: &str) -> Self {
        self.tensors = self
            .tensors
            .into_iter()
            .map(|(name, tensor)| match name.strip_prefix(prefix) {
                Some(stripped) => (stripped.to_string(), tensor),
                None => (name, tensor),
            })
            .collect();
        self
    }

    /// Whether a tensor named `name` exists.
    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// Tensor names, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.tensors.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }

    /// The file these weights came from.
    pub fn source(&self) -> &Path {
        &self.source
    }

    /// Returns the largest tensor's name and size in bytes (f32), if there is any tensor.
    pub fn largest(&self) -> Option<(&str, u64)> {
        self.tensors
            .iter()
            .map(|(name, tensor)| (name.as_str(), 4 * tensor.data.len() as u64))
            .max_by(|a, b| a.1.cmp(&b.1).then_with(|| b.0.cmp(a.0)))
    }

    /// Checks that every tensor fits in one GPU buffer of `limit` bytes (a WebGPU adapter's
    /// `maxStorageBufferBindingSize`, or `maxBufferSize` if smaller), before any is uploaded.
    pub fn check_buffer_limit(&self, limit: u64, adapter: &str) -> Result<()> {
        match self.largest() {
            Some((name, bytes)) if bytes > limit => Err(CotoError::Device(format!(
                "the model's tensor {name} needs {:.1} MiB, more than the {:.1} MiB that one buffer of \
                 {adapter} may hold; train on the CPU or pick a smaller model",
                bytes as f64 / 1048576.0,
                limit as f64 / 1048576.0
            ))),
            _ => Ok(()),
        }
    }

    /// Looks up `name` whatever its shape.
    pub fn get_any(&self, name: &str) -> Option<&HostTensor> {
        self.tensors.get(name)
    }

    /// Looks up `name` and checks its shape.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<&HostTensor> {
        let tensor = self.tensors.get(name).ok_or_else(|| CotoError::Weights {
            path: self.source.clone(),
            message: match self.skipped.get(name) {
                Some(dtype) => format!("tensor `{name}` has dtype {dtype}; coto reads F32, F16, BF16 and F64 weights"),
                None => format!("tensor `{name}` is missing; is this a checkpoint of the configured model?"),
            },
        })?;
        if tensor.shape != shape {
            return Err(CotoError::Weights {
                path: self.source.clone(),
                message: format!(
                    "tensor `{name}` has shape {:?}, but the config expects {shape:?}",
                    tensor.shape
                ),
            });
        }
        Ok(tensor)
    }

    /// Builds a linear layer from `{prefix}.weight` (`[out, in]`, PyTorch's layout) and
    /// `{prefix}.bias` (`[out]`).
    pub fn linear(&self, prefix: &str, d_in: usize, d_out: usize, device: &Device) -> Result<Linear> {
        let weight = self.get(&format!("{prefix}.weight"), &[d_out, d_in])?;
        let bias = self.get(&format!("{prefix}.bias"), &[d_out])?;
        Ok(linear_from_torch(weight, Some(bias), device))
    }

    /// Builds a LayerNorm from `{prefix}.weight` and `{prefix}.bias` (or the older `gamma` and
    /// `beta` names).
    pub fn layer_norm(&self, prefix: &str, d: usize, epsilon: f64, device: &Device) -> Result<LayerNorm> {
        let (gamma, beta) = if self.contains(&format!("{prefix}.gamma")) {
            ("gamma", "beta")
        } else {
            ("weight", "bias")
        };
        let mut norm = LayerNormConfig::new(d).with_epsilon(epsilon).init(device);
        norm.gamma = Param::from_tensor(self.get(&format!("{prefix}.{gamma}"), &[d])?.to_tensor(device));
        norm.beta = Some(Param::from_tensor(self.get(&format!("{prefix}.{beta}"), &[d])?.to_tensor(device)));
        Ok(norm)
    }

    /// Builds an embedding table from `{name}` of shape `[rows, d]`.
    pub fn embedding(&self, name: &str, rows: usize, d: usize, device: &Device) -> Result<Embedding> {
        Ok(Embedding {
            weight: Param::from_tensor(self.get(name, &[rows, d])?.to_tensor(device)),
        })
    }
}

/// Builds a burn linear layer from a PyTorch-layout weight `[out, in]` and optional bias `[out]`.
pub fn linear_from_torch(weight: &HostTensor, bias: Option<&HostTensor>, device: &Device) -> Linear {
    Linear {
        weight: Param::from_tensor(weight.transposed().to_tensor(device)),
        bias: bias.map(|b| Param::from_tensor(b.to_tensor(device))),
    }
}

impl WeightMap {
    /// Serialises every tensor as float32 safetensors, names sorted, with `metadata` in the
    /// header.
    pub fn to_safetensors(&self, metadata: Option<HashMap<String, String>>) -> Result<Vec<u8>> {
        let buffers: Vec<(String, Vec<usize>, Vec<u8>)> = self
            .names()
            .into_iter()
            .map(|name| {
                let tensor = &self.tensors[name];
                let bytes = tensor.data.iter().flat_map(|v| v.to_le_bytes()).collect();
                (name.to_string(), tensor.shape.clone(), bytes)
            })
            .collect();
        let invalid = |e: safetensors::SafeTensorError| CotoError::Weights {
            path: self.source.clone(),
            message: format!("cannot serialise: {e}"),
        };
        let views = buffers
            .iter()
            .map(|(name, shape, bytes)| {
                safetensors::tensor::TensorView::new(Dtype::F32, shape.clone(), bytes).map(|view| (name.clone(), view))
            })
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(invalid)?;
        safetensors::serialize(views, metadata).map_err(invalid)
    }
}

fn decode(bytes: &[u8], width: usize, convert: impl Fn(&[u8]) -> f32) -> Vec<f32> {
    bytes.chunks_exact(width).map(convert).collect()
}
