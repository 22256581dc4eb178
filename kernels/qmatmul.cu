// Matrix products and lookups on weights in the GGUF's own quantization (the canonical layout of
// quant.cuh / runtime/src/quant): nothing is widened in memory; groups of 32 elements are
// dequantised in registers and accumulated in f32.
//
// 1. gemv_q, gemv_q_swiglu, gemv_q_rope -- the decode GEMVs (and prefill rows without cuBLAS):
//    y[t, j] = sum_i x'[t, i] * W[j, i], x' = x or x * norm_w (the RMS scale inv_t applied to the
//    finished y, as in matmul.cu), then the epilogue of gemv_epilogue.cuh (store [+ residual],
//    SwiGLU, bias + RoPE + KV write) -- the same semantics as the f16 GEMVs of matmul.cu.
//    launch:  block 256 = 8 warps; `wpr` warps (1, 2, 4, 8) share one unit (a row, or the row pair
//             of SwiGLU/RoPE), each lane taking groups g = sub * 32 + lane (+ wpr * 32 ...); a team
//             of wpr warps computes `upw` consecutive units; grid (ceil(units / (8 / wpr * upw)),
//             rows_launched). Dynamic shared memory 4 * k bytes: the block's x row.
//    x in shared memory: after the PDL wait each block copies x (times the norm weight) into
//             shared memory once, chunk-major (chunk c of group g at xs4[c * G + g]) so that the
//             lanes of a warp, which read consecutive groups, read consecutive 16-byte words (no
//             bank conflicts); the norm's sum of squares is one block reduction. Every unit of the
//             block then reads x from there: tall matrices (the LM head) take many units per warp.
//    PDL:     the first group of the first unit is loaded before the wait (weights are constants).
//    formats: the unit's part format is a run-time, warp-uniform switch (QFMT_DISPATCH) into code
//             specialised per format; mixed-format weights (Q5_0 q|k with a Q8_0 v) need no
//             special case. A SwiGLU pair whose gate and up differ in format runs its two rows one
//             after the other.
//    numerics: f32 accumulation per half-group, scaled after (quant.cuh); vs the CPU twin only the
//             summation order and the norm's late scaling differ (bounds in check.rs).
//
// 2. dequant_q_f16 -- rows [row_begin, row_begin + rows) of a weight to f16 [rows, k] in scratch,
//    for the prefill GEMM (cuBLAS on f16 tensor cores); one thread per group; bit-exact values
//    rounded once to f16 (as the f16 plan stores them).
// 3. embed_q -- out[t, :] = W[tokens[t], :] in f32, one thread per group; bit-exact with the CPU.
#include "gemv_epilogue.cuh"
#include "quant.cuh"

namespace {

QA_DEVICE float4 mul4q(const float4 a, const float4 b) { return make_float4(a.x * b.x, a.y * b.y, a.z * b.z, a.w * b.w); }

// sum over the group of a float-format row (base: the part's data; e0: first element).
template <int F, typename XAt>
QA_DEVICE float float_group_dot(const uint8_t* base, size_t e0, XAt xc) {
    float acc = 0.0f;
#pragma unroll
    for (int c = 0; c < 8; ++c) {
        const float4 x = xc(c);
        acc = fmaf(float_at<F>(base, e0 + 4 * c + 0), x.x, acc);
        acc = fmaf(float_at<F>(base, e0 + 4 * c + 1), x.y, acc);
        acc = fmaf(float_at<F>(base, e0 + 4 * c + 2), x.z, acc);
        acc = fmaf(float_at<F>(base, e0 + 4 * c + 3), x.w, acc);
    }
    return acc;
}

// Loads the group g of local rows lr0 (and lr1 when TWO) of parts p0 / p1 (a quantized format).
template <int F, bool TWO>
QA_DEVICE void q_load_pair(const QParts& P, int p0, int lr0, int p1, int lr1, int G, int S, int g, QRaw& r0, QRaw& r1) {
    q_load<F>(P, p0, (size_t)lr0 * G + g, (size_t)lr0 * S + (g >> 3), r0);
    if (TWO) q_load<F>(P, p1, (size_t)lr1 * G + g, (size_t)lr1 * S + (g >> 3), r1);
}

// This lane's share of the dot products of one unit: rows lr0 of part p0 (and lr1 of p1 when TWO,
// same format F). `pre`: the first group's raw bits, already loaded (or null).
template <int F, bool TWO>
QA_DEVICE void unit_dot(const QParts& P, int p0, int lr0, int p1, int lr1, int k, const float4* xs4, int g0, int gstep,
                        bool use_pre, const QRaw& pre0, const QRaw& pre1, float& a0, float& a1) {
    const int G = k >> 5, S = k >> 8;
    for (int g = g0; g < G; g += gstep) {
        auto xc = [&](int c) { return xs4[c * G + g]; };
        if constexpr (F < QF_Q4_0) {
            a0 += float_group_dot<F>(pick(P.qs, p0), (size_t)lr0 * k + 32 * g, xc);
            if (TWO) a1 += float_group_dot<F>(pick(P.qs, p1), (size_t)lr1 * k + 32 * g, xc);
        } else {
            QRaw r0, r1;
            if (g == g0 && use_pre) {
                r0 = pre0;
                if (TWO) r1 = pre1;
            } else {
                q_load_pair<F, TWO>(P, p0, lr0, p1, lr1, G, S, g, r0, r1);
            }
            a0 += q_dot<F>(r0, xc);
            if (TWO) a1 += q_dot<F>(r1, xc);
        }
    }
}

// The unit's rows, parts and local rows.
struct UnitRows {
    int j0, j1, p0, p1, lr0, lr1;
};

template <int EPI>
QA_DEVICE UnitRows unit_parts(const QParts& P, int unit, int n, int head_dim) {
    UnitRows u;
    unit_rows<EPI>(unit, n, head_dim, u.j0, u.j1);
    u.p0 = part_of(P, u.j0);
    u.p1 = part_of(P, u.j1);
    u.lr0 = u.j0 - part_row0(P, u.p0);
    u.lr1 = u.j1 - part_row0(P, u.p1);
    return u;
}

}  // namespace

template <int EPI>
__device__ void gemv_q_impl(const int* __restrict__ state,
                            const float* __restrict__ x,       // [rows, k]
                            const float* __restrict__ norm_w,  // [k] or null
                            float eps, const QParts& P,        // W [n, k]
                            int n, int k, int wpr, int upw, int last_row, const GemvOut& o) {
    constexpr bool PAIR = EPI != EPI_STORE;
    extern __shared__ float4 xs4[];  // [8][G]
    __shared__ float red[2][GEMV_WARPS];
    __shared__ float scratch[32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int sub = warp % wpr, team = warp / wpr;
    const int G = k >> 5;
    const int units = PAIR ? n / 2 : n;
    const int unit0 = (blockIdx.x * (GEMV_WARPS / wpr) + team) * upw;
    const int g0 = sub * 32 + lane, gstep = wpr * 32;

    // Weights are constants: the first group of the first unit is requested before the wait.
    QRaw pre0, pre1;
    bool have_pre = false;
    if (unit0 < units && g0 < G) {
        const UnitRows u = unit_parts<EPI>(P, unit0, n, o.head_dim);
        const int f = pick(P.fmt, u.p0);
        if (f >= QF_Q4_0 && (!PAIR || pick(P.fmt, u.p1) == f)) {
            const int S = k >> 8;
#define QA_PREFETCH(F_)                                                                     \
    if constexpr (F_ >= QF_Q4_0) q_load_pair<F_, PAIR>(P, u.p0, u.lr0, u.p1, u.lr1, G, S, g0, pre0, pre1);
            QFMT_DISPATCH(f, QA_PREFETCH)
#undef QA_PREFETCH
            have_pre = true;
        }
    }
    pdl_prologue();  // activations (x, residual) are safe to read from here on
    const int n_tokens = state_n_tokens(state);
    const int r = last_row ? n_tokens - 1 : (int)blockIdx.y;
    if (r >= n_tokens || r < 0) return;  // uniform per block: before any barrier

    // x (times the norm weight) into shared memory, read coalesced (i = 8 g + c).
    const bool norm = norm_w != nullptr;
    const float4* x4 = reinterpret_cast<const float4*>(x + (size_t)r * k);
    const float4* w4 = reinterpret_cast<const float4*>(norm_w);
    float ss = 0.0f;
    for (int i = threadIdx.x; i < 8 * G; i += blockDim.x) {
        float4 v = __ldg(x4 + i);
        if (norm) {
            ss = fmaf(v.x, v.x, fmaf(v.y, v.y, fmaf(v.z, v.z, fmaf(v.w, v.w, ss))));
            v = mul4q(v, __ldg(w4 + i));
        }
        xs4[(i & 7) * G + (i >> 3)] = v;
    }
    if (norm) {
        ss = block_sum(ss, scratch);  // synchronises: xs4 is complete
    } else {
        __syncthreads();
    }
    // The norm's scale, with rms_norm_impl's arithmetic (norm.cu).
    const float inv = norm ? 1.0f / sqrtf(ss / (float)k + eps) : 1.0f;

    for (int i = 0; i < upw; ++i) {
        const int unit = unit0 + i;
        const bool valid = unit < units;
        float a0 = 0.0f, a1 = 0.0f;
        UnitRows u{0, 0, 0, 0, 0, 0};
        if (valid) {
            u = unit_parts<EPI>(P, unit, n, o.head_dim);
            const bool use_pre = i == 0 && have_pre;
            const int f0 = pick(P.fmt, u.p0), f1 = pick(P.fmt, u.p1);
            if (!PAIR || f0 == f1) {
#define QA_UNIT(F_) unit_dot<F_, PAIR>(P, u.p0, u.lr0, u.p1, u.lr1, k, xs4, g0, gstep, use_pre, pre0, pre1, a0, a1);
                QFMT_DISPATCH(f0, QA_UNIT)
#undef QA_UNIT
            } else {
                float unused = 0.0f;
#define QA_ROW0(F_) unit_dot<F_, false>(P, u.p0, u.lr0, u.p0, u.lr0, k, xs4, g0, gstep, false, pre0, pre1, a0, unused);
#define QA_ROW1(F_) unit_dot<F_, false>(P, u.p1, u.lr1, u.p1, u.lr1, k, xs4, g0, gstep, false, pre0, pre1, a1, unused);
                QFMT_DISPATCH(f0, QA_ROW0)
                QFMT_DISPATCH(f1, QA_ROW1)
#undef QA_ROW0
#undef QA_ROW1
            }
        }
        a0 = warp_sum(a0);
        if (PAIR) a1 = warp_sum(a1);
        if (wpr > 1) {
            // Uniform across the block: every team runs upw iterations.
            if (lane == 0) {
                red[0][warp] = a0;
                red[1][warp] = a1;
            }
            __syncthreads();
            a0 = a1 = 0.0f;
            if (sub == 0 && lane == 0) {
                for (int q = 0; q < wpr; ++q) {
                    a0 += red[0][warp + q];
                    a1 += red[1][warp + q];
                }
            }
            __syncthreads();
        }
        if (valid && sub == 0 && lane == 0) {
            EpiIn in{0.0f, 0.0f, 0.0f, 0.0f, 1.0f};
            epi_load_consts<EPI>(o, state, r, u.j0, u.j1, in);
            epi_load_acts<EPI>(o, r, n, u.j0, in);
            gemv_epilogue<EPI>(o, state, r, n, unit, u.j0, u.j1, a0 * inv, a1 * inv, in);
        }
    }
}

extern "C" __global__ void __launch_bounds__(256) gemv_q(const int* __restrict__ state, const float* __restrict__ x,
                                                         const float* __restrict__ norm_w, float eps, const QParts P,
                                                         float* __restrict__ out, const float* __restrict__ residual,
                                                         int n, int k, int wpr, int upw, int last_row) {
    const GemvOut o{out, residual, nullptr, nullptr, nullptr, nullptr, 0, 0, 0};
    gemv_q_impl<EPI_STORE>(state, x, norm_w, eps, P, n, k, wpr, upw, last_row, o);
}

extern "C" __global__ void __launch_bounds__(256) gemv_q_swiglu(const int* __restrict__ state, const float* __restrict__ x,
                                                                const float* __restrict__ norm_w, float eps, const QParts P,
                                                                float* __restrict__ out, int ffn, int k, int wpr, int upw) {
    const GemvOut o{out, nullptr, nullptr, nullptr, nullptr, nullptr, 0, 0, 0};
    gemv_q_impl<EPI_SWIGLU>(state, x, norm_w, eps, P, 2 * ffn, k, wpr, upw, 0, o);
}

extern "C" __global__ void __launch_bounds__(256) gemv_q_rope(const int* __restrict__ state, const float* __restrict__ x,
                                                              const float* __restrict__ norm_w, float eps, const QParts P,
                                                              const float* __restrict__ bias, const float* __restrict__ inv_freq,
                                                              float* __restrict__ q_out, __half* __restrict__ k_cache,
                                                              __half* __restrict__ v_cache, int n_heads, int n_kv_heads,
                                                              int head_dim, int k, int wpr, int upw) {
    const GemvOut o{q_out, nullptr, bias, inv_freq, k_cache, v_cache, n_heads, n_kv_heads, head_dim};
    gemv_q_impl<EPI_ROPE>(state, x, norm_w, eps, P, (n_heads + 2 * n_kv_heads) * head_dim, k, wpr, upw, 0, o);
}

// The 32 values of group g of row j (absolute) into v.
QA_DEVICE void q_group_values(const QParts& P, int j, int g, int k, float v[32]) {
    const int p = part_of(P, j), lr = j - part_row0(P, p);
    const int G = k >> 5;
#define QA_VALUES(F_)                                                                        \
    if constexpr (F_ < QF_Q4_0) {                                                            \
        _Pragma("unroll") for (int e = 0; e < 32; ++e) v[e] = float_at<F_>(pick(P.qs, p), (size_t)lr * k + 32 * g + e); \
    } else {                                                                                 \
        QRaw raw;                                                                            \
        q_load<F_>(P, p, (size_t)lr * G + g, (size_t)lr * (k >> 8) + (g >> 3), raw);          \
        q_dequant<F_>(raw, v);                                                               \
    }
    QFMT_DISPATCH(pick(P.fmt, p), QA_VALUES)
#undef QA_VALUES
}

// out [rows, k] f16 = rows row_begin.. of W; grid ceil(rows * k / 32 / 256), block 256.
extern "C" __global__ void __launch_bounds__(256) dequant_q_f16(const QParts P, int row_begin, int rows, int k,
                                                                __half* __restrict__ out) {
    pdl_prologue();  // out is scratch that the previous GEMM may still read
    const int G = k >> 5;
    const long long gid = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (gid >= (long long)rows * G) return;
    const int lr = (int)(gid / G), g = (int)(gid - (long long)lr * G);
    float v[32];
    q_group_values(P, row_begin + lr, g, k, v);
    uint4* o = reinterpret_cast<uint4*>(out + (size_t)lr * k + 32 * g);
#pragma unroll
    for (int c = 0; c < 4; ++c) {
        __half2 h[4];
#pragma unroll
        for (int i = 0; i < 4; ++i) h[i] = __floats2half2_rn(v[8 * c + 2 * i], v[8 * c + 2 * i + 1]);
        o[c] = *reinterpret_cast<uint4*>(h);
    }
}

// out[t, :] = W[tokens[t], :] (f32); grid (ceil(G / 256), rows), block 256. An id outside
// 0..vocab (a runtime bug: ids are checked on the host) writes zeros.
extern "C" __global__ void __launch_bounds__(256) embed_q(const int* __restrict__ state, const int* __restrict__ tokens,
                                                          const QParts P, float* __restrict__ out, int hidden, int vocab) {
    pdl_prologue();
    const int t = blockIdx.y;
    if (t >= state_n_tokens(state)) return;
    const int g = blockIdx.x * blockDim.x + threadIdx.x;
    if (g >= (hidden >> 5)) return;
    const int id = tokens[t];
    float v[32];
    if (id >= 0 && id < vocab) {
        q_group_values(P, id, g, hidden, v);
    } else {
        for (int e = 0; e < 32; ++e) v[e] = 0.0f;
    }
    float4* o = reinterpret_cast<float4*>(out + (size_t)t * hidden + 32 * g);
#pragma unroll
    for (int c = 0; c < 8; ++c) o[c] = make_float4(v[4 * c], v[4 * c + 1], v[4 * c + 2], v[4 * c + 3]);
}
