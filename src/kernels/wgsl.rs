//! Launching the hand-written WGSL kernels of `shaders/` on a wgpu tensor's device.
//!
//! Every kernel takes contiguous row-major f32 buffers in the order of its `@binding`s, then a
//! uniform `Params { dims: vec4<u32>, scale: f32 }` block, which burn's launcher binds after
//! the buffers from the launch's info words.

use burn::backend::wgpu::{CubeTensor, KernelSource, SourceKernel, SourceTemplate, into_contiguous};
use burn::cubecl::prelude::{CubeCount, CubeDim, KernelId};
use burn::cubecl::server::{KernelArguments, MetadataBindingInfo};
use burn::tensor::{DType, Shape};

/// One WGSL file of `shaders/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shader {
    /// `h = x · Aᵀ` and `g = s · dY · B`.
    Project,
    /// `y = base + bias + s · h · Bᵀ`.
    Forward,
    /// `partial[c] = s · lhs[chunk c]ᵀ · rhs[chunk c]` (dA and dB, summed by the caller).
    GradFactors,
    /// `dx = base + g · A`.
    GradInput,
}

impl Shader {
    /// Returns whether the kernel runs on a grid of columns × rows (the wide epilogues and the chunked
    /// reductions), else on one invocation per output element (the thin rank-r outputs).
    fn row_grid(self) -> bool {
        matches!(self, Self::Forward | Self::GradInput | Self::GradFactors)
    }

    fn text(self) -> &'static str {
        match self {
            Self::Project => include_str!("../../shaders/lora_project.wgsl"),
            Self::Forward => include_str!("../../shaders/lora_forward.wgsl"),
            Self::GradFactors => include_str!("../../shaders/lora_grad_factors.wgsl"),
            Self::GradInput => include_str!("../../shaders/lora_grad_input.wgsl"),
        }
    }
}

/// A shader as a kernel source for burn's template launcher.
#[derive(Debug, Clone, Copy)]
struct ShaderSource(Shader);

impl KernelSource for ShaderSource {
    fn source(&self) -> SourceTemplate {
        SourceTemplate::new(self.0.text())
    }

    fn id(&self) -> KernelId {
        KernelId::new::<Self>().info(self.0 as u32)
    }

    fn lang(&self) -> &'static str {
        "wgsl"
    }
}

/// Packs the shaders' `Params` block into the launcher's 64-bit info words (little-endian
/// `u32` pairs): `dims` padded to four, then `scale`, then padding to the block's 32 bytes.
fn params_words(dims: &[u32], scale: f32) -> Vec<u64> {
    let mut values = [0u32; 8];
    values[..dims.len()].copy_from_slice(dims);
    values[4] = scale.to_bits();
    values.chunks(2).map(|pair| u64::from(pair[0]) | (u64::from(pair[1]) << 32)).collect()
}

/// Largest workgroup count per dispatch dimension that WebGPU guarantees.
pub const MAX_GROUPS: u32 = 65_535;

/// Launches `shader` on `inputs` (made contiguous) and returns a new `[rows, cols]` f32 tensor
/// written by it. `dims` (at most four) and `scale` fill the kernel's `Params` block.
pub fn launch(shader: Shader, inputs: &[CubeTensor], output_shape: [usize; 2], dims: &[u32], scale: Option<f32>) -> CubeTensor {
    let first = &inputs[0];
    let client = first.client.clone();
    let device = first.device.clone();
    let [rows, cols] = output_shape;
    let output = client.empty(rows * cols * size_of::<f32>());

    let mut arguments = KernelArguments::new();
    for input in inputs {
        let input = into_contiguous(input.clone());
        arguments = arguments.with_buffer(input.handle.clone().binding());
    }
    arguments = arguments.with_buffer(output.clone().binding());
    arguments = arguments.with_info(MetadataBindingInfo::custom(params_words(dims, scale.unwrap_or(1.0))));

    // 64 invocations per workgroup, as the shaders declare.
    let count = if shader.row_grid() {
        // x over the columns, y over the rows (the shader strides past the grid height).
        let groups_x = cols.div_ceil(64).max(1) as u32;
        let groups_y = rows.clamp(1, MAX_GROUPS as usize) as u32;
        CubeCount::new_2d(groups_x, groups_y)
    } else {
        // One invocation per output element, numbered across a 2-D grid.
        let groups = (rows * cols).div_ceil(64) as u32;
        let groups_x = groups.clamp(1, MAX_GROUPS);
        let groups_y = groups.div_ceil(MAX_GROUPS).max(1);
        CubeCount::new_2d(groups_x, groups_y)
    };
    client.launch(Box::new(SourceKernel::new(ShaderSource(shader), CubeDim::new_1d(64))), count, arguments);
    CubeTensor::new_contiguous(client, device, Shape::from([rows, cols]), output, DType::F32)
}
