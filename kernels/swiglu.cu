// SwiGLU on packed [gate | up] rows: out[t, i] = silu(gate[t, i]) * up[t, i],
// silu(x) = x / (1 + exp(-x)).
//
// dtypes:  gate_up f32 [rows, 2*ffn]; out f32 [rows, ffn].
// launch:  grid (ceil(ffn / 1024), rows), block 256; float4 when ffn % 4 == 0 (4 elements per
//          thread). Elementwise and bandwidth-bound (58 KB per row at 0.5B): one wave.
// numerics: IEEE expf and division, the same formula as the CPU twin (x / (1 + exp(-x)) is exact
//          at both ends: exp overflow gives -0/+0 for very negative x, 1 + tiny for large x).
#include "common.cuh"

extern "C" __global__ void swiglu_f32(const int* __restrict__ state,
                                      const float* __restrict__ gate_up,  // [rows, 2*ffn]
                                      float* __restrict__ out,            // [rows, ffn]
                                      int ffn) {
    const int t = blockIdx.y;
    const int n_tokens = state_n_tokens(state);  // written by the host before the launch: before the wait
    pdl_prologue();
    if (t >= n_tokens) return;
    const float* g = gate_up + (size_t)t * 2 * ffn;
    const float* u = g + ffn;
    float* o = out + (size_t)t * ffn;
    const int stride = gridDim.x * blockDim.x;
    if ((ffn & 3) == 0) {
        for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < ffn / 4; i += stride) {
            const float4 a = reinterpret_cast<const float4*>(g)[i];
            const float4 b = reinterpret_cast<const float4*>(u)[i];
            reinterpret_cast<float4*>(o)[i] =
                make_float4(silu(a.x) * b.x, silu(a.y) * b.y, silu(a.z) * b.z, silu(a.w) * b.w);
        }
    } else {
        for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < ffn; i += stride) o[i] = silu(g[i]) * u[i];
    }
}
