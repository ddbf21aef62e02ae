// Rank-r projections of the LoRA layer, one dot product per output element:
//   h = x · Aᵀ         forward down-projection   (lhs = x,  inner = in,  A is [r, in])
//   g = s · dY · B     gradient at h, shared by dA and the adapter's part of dx
//                      (lhs = dY, inner = out, B is [out, r])
// out[t, k] = scale · Σ_j lhs[t, j] · factor(k, j), where factor(k, j) is A[k, j] or B[j, k].
//
// Tensors (f32, row-major, contiguous):
//   lhs:    [rows, inner]      rows = every token of the batch
//   factor: [r, inner] (A) or [inner, r] (B), PEFT layouts
//   out:    [rows, r]
// params: dims = [rows, inner, r, layout], layout 0 for A and 1 for B; scale = 1 for h, s for g
//
// The output is thin (r is 1 to 64), so there are few elements and each reads a whole row of
// lhs. 64 invocations per workgroup keep the launch within WebGPU's default limits (256
// invocations) on every device; the elements are numbered across a 2-D grid so that large
// batches stay under 65 535 workgroups per dimension. Invocations past rows · r return without
// writing.

// Every binding is declared read_write: burn places tensors in shared pool buffers, so an
// input and the output can be ranges of one wgpu buffer, and wgpu rejects a dispatch that
// uses one buffer both read-only and read-write.

// Sizes and scale, passed by burn's launcher as the kernel's uniform info block (binding after
// the buffers), so they are uniform values and need no buffer of their own.
struct Params {
    dims: vec4<u32>,
    scale: f32,
}

@group(0) @binding(0) var<storage, read_write> lhs: array<f32>;
@group(0) @binding(1) var<storage, read_write> factor: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<uniform> params: Params;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let rows = params.dims[0];
    let inner = params.dims[1];
    let rank = params.dims[2];
    let index = id.x + id.y * groups.x * 64u;
    if (index >= rows * rank) {
        return;
    }
    let t = index / rank;
    let k = index % rank;
    // Element (k, j) of the factor sits at k · step_k + j · step_j.
    var step_k = inner;
    var step_j = 1u;
    if (params.dims[3] == 1u) {
        step_k = 1u;
        step_j = rank;
    }
    var sum = 0.0;
    for (var j = 0u; j < inner; j = j + 1u) {
        sum = sum + lhs[t * inner + j] * factor[k * step_k + j * step_j];
    }
    out[index] = params.scale * sum;
}
