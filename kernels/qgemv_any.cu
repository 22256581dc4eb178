// The quantized GEMVs for any mix of formats (gemv_qany, gemv_qany_swiglu, gemv_qany_rope): the
// general fallback of qgemv.cu for weights whose parts mix formats that qgemv.cu has no kernel
// for (a third format, or an unusual pair). Same semantics, launch shape and shared-memory x row
// as qgemv.cu; the format of each unit is a run-time switch over every format (QFMT_DISPATCH), one
// unit at a time with no pipelining -- correct everywhere, about half as fast.
#include "gemv_epilogue.cuh"
#include "quant.cuh"

namespace {

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
__device__ void gemv_qany_impl(const int* __restrict__ state,
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
    // The run state is written by the host before the launch (common.cuh): read before the wait.
    const int n_tokens = state_n_tokens(state);
    const int r = last_row ? n_tokens - 1 : (int)blockIdx.y;
    pdl_prologue();  // activations (x, residual) are safe to read from here on
    if (r >= n_tokens || r < 0) return;  // uniform per block: before any barrier

    const float inv = load_x_shared(x, norm_w, eps, r, k, xs4, scratch);

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

extern "C" __global__ void __launch_bounds__(256) gemv_qany(const int* __restrict__ state, const float* __restrict__ x,
                                                         const float* __restrict__ norm_w, float eps, const QParts P,
                                                         float* __restrict__ out, const float* __restrict__ residual,
                                                         int n, int k, int wpr, int upw, int last_row) {
    const GemvOut o{out, residual, nullptr, nullptr, nullptr, nullptr, 0, 0, 0};
    gemv_qany_impl<EPI_STORE>(state, x, norm_w, eps, P, n, k, wpr, upw, last_row, o);
}

extern "C" __global__ void __launch_bounds__(256) gemv_qany_swiglu(const int* __restrict__ state, const float* __restrict__ x,
                                                                const float* __restrict__ norm_w, float eps, const QParts P,
                                                                float* __restrict__ out, int ffn, int k, int wpr, int upw) {
    const GemvOut o{out, nullptr, nullptr, nullptr, nullptr, nullptr, 0, 0, 0};
    gemv_qany_impl<EPI_SWIGLU>(state, x, norm_w, eps, P, 2 * ffn, k, wpr, upw, 0, o);
}

extern "C" __global__ void __launch_bounds__(256) gemv_qany_rope(const int* __restrict__ state, const float* __restrict__ x,
                                                              const float* __restrict__ norm_w, float eps, const QParts P,
                                                              const float* __restrict__ bias, const float* __restrict__ inv_freq,
                                                              float* __restrict__ q_out, float* __restrict__ k_cache,
                                                              __half* __restrict__ v_cache, int n_heads, int n_kv_heads,
                                                              int head_dim, int k, int wpr, int upw) {
    const GemvOut o{q_out, nullptr, bias, inv_freq, k_cache, v_cache, n_heads, n_kv_heads, head_dim};
    gemv_qany_impl<EPI_ROPE>(state, x, norm_w, eps, P, (n_heads + 2 * n_kv_heads) * head_dim, k, wpr, upw, 0, o);
}

