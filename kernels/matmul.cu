// Matrix products with f16 weights `W [n, k]` (row-major, output features major) and f32
// activations: out[t, j] = sum_i x[t, i] * W[j, i] (+ residual[t, j]).
//
// 1. gemv_f16 / gemv_f16_residual (template flag RESIDUAL) -- decode (one row) and the LM head
//    row of a prefill. Bandwidth-bound: the whole of W is streamed once per token.
//    dtypes:  x f32 [rows, k]; W f16 [n, k]; out, residual f32 [rows, n]; f32 accumulation.
//    launch:  block 256 = 8 warps; `warps_per_row` (1, 2, 4 or 8, host-chosen) warps share one
//             output row, so a block computes 8 / warps_per_row rows; grid
//             (ceil(n / rows_per_block), rows_launched). The host picks warps_per_row so that
//             there are at least ~2 blocks per SM (small n such as o_proj/down_proj, n = 896, need
//             several warps per row to keep enough bytes in flight; the LM head, n = 151936, uses 1).
//             Each lane issues UNROLL independent 16-byte streaming loads (8 halves) before using
//             them, so a warp has UNROLL * 512 bytes in flight. k % 8 != 0 falls back to a scalar
//             loop (rows are then not 16-byte aligned).
//    PDL:     the first UNROLL loads of every lane (at k = 896 the lane's whole share of the row)
//             are issued before pdl_prologue(): weights are constants, so their HBM latency can
//             overlap the previous kernel's tail. Activations are read only after it.
//    rows:    `last_row` != 0: compute only row n_tokens - 1 (the LM head in prefill/decode, grid y
//             = 1); otherwise row blockIdx.y, skipped when >= n_tokens.
//    aliasing: residual and x must not alias out (checked by the runtime's plan validation).
//
// 2. convert_rows_f16 + gemm_epilogue -- the prefill GEMM runs on tensor cores through cuBLAS
//    (cublasGemmEx, f16 A/B, f32 C, f32 compute) between these two kernels:
//    convert_rows_f16: x16[t, :] = f16(x[t, :] * 2^s_t) with s_t chosen per row so that the
//             row's max |x| lands in [2^7, 2^8): activations of Qwen2 MLPs can exceed the f16
//             range (65504), and scaling by a power of two is exact. scale[t] = 2^-s_t.
//             launch: grid (rows), block 256 (max-abs block reduction, then convert).
//    gemm_epilogue: out[t, j] = out[t, j] * scale[t] (+ residual[t, j]); grid (ceil(n/1024), rows),
//             block 256, float4 when n % 4 == 0.
//    numerics: x rounded to f16 (relative 2^-11 per element) -- the only extra error vs the f32
//             CPU twin; products and sums in f32.
#include "common.cuh"

namespace {
constexpr int GEMV_WARPS = 8;
constexpr int GEMV_UNROLL = 4;

// Dot product of 8 halves with 8 floats.
QA_DEVICE float dot8(const uint4 wv, const float4 x0, const float4 x1, float acc) {
    float w[8];
    unpack_half8(wv, w);
    acc = fmaf(w[0], x0.x, acc);
    acc = fmaf(w[1], x0.y, acc);
    acc = fmaf(w[2], x0.z, acc);
    acc = fmaf(w[3], x0.w, acc);
    acc = fmaf(w[4], x1.x, acc);
    acc = fmaf(w[5], x1.y, acc);
    acc = fmaf(w[6], x1.z, acc);
    acc = fmaf(w[7], x1.w, acc);
    return acc;
}
}  // namespace

template <bool RESIDUAL>
__device__ void gemv_impl(const int* __restrict__ state,
                          const float* __restrict__ x,         // [rows, k]
                          const __half* __restrict__ W,        // [n, k]
                          float* __restrict__ out,             // [rows, n]
                          const float* __restrict__ residual,  // [rows, n] or unused
                          int n, int k, int warps_per_row, int last_row) {
    __shared__ float red[GEMV_WARPS];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int sub = warp % warps_per_row;              // this warp's share of the row
    const int rows_per_block = GEMV_WARPS / warps_per_row;
    const int j = blockIdx.x * rows_per_block + warp / warps_per_row;
    const bool valid = j < n;
    const bool vec = (k & 7) == 0;
    const int nv = k >> 3;                   // 16-byte vectors per row
    const int step = warps_per_row * 32;     // vectors per unrolled slot
    const int base0 = sub * 32 + lane;
    const __half* wr = W + (size_t)(valid ? j : 0) * k;
    const uint4* w16 = reinterpret_cast<const uint4*>(wr);

    // Weights are constants, so the first batch of this lane's weight loads is issued BEFORE
    // waiting for the previous kernel (PDL): the HBM latency overlaps that kernel's tail and the
    // launch gap. At k = 896 this batch is a lane's whole share of the row.
    uint4 wv[GEMV_UNROLL];
#pragma unroll
    for (int u = 0; u < GEMV_UNROLL; ++u) {
        const int i = base0 + u * step;
        wv[u] = valid && vec && i < nv ? load_stream16(w16 + i) : make_uint4(0, 0, 0, 0);
    }
    pdl_prologue();  // from here on, activations (x, residual, state) are safe to read
    const int n_tokens = state_n_tokens(state);
    const int r = last_row ? n_tokens - 1 : (int)blockIdx.y;
    if (r >= n_tokens || r < 0) return;  // uniform per block: before any barrier

    float acc = 0.0f;
    if (valid) {
        const float* xr = x + (size_t)r * k;
        if (vec) {
            const float4* x4 = reinterpret_cast<const float4*>(xr);
            for (int base = base0; base < nv; base += step * GEMV_UNROLL) {
                if (base != base0) {
#pragma unroll
                    for (int u = 0; u < GEMV_UNROLL; ++u) {
                        const int i = base + u * step;
                        wv[u] = i < nv ? load_stream16(w16 + i) : make_uint4(0, 0, 0, 0);
                    }
                }
#pragma unroll
                for (int u = 0; u < GEMV_UNROLL; ++u) {
                    const int i = base + u * step;
                    if (i < nv) acc = dot8(wv[u], __ldg(x4 + 2 * i), __ldg(x4 + 2 * i + 1), acc);
                }
            }
        } else {
            for (int i = sub * 32 + lane; i < k; i += warps_per_row * 32)
                acc = fmaf(__half2float(wr[i]), __ldg(xr + i), acc);
        }
    }
    acc = warp_sum(acc);
    if (warps_per_row == 1) {
        if (valid && lane == 0) {
            if (RESIDUAL) acc += residual[(size_t)r * n + j];
            out[(size_t)r * n + j] = acc;
        }
        return;
    }
    if (lane == 0) red[warp] = acc;
    __syncthreads();
    if (valid && sub == 0 && lane == 0) {
        float s = 0.0f;
        for (int q = 0; q < warps_per_row; ++q) s += red[warp + q];
        if (RESIDUAL) s += residual[(size_t)r * n + j];
        out[(size_t)r * n + j] = s;
    }
}

extern "C" __global__ void __launch_bounds__(256) gemv_f16(const int* __restrict__ state, const float* __restrict__ x,
                                         const __half* __restrict__ W, float* __restrict__ out, int n,
                                         int k, int warps_per_row, int last_row) {
    gemv_impl<false>(state, x, W, out, nullptr, n, k, warps_per_row, last_row);
}

extern "C" __global__ void __launch_bounds__(256) gemv_f16_residual(const int* __restrict__ state, const float* __restrict__ x,
                                                  const __half* __restrict__ W, float* __restrict__ out,
                                                  const float* __restrict__ residual, int n, int k,
                                                  int warps_per_row, int last_row) {
    gemv_impl<true>(state, x, W, out, residual, n, k, warps_per_row, last_row);
}

// ---- prefill GEMM helpers (around cublasGemmEx) ------------------------------------------------

extern "C" __global__ void convert_rows_f16(const int* __restrict__ state,
                                            const float* __restrict__ x,  // [rows, k]
                                            __half* __restrict__ x16,     // [rows, k]
                                            float* __restrict__ scale,    // [rows]
                                            int k) {
    __shared__ float scratch[32];
    pdl_prologue();
    const int t = blockIdx.x;
    if (t >= state_n_tokens(state)) return;
    const float* xr = x + (size_t)t * k;
    float m = 0.0f;
    for (int i = threadIdx.x; i < k; i += blockDim.x) m = fmaxf(m, fabsf(xr[i]));
    // block max via the sum helper's pattern
    {
        const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = blockDim.x >> 5;
        m = warp_max(m);
        if (lane == 0) scratch[warp] = m;
        __syncthreads();
        m = lane < n_warps ? scratch[lane] : 0.0f;
        m = warp_max(m);
    }
    int e = 0;
    if (m > 0.0f && isfinite(m)) frexpf(m, &e);  // m = f * 2^e, f in [0.5, 1)
    // m * 2^s in [2^7, 2^8); clamped so that 2^s and 2^-s stay finite normal floats.
    const int s = max(-120, min(120, 8 - e));
    const float up = ldexpf(1.0f, s);
    if (threadIdx.x == 0) scale[t] = ldexpf(1.0f, -s);
    __half* o = x16 + (size_t)t * k;
    for (int i = threadIdx.x; i < k; i += blockDim.x) o[i] = __float2half_rn(xr[i] * up);
}

template <bool RESIDUAL>
__device__ void epilogue_impl(const int* __restrict__ state, float* __restrict__ out,
                              const float* __restrict__ scale, const float* __restrict__ residual, int n) {
    pdl_prologue();
    const int t = blockIdx.y;
    if (t >= state_n_tokens(state)) return;
    const float s = scale[t];
    float* o = out + (size_t)t * n;
    const float* res = RESIDUAL ? residual + (size_t)t * n : nullptr;
    const int stride = gridDim.x * blockDim.x;
    if ((n & 3) == 0) {
        for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n / 4; i += stride) {
            float4 v = reinterpret_cast<float4*>(o)[i];
            v.x *= s; v.y *= s; v.z *= s; v.w *= s;
            if (RESIDUAL) {
                const float4 q = reinterpret_cast<const float4*>(res)[i];
                v.x += q.x; v.y += q.y; v.z += q.z; v.w += q.w;
            }
            reinterpret_cast<float4*>(o)[i] = v;
        }
    } else {
        for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
            o[i] = o[i] * s + (RESIDUAL ? res[i] : 0.0f);
    }
}

extern "C" __global__ void gemm_epilogue(const int* __restrict__ state, float* __restrict__ out,
                                         const float* __restrict__ scale, int n) {
    epilogue_impl<false>(state, out, scale, nullptr, n);
}

extern "C" __global__ void gemm_epilogue_residual(const int* __restrict__ state, float* __restrict__ out,
                                                  const float* __restrict__ scale,
                                                  const float* __restrict__ residual, int n) {
    epilogue_impl<true>(state, out, scale, residual, n);
}
