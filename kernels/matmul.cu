// Matrix products with f16 weights `W [n, k]` (row-major, output features major) and f32
// activations: y[t, j] = sum_i x'[t, i] * W[j, i], where x' is x or its RMS norm.
//
// 1. GEMV family -- decode (one row) and the LM head row of a prefill. Bandwidth-bound: the whole
//    of W is streamed once per token. Three entry points share gemv_impl<EPI>:
//    gemv_f16         out[t, j] = y[t, j] (+ residual[t, j] when residual != null)
//    gemv_f16_swiglu  W packed [gate (ffn) | up (ffn)], n = 2*ffn:
//                     out[t, i] = silu(y[t, i]) * y[t, ffn + i]      (out [rows, ffn])
//    gemv_f16_rope    W packed qkv, n = (H + 2Hkv) * d: y + bias, RoPE on q and k, k and v written
//                     to the KV cache (K f32, V f16) at position pos + t, rotated q to q_out -- exactly the
//                     bias_rope_kv_write kernel (rope.cu) applied to y.
//    norm prologue (any entry point, when norm_w != null): x'[t, i] = x[t, i] * norm_w[i] * inv_t,
//             inv_t = 1 / sqrt(mean_i x[t, i]^2 + eps). Every warp already streams its share of
//             the x row for the dot products, so it also sums x^2 over that share and multiplies
//             x by norm_w as it goes; inv_t is a per-row scalar applied to the finished dot product
//             (y = inv_t * sum_i W x w). No extra pass, no extra barrier, no extra launch: the
//             norm kernel in front of every matmul disappears (plan step Gemv with a norm).
//    pairs:   the SwiGLU and RoPE epilogues need two outputs of y at once (gate i with up i; the
//             rotation pair i, i + d/2 of a head), so one warp group computes a "unit" of two rows
//             of W together (two independent load streams); the plain store has units of one row.
//    dtypes:  x f32 [rows, k]; W f16 [n, k]; out, residual f32; norm_w, bias f32 (bias null: none, gemv_epilogue.cuh); f32 accumulation.
//    launch:  block 256 = 8 warps; `warps_per_row` (1, 2, 4 or 8, host-chosen) warps share one
//             unit, so a block computes 8 / warps_per_row units; grid (ceil(units /
//             units_per_block), rows_launched). The host picks warps_per_row so that there are at
//             least ~2 blocks per SM (small n such as o_proj/down_proj, n = 896, need several warps
//             per row to keep enough bytes in flight; the LM head, n = 151936, uses 1). Each lane
//             issues UNROLL independent 16-byte streaming loads (8 halves) per row of its unit
//             before using them, so a warp has UNROLL * 512 bytes per row in flight. k % 8 != 0
//             falls back to a scalar loop (rows are then not 16-byte aligned).
//    many rows per warp: gemv_f16_rows (gemv_rows_impl, below): for very tall
//             matrices (the LM head) each warp keeps its share of x in registers and streams
//             several consecutive rows through it.
//    PDL:     the first UNROLL loads of every lane (at k = 896 the lane's whole share of the row)
//             are issued before pdl_prologue(): weights are constants, so their HBM latency can
//             overlap the previous kernel's tail. Activations are read only after it.
//    rows:    `last_row` != 0: compute only row n_tokens - 1 (the LM head in prefill/decode, grid y
//             = 1); otherwise row blockIdx.y, skipped when >= n_tokens.
//    numerics: vs the CPU twins (rms_norm, then matmul, then swiglu / bias_rope_kv_write): the
//             norm's 1/sqrt is applied after the dot product instead of to each element, and sums
//             run in a different order -- both within the f32 bounds runtime/src/cuda/check.rs
//             derives. RoPE and SwiGLU use the same formulas as rope.cu / swiglu.cu.
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
#include "gemv_epilogue.cuh"

namespace {
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

QA_DEVICE float sumsq4(const float4 v, float acc) {
    acc = fmaf(v.x, v.x, acc);
    acc = fmaf(v.y, v.y, acc);
    acc = fmaf(v.z, v.z, acc);
    return fmaf(v.w, v.w, acc);
}

QA_DEVICE float4 mul4(const float4 a, const float4 b) { return make_float4(a.x * b.x, a.y * b.y, a.z * b.z, a.w * b.w); }

}  // namespace

template <int EPI, int UNROLL = GEMV_UNROLL>
__device__ void gemv_impl(const int* __restrict__ state,
                          const float* __restrict__ x,       // [rows, k]
                          const float* __restrict__ norm_w,  // [k] or null (no norm)
                          float eps,
                          const __half* __restrict__ W,      // [n, k]
                          int n, int k, int warps_per_row, int last_row, const GemvOut o) {
    constexpr bool PAIR = EPI != EPI_STORE;
    __shared__ float red[3][GEMV_WARPS];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int sub = warp % warps_per_row;              // this warp's share of the row
    const int units_per_block = GEMV_WARPS / warps_per_row;
    const int unit = blockIdx.x * units_per_block + warp / warps_per_row;
    const int units = PAIR ? n / 2 : n;
    const bool valid = unit < units;
    int j0, j1;
    unit_rows<EPI>(unit, n, o.head_dim, j0, j1);
    const bool vec = (k & 7) == 0;
    const int nv = k >> 3;                   // 16-byte vectors per row
    const int step = warps_per_row * 32;     // vectors per unrolled slot
    const int base0 = sub * 32 + lane;
    const __half* wr0 = W + (size_t)(valid ? j0 : 0) * k;
    const __half* wr1 = W + (size_t)(valid ? j1 : 0) * k;
    const uint4* w0 = reinterpret_cast<const uint4*>(wr0);
    const uint4* w1 = reinterpret_cast<const uint4*>(wr1);

    // Weights are constants, so the first batch of this lane's weight loads is issued BEFORE
    // waiting for the previous kernel (PDL): the HBM latency overlaps that kernel's tail and the
    // launch gap. At k = 896 this batch is a lane's whole share of the row.
    uint4 wv0[UNROLL], wv1[UNROLL];
#pragma unroll
    for (int u = 0; u < UNROLL; ++u) {
        const int i = base0 + u * step;
        const bool ok = valid && vec && i < nv;
        wv0[u] = ok ? load_stream16(w0 + i) : make_uint4(0, 0, 0, 0);
        if (PAIR) wv1[u] = ok ? load_stream16(w1 + i) : make_uint4(0, 0, 0, 0);
    }
    // The run state is written by the host before the launch, so the row is known before the
    // wait, and so are the epilogue's constants (RoPE: bias pair, sine and cosine).
    const int n_tokens = state_n_tokens(state);
    const int r = last_row ? n_tokens - 1 : (int)blockIdx.y;
    EpiIn in{0.0f, 0.0f, 0.0f, 0.0f, 1.0f};
    if (valid && r < n_tokens && r >= 0) epi_load_consts<EPI>(o, state, r, j0, j1, in);
    pdl_prologue();  // from here on, activations (x, residual) are safe to read
    if (r >= n_tokens || r < 0) return;  // uniform per block: before any barrier
    if (valid) epi_load_acts<EPI>(o, r, n, j0, in);  // in flight with the x loads below

    const bool norm = norm_w != nullptr;
    float acc0 = 0.0f, acc1 = 0.0f, ss = 0.0f;
    if (valid) {
        const float* xr = x + (size_t)r * k;
        if (vec) {
            const float4* x4 = reinterpret_cast<const float4*>(xr);
            const float4* g4 = reinterpret_cast<const float4*>(norm_w);
            for (int base = base0; base < nv; base += step * UNROLL) {
                if (base != base0) {
#pragma unroll
                    for (int u = 0; u < UNROLL; ++u) {
                        const int i = base + u * step;
                        wv0[u] = i < nv ? load_stream16(w0 + i) : make_uint4(0, 0, 0, 0);
                        if (PAIR) wv1[u] = i < nv ? load_stream16(w1 + i) : make_uint4(0, 0, 0, 0);
                    }
                }
#pragma unroll
                for (int u = 0; u < UNROLL; ++u) {
                    const int i = base + u * step;
                    if (i < nv) {
                        float4 xa = __ldg(x4 + 2 * i), xb = __ldg(x4 + 2 * i + 1);
                        if (norm) {
                            ss = sumsq4(xb, sumsq4(xa, ss));
                            xa = mul4(xa, __ldg(g4 + 2 * i));
                            xb = mul4(xb, __ldg(g4 + 2 * i + 1));
                        }
                        acc0 = dot8(wv0[u], xa, xb, acc0);
                        if (PAIR) acc1 = dot8(wv1[u], xa, xb, acc1);
                    }
                }
            }
        } else {
            for (int i = base0; i < k; i += step) {
                float xv = __ldg(xr + i);
                if (norm) {
                    ss = fmaf(xv, xv, ss);
                    xv *= __ldg(norm_w + i);
                }
                acc0 = fmaf(__half2float(wr0[i]), xv, acc0);
                if (PAIR) acc1 = fmaf(__half2float(wr1[i]), xv, acc1);
            }
        }
    }
    acc0 = warp_sum(acc0);
    if (PAIR) acc1 = warp_sum(acc1);
    if (norm) ss = warp_sum(ss);
    if (warps_per_row > 1) {
        if (lane == 0) {
            red[0][warp] = acc0;
            red[1][warp] = acc1;
            red[2][warp] = ss;
        }
        __syncthreads();
        if (sub != 0) return;
        acc0 = acc1 = ss = 0.0f;
        for (int q = 0; q < warps_per_row; ++q) {
            acc0 += red[0][warp + q];
            acc1 += red[1][warp + q];
            ss += red[2][warp + q];
        }
    }
    if (!valid || lane != 0) return;
    // The norm's scale, with rms_norm_impl's arithmetic (norm.cu).
    const float inv = norm ? 1.0f / sqrtf(ss / (float)k + eps) : 1.0f;
    gemv_epilogue<EPI>(o, state, r, n, unit, j0, j1, acc0 * inv, acc1 * inv, in);
}

// Many rows per warp (the LM head: n = 151936, k = 896), EPI_STORE with warps_per_row == 1 and
// k % 8 == 0, k <= 256 * GEMV_UNROLL: the lane's share of x (UNROLL pairs of float4) fits in
// registers, so each warp loads x once -- normalised once, its x^2 summed once -- and then streams
// `rows_per_warp` consecutive rows of W through it, the next row's loads in flight while the
// current row's dot product runs. Per weight vector that is one 16-byte load and 8 FMAs, instead
// of re-reading x (and the norm weight) from L1 for every row.
template <int EPI>
__device__ void gemv_rows_impl(const int* __restrict__ state, const float* __restrict__ x,
                               const float* __restrict__ norm_w, float eps, const __half* __restrict__ W,
                               int n, int k, int units_per_warp, int last_row, const GemvOut o) {
    constexpr bool PAIR = EPI != EPI_STORE;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int units = PAIR ? n / 2 : n;
    const int first = (blockIdx.x * GEMV_WARPS + warp) * units_per_warp;
    const int last = min(first + units_per_warp, units);
    const int nv = k >> 3;
    const uint4* w16 = reinterpret_cast<const uint4*>(W);
    uint4 cur0[GEMV_UNROLL], cur1[GEMV_UNROLL], nxt0[GEMV_UNROLL], nxt1[GEMV_UNROLL];
    auto load_unit = [&](int unit, uint4 (&d0)[GEMV_UNROLL], uint4 (&d1)[GEMV_UNROLL]) {
        int j0, j1;
        unit_rows<EPI>(unit, n, o.head_dim, j0, j1);
#pragma unroll
        for (int u = 0; u < GEMV_UNROLL; ++u) {
            const int i = lane + u * 32;
            const bool ok = unit < last && i < nv;
            d0[u] = ok ? load_stream16(w16 + (size_t)j0 * nv + i) : make_uint4(0, 0, 0, 0);
            if (PAIR) d1[u] = ok ? load_stream16(w16 + (size_t)j1 * nv + i) : make_uint4(0, 0, 0, 0);
        }
    };
    load_unit(first, cur0, cur1);
    const int n_tokens = state_n_tokens(state);  // written by the host before the launch: before the wait
    const int r = last_row ? n_tokens - 1 : (int)blockIdx.y;
    pdl_prologue();  // activations are safe to read from here on
    if (r >= n_tokens || r < 0 || first >= last) return;  // no barriers in this function

    const bool norm = norm_w != nullptr;
    const float4* x4 = reinterpret_cast<const float4*>(x + (size_t)r * k);
    const float4* g4 = reinterpret_cast<const float4*>(norm_w);
    float4 xa[GEMV_UNROLL], xb[GEMV_UNROLL];
    float ss = 0.0f;
#pragma unroll
    for (int u = 0; u < GEMV_UNROLL; ++u) {
        const int i = lane + u * 32;
        xa[u] = xb[u] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        if (i < nv) {
            xa[u] = __ldg(x4 + 2 * i);
            xb[u] = __ldg(x4 + 2 * i + 1);
            if (norm) {
                ss = sumsq4(xb[u], sumsq4(xa[u], ss));
                xa[u] = mul4(xa[u], __ldg(g4 + 2 * i));
                xb[u] = mul4(xb[u], __ldg(g4 + 2 * i + 1));
            }
        }
    }
    // The norm's scale, with rms_norm_impl's arithmetic (norm.cu).
    const float inv = norm ? 1.0f / sqrtf(warp_sum(ss) / (float)k + eps) : 1.0f;
    for (int unit = first; unit < last; ++unit) {
        load_unit(unit + 1, nxt0, nxt1);
        float acc0 = 0.0f, acc1 = 0.0f;
#pragma unroll
        for (int u = 0; u < GEMV_UNROLL; ++u) {
            acc0 = dot8(cur0[u], xa[u], xb[u], acc0);
            if (PAIR) acc1 = dot8(cur1[u], xa[u], xb[u], acc1);
        }
        acc0 = warp_sum(acc0);
        if (PAIR) acc1 = warp_sum(acc1);
        if (lane == 0) {
            int j0, j1;
            unit_rows<EPI>(unit, n, o.head_dim, j0, j1);
            EpiIn in{0.0f, 0.0f, 0.0f, 0.0f, 1.0f};
            epi_load_consts<EPI>(o, state, r, j0, j1, in);
            epi_load_acts<EPI>(o, r, n, j0, in);
            gemv_epilogue<EPI>(o, state, r, n, unit, j0, j1, acc0 * inv, acc1 * inv, in);
        }
#pragma unroll
        for (int u = 0; u < GEMV_UNROLL; ++u) {
            cur0[u] = nxt0[u];
            if (PAIR) cur1[u] = nxt1[u];
        }
    }
}

// The plain-store entry points differ only in loads per lane (UNROLL). gemv_f16_wide serves
// rows longer than 4 vectors per lane (down_proj: k = 4864, 4 warps per row, 4.75 vectors per
// lane): 8 loads per lane in flight, so the whole share of the row is requested before the PDL
// wait instead of only its first half. Separate kernels, not one with a runtime switch, so that
// gemv_f16 keeps its 48 registers (o_proj and down_proj occupancy).
#define GEMV_STORE_ENTRY(NAME, UNROLL_)                                                                              \
    extern "C" __global__ void __launch_bounds__(256) NAME(const int* __restrict__ state, const float* __restrict__ x, \
                                                           const float* __restrict__ norm_w, float eps,               \
                                                           const __half* __restrict__ W, float* __restrict__ out,     \
                                                           const float* __restrict__ residual, int n, int k,          \
                                                           int warps_per_row, int last_row) {                         \
        const GemvOut o{out, residual, nullptr, nullptr, nullptr, nullptr, 0, 0, 0};                                  \
        gemv_impl<EPI_STORE, UNROLL_>(state, x, norm_w, eps, W, n, k, warps_per_row, last_row, o);                     \
    }
GEMV_STORE_ENTRY(gemv_f16, GEMV_UNROLL)
GEMV_STORE_ENTRY(gemv_f16_wide, 2 * GEMV_UNROLL)
#undef GEMV_STORE_ENTRY

// Its own entry point: the register-resident x needs ~80 registers, which would cut the occupancy
// of the other gemv_f16 launches (o_proj, down_proj at 48 registers) if they shared one kernel.
// Host-chosen conditions: warps_per_row == 1, k % 8 == 0, k <= 256 * GEMV_UNROLL.
extern "C" __global__ void __launch_bounds__(256) gemv_f16_rows(const int* __restrict__ state, const float* __restrict__ x,
                                                                const float* __restrict__ norm_w, float eps,
                                                                const __half* __restrict__ W, float* __restrict__ out,
                                                                const float* __restrict__ residual, int n, int k,
                                                                int rows_per_warp, int last_row) {
    const GemvOut o{out, residual, nullptr, nullptr, nullptr, nullptr, 0, 0, 0};
    gemv_rows_impl<EPI_STORE>(state, x, norm_w, eps, W, n, k, rows_per_warp, last_row, o);
}

extern "C" __global__ void __launch_bounds__(256) gemv_f16_swiglu(const int* __restrict__ state, const float* __restrict__ x,
                                                                  const float* __restrict__ norm_w, float eps,
                                                                  const __half* __restrict__ W, float* __restrict__ out,
                                                                  int ffn, int k, int warps_per_row) {
    const GemvOut o{out, nullptr, nullptr, nullptr, nullptr, nullptr, 0, 0, 0};
    gemv_impl<EPI_SWIGLU>(state, x, norm_w, eps, W, 2 * ffn, k, warps_per_row, 0, o);
}

// gemv_f16_swiglu with several units per warp and x in registers (gemv_rows_impl); same host
// conditions as gemv_f16_rows.
extern "C" __global__ void __launch_bounds__(256) gemv_f16_swiglu_rows(const int* __restrict__ state, const float* __restrict__ x,
                                                                       const float* __restrict__ norm_w, float eps,
                                                                       const __half* __restrict__ W, float* __restrict__ out,
                                                                       int ffn, int k, int units_per_warp) {
    const GemvOut o{out, nullptr, nullptr, nullptr, nullptr, nullptr, 0, 0, 0};
    gemv_rows_impl<EPI_SWIGLU>(state, x, norm_w, eps, W, 2 * ffn, k, units_per_warp, 0, o);
}

extern "C" __global__ void __launch_bounds__(256) gemv_f16_rope(const int* __restrict__ state, const float* __restrict__ x,
                                                                const float* __restrict__ norm_w, float eps,
                                                                const __half* __restrict__ W, const float* __restrict__ bias,
                                                                const float* __restrict__ inv_freq, float* __restrict__ q_out,
                                                                float* __restrict__ k_cache, __half* __restrict__ v_cache,
                                                                int n_heads, int n_kv_heads, int head_dim, int k,
                                                                int warps_per_row) {
    const GemvOut o{q_out, nullptr, bias, inv_freq, k_cache, v_cache, n_heads, n_kv_heads, head_dim};
    gemv_impl<EPI_ROPE>(state, x, norm_w, eps, W, (n_heads + 2 * n_kv_heads) * head_dim, k, warps_per_row, 0, o);
}

// ---- prefill GEMM helpers (around cublasGemmEx) ------------------------------------------------

extern "C" __global__ void convert_rows_f16(const int* __restrict__ state,
                                            const float* __restrict__ x,  // [rows, k]
                                            __half* __restrict__ x16,     // [rows, k]
                                            float* __restrict__ scale,    // [rows]
                                            int k) {
    __shared__ float scratch[32];
    const int t = blockIdx.x;
    const int n_tokens = state_n_tokens(state);  // written by the host before the launch: before the wait
    pdl_prologue();
    if (t >= n_tokens) return;
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
    const int t = blockIdx.y;
    const int n_tokens = state_n_tokens(state);  // written by the host before the launch: before the wait
    pdl_prologue();
    if (t >= n_tokens) return;
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
