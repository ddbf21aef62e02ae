// LoRA epilogue of the forward pass: y = base + bias + s · (h · Bᵀ), where base = x · W is the
// frozen linear's product from burn's tuned matmul and h = x · Aᵀ comes from lora_project.wgsl.
// One pass over [rows, out] replaces the composed version's four (bias add, h · Bᵀ, scale,
// add).
//
// Tensors (f32, row-major, contiguous):
//   base: [rows, out]   x · W
//   bias: [out]
//   h:    [rows, r]
//   b:    [out, r]      LoRA's B (PEFT layout)
//   y:    [rows, out]   output
// params: dims = [rows, out, r], scale = s
//
// Dispatch: workgroups of 64 invocations (within WebGPU's default 256) along `out`, one
// workgroup row per token row; past 65 535 rows each invocation strides over rows by the
// grid height. An invocation reads one row of h and one row of B (r values each), so the
// pass costs about one read and one write of [rows, out]. The 2-D grid needs no integer
// division per element. No workgroup memory; invocations past `out` return without writing.

// Every binding is declared read_write: burn places tensors in shared pool buffers, so an
// input and the output can be ranges of one wgpu buffer, and wgpu rejects a dispatch that
// uses one buffer both read-only and read-write.

// Sizes and scale, passed by burn's launcher as the kernel's uniform info block (binding after
// the buffers), so they are uniform values and need no buffer of their own.
struct Params {
    dims: vec4<u32>,
    scale: f32,
}

@group(0) @binding(0) var<storage, read_write> base: array<f32>;
@group(0) @binding(1) var<storage, read_write> bias: array<f32>;
@group(0) @binding(2) var<storage, read_write> h: array<f32>;
@group(0) @binding(3) var<storage, read_write> b: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
@group(0) @binding(5) var<uniform> params: Params;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let rows = params.dims[0];
    let outputs = params.dims[1];
    let rank = params.dims[2];
    let o = id.x;
    if (o >= outputs) {
        return;
    }
    let bias_o = bias[o];
    for (var t = id.y; t < rows; t = t + groups.y) {
        var low_rank = 0.0;
        for (var k = 0u; k < rank; k = k + 1u) {
            low_rank = low_rank + h[t * rank + k] * b[o * rank + k];
        }
        let index = t * outputs + o;
        y[index] = base[index] + bias_o + params.scale * low_rank;
    }
}
