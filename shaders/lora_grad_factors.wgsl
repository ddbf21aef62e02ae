// Gradients of LoRA's factors, both reductions over the rows (tokens):
//   dB[o, k] = s · Σ_t dY[t, o] · h[t, k]     (lhs = dY, rhs = h)
//   dA[k, i] =     Σ_t g[t, k] · x[t, i]      (lhs = g from lora_project.wgsl, rhs = x)
// where h = x · Aᵀ was saved by the forward pass, so the backward pass recomputes nothing.
//
// Tensors (f32, row-major, contiguous):
//   lhs:     [rows, m]            dY for dB (m = out), g for dA (m = r)
//   rhs:     [rows, n]            h for dB (n = r), x for dA (n = in)
//   partial: [chunks, m · n]      one partial sum of out[p, q] per chunk of rows
// params: dims = [rows, m, n, chunk], scale = s for dB, 1 for dA
//
// Both are out[p, q] = scale · Σ_t lhs[t, p] · rhs[t, q]. The outputs are small (out · r or
// r · in elements) and the sums long (every token), so the rows are cut into chunks: a 2-D
// grid of workgroups of 64 invocations along p · n + q (within WebGPU's default 256) and one
// workgroup row per chunk. The caller sums `partial` over its chunks with burn's reduction.
// This keeps hundreds of workgroups busy where one invocation per output would leave most of
// a GPU idle, and keeps each invocation's loop short. No workgroup memory; invocations past
// m · n return without writing, and the last chunk stops at `rows`.

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
@group(0) @binding(1) var<storage, read_write> rhs: array<f32>;
@group(0) @binding(2) var<storage, read_write> partial: array<f32>;
@group(0) @binding(3) var<uniform> params: Params;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    let rows = params.dims[0];
    let m = params.dims[1];
    let n = params.dims[2];
    let chunk = params.dims[3];
    let index = id.x;
    if (index >= m * n) {
        return;
    }
    let p = index / n;
    let q = index % n;
    let start = id.y * chunk;
    let end = min(rows, start + chunk);
    var sum = 0.0;
    for (var t = start; t < end; t = t + 1u) {
        sum = sum + lhs[t * m + p] * rhs[t * n + q];
    }
    partial[id.y * m * n + index] = params.scale * sum;
}
