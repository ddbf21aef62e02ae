// LoRA epilogue of the input gradient: dx = base + g · A, where base = dY · Wᵀ is the frozen
// linear's part from burn's tuned matmul and g = s · dY · B comes from lora_project.wgsl.
// One pass over [rows, in] replaces the composed version's matmul into a new tensor and add.
// Used when the adapter sees the layer input itself (no adapter dropout).
//
// Tensors (f32, row-major, contiguous):
//   base: [rows, in]   dY · Wᵀ
//   g:    [rows, r]
//   a:    [r, in]      LoRA's A (PEFT layout)
//   dx:   [rows, in]   output
// params: dims = [rows, in, r]
//
// Dispatch as in lora_forward.wgsl: workgroups of 64 along `in`, one workgroup row per token
// row (striding past 65 535 rows). An invocation reads one row of g and one column of A
// (r values). No workgroup memory; invocations past `in` return without writing.

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
@group(0) @binding(1) var<storage, read_write> g: array<f32>;
@group(0) @binding(2) var<storage, read_write> a: array<f32>;
@group(0) @binding(3) var<storage, read_write> dx: array<f32>;
@group(0) @binding(4) var<uniform> params: Params;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let rows = params.dims[0];
    let inputs = params.dims[1];
    let rank = params.dims[2];
    let i = id.x;
    if (i >= inputs) {
        return;
    }
    for (var t = id.y; t < rows; t = t + groups.y) {
        var low_rank = 0.0;
        for (var k = 0u; k < rank; k = k + 1u) {
            low_rank = low_rank + g[t * rank + k] * a[k * inputs + i];
        }
        let index = t * inputs + i;
        dx[index] = base[index] + low_rank;
    }
}
