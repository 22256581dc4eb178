// RMSNorm and fused residual-add + RMSNorm (one template, flag ADD).
//
//   ADD=false: out[t, :] = x[t, :] / sqrt(mean(x[t, :]^2) + eps) * w
//   ADD=true:  sum[t, :] = a[t, :] + b[t, :]; out[t, :] = rms_norm(sum[t, :]) * w
//
// dtypes:  a, b, sum, out f32 [rows, n]; w f32 [n].
// launch:  grid (rows), block 256: one block per row, float4 loads when n % 4 == 0 (rows then stay
//          16-byte aligned). Two passes over the row: sum of squares (block reduction), then scale.
//          The second pass re-reads the row from L1/L2 (n*4 bytes, e.g. 3.5 KB) instead of holding
//          it in registers, so any n works with one kernel.
// numerics: mean of squares accumulated in f32 (tree order, vs the CPU's sequential order: both
//          are within n * 2^-24 relative); 1/sqrtf (IEEE, not rsqrtf) like the CPU twin.
// aliasing: in place is allowed (out == x; sum_out == a or b; out == b): every element is read and
//          written by the same thread, and the passes are separated by a barrier. No __restrict__.
#include "common.cuh"

template <bool ADD>
__device__ void rms_norm_impl(const int* state,
                              const float* a,   // [rows, n] (x when !ADD)
                              const float* b,   // [rows, n] (unused when !ADD)
                              const float* w,   // [n]
                              float* sum_out,   // [rows, n] (unused when !ADD)
                              float* out,       // [rows, n]
                              int n, float eps) {
    __shared__ float scratch[32];
    const int t = blockIdx.x;
    const int n_tokens = state_n_tokens(state);  // written by the host before the launch: before the wait
    pdl_prologue();
    if (t >= n_tokens) return;
    const size_t base = (size_t)t * n;
    float ss = 0.0f;
    if ((n & 3) == 0) {
        const float4* a4 = reinterpret_cast<const float4*>(a + base);
        const float4* b4 = reinterpret_cast<const float4*>(b + base);
        float4* s4 = reinterpret_cast<float4*>(sum_out + base);
        for (int i = threadIdx.x; i < n / 4; i += blockDim.x) {
            float4 v = a4[i];
            if (ADD) {
                const float4 u = b4[i];
                v.x += u.x; v.y += u.y; v.z += u.z; v.w += u.w;
                s4[i] = v;
            }
            ss += v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w;
        }
    } else {
        for (int i = threadIdx.x; i < n; i += blockDim.x) {
            float v = a[base + i];
            if (ADD) {
                v += b[base + i];
                sum_out[base + i] = v;
            }
            ss += v * v;
        }
    }
    ss = block_sum(ss, scratch);  // also a barrier: sum_out is visible to the whole block
    const float inv = 1.0f / sqrtf(ss / (float)n + eps);
    const float* src = ADD ? sum_out : a;
    if ((n & 3) == 0) {
        const float4* x4 = reinterpret_cast<const float4*>(src + base);
        const float4* w4 = reinterpret_cast<const float4*>(w);
        float4* o4 = reinterpret_cast<float4*>(out + base);
        for (int i = threadIdx.x; i < n / 4; i += blockDim.x) {
            const float4 v = x4[i], g = w4[i];
            o4[i] = make_float4(v.x * inv * g.x, v.y * inv * g.y, v.z * inv * g.z, v.w * inv * g.w);
        }
    } else {
        for (int i = threadIdx.x; i < n; i += blockDim.x) out[base + i] = src[base + i] * inv * w[i];
    }
}

extern "C" __global__ void rms_norm_f32(const int* state, const float* x,
                                        const float* w, float* out, int n,
                                        float eps) {
    rms_norm_impl<false>(state, x, x, w, out, out, n, eps);
}

extern "C" __global__ void add_rms_norm_f32(const int* state, const float* a,
                                            const float* b, const float* w,
                                            float* sum_out, float* out, int n,
                                            float eps) {
    rms_norm_impl<true>(state, a, b, w, sum_out, out, n, eps);
}
