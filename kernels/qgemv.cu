// Quantized GEMVs, the decode's matrix products on weights in the GGUF's own quantization (the
// canonical layout of quant.cuh / plan/src/quant): nothing is widened in memory; groups of 32
// elements are dequantised in registers and accumulated in f32.
//
//    y[t, j] = sum_i x'[t, i] * W[j, i], x' = x or x * norm_w (the RMS scale inv_t applied to the
//    finished y, as in matmul.cu), then the epilogue of gemv_epilogue.cuh (store [+ residual],
//    SwiGLU, bias + RoPE + KV write) -- the same semantics as the f16 GEMVs of matmul.cu.
//
// kernels: gemv_q_<epi>_<fa>[_<fb>] -- one per epilogue (store, swiglu, rope) and format pair: a
//    weight's parts are in format fa or fb (a single format: fa alone). The pairs compiled are the
//    single formats and the mixes quantized files use (the QGEMV_ENTRIES list below;
//    launch::QGEMV_PAIRS mirrors it); any other mix runs on qgemv_any.cu's general kernels.
// launch:  block 256 = 8 warps; `wpr` warps (1, 2, 4, 8) form a team sharing each row, lane l of
//    warp s taking groups g = 32 s + l, + 32 wpr, ...; a team owns `upw` consecutive units (a
//    row; for SwiGLU/RoPE the row pair the epilogue needs); grid (ceil(units / (8 / wpr * upw)),
//    rows_launched). Dynamic shared memory 4 * k bytes: the block's x row.
// x:       after the PDL wait each block copies x (times the norm weight) into shared memory once,
//    chunk-major (load_x_shared), and sums its squares for the norm (one block reduction); every
//    unit of the block reads x from there: tall matrices (the LM head) take many units per team,
//    so a block reads x once for dozens of rows.
// pipeline: a team walks its units in steps of two rows (two consecutive rows for the store; the
//    unit's row pair otherwise), each lane its groups in order, and requests the next tile's
//    weights before the current tile's arithmetic: two tiles of two rows in flight per lane. The
//    first tile is requested before the PDL wait (weights are constants). The x chunks are read
//    once per tile for both rows.
// formats: a team's units split into runs whose rows stay in one part (one format); each run is
//    specialised at compile time (fa or fb): no run-time format switch inside the loop.
// numerics: f32 accumulation per half-group, scaled after (quant.cuh); vs the CPU twin only the
//    summation order and the norm's late scaling differ (bounds in runtime/src/cuda/check/gemv.rs).
#include "gemv_epilogue.cuh"
#include "quant.cuh"

namespace {

// sum_e w_e * x_e for two rows (r0, r1) of format F sharing the x chunks xc(c) (read once for
// both): the dot of q_dot, twice, with the x loads and the sums of x shared.
template <int F, typename XAt>
QA_DEVICE void q_dot2(const QRaw& r0, const QRaw& r1, XAt xc, float& y0, float& y1) {
    using T = QTraits<F>;
    constexpr float z = (float)T::Z;
    float a0[2] = {0.0f, 0.0f}, a1[2] = {0.0f, 0.0f}, sx[2] = {0.0f, 0.0f};
#pragma unroll
    for (int c = 0; c < 8; ++c) {
        const uint32_t q0 = q_codes<F>(r0, c), q1 = q_codes<F>(r1, c);
        const float4 x = xc(c);
        const int h = c >> 2;  // elements 16..31 are chunks 4..7
        float s0 = a0[h], s1 = a1[h];
        s0 = fmaf(code_to_float(q0, 0, z), x.x, s0);
        s1 = fmaf(code_to_float(q1, 0, z), x.x, s1);
        s0 = fmaf(code_to_float(q0, 1, z), x.y, s0);
        s1 = fmaf(code_to_float(q1, 1, z), x.y, s1);
        s0 = fmaf(code_to_float(q0, 2, z), x.z, s0);
        s1 = fmaf(code_to_float(q1, 2, z), x.z, s1);
        s0 = fmaf(code_to_float(q0, 3, z), x.w, s0);
        s1 = fmaf(code_to_float(q1, 3, z), x.w, s1);
        a0[h] = s0;
        a1[h] = s1;
        if (T::MIN) sx[h] += (x.x + x.y) + (x.z + x.w);
    }
    y0 += q_scaled<F>(r0, a0, sx);
    y1 += q_scaled<F>(r1, a1, sx);
}

// What a block's teams share: the weight's shape, the x row in shared memory (chunk-major),
// the lane's first group and the group stride, the output row r and the norm's scale.
struct QCtx {
    const float4* xs4;  // [8][G]
    int n, k, G, S, g0, gstep, r;
    float inv;
};

// One "step" of a run: two rows (a0: row lr0 of part p0, a1: row lr1 of part p1).
struct StepRows {
    int lr0, lr1;
};

// The rows of step s of a run starting at unit ua: STORE takes units ua + 2s and ua + 2s + 1
// (the second clamped to the run: its result is then dropped); the paired epilogues take the two
// rows of unit ua + s.
template <int EPI>
QA_DEVICE void step_units(int ua, int ub, int s, int head_dim, int n, int& u, int& j0, int& j1) {
    if (EPI == EPI_STORE) {
        u = ua + 2 * s;
        j0 = u;
        j1 = min(u + 1, ub - 1);
    } else {
        u = ua + s;
        unit_rows<EPI>(u, n, head_dim, j0, j1);
    }
}

// Loads group (g0 + it * gstep) of both rows of a step.
template <int F>
QA_DEVICE void load_tile(const QParts& P, const QCtx& c, int p0, int p1, int lr0, int lr1, int it, QRaw& r0, QRaw& r1) {
    const int g = c.g0 + it * c.gstep;
    q_load<F>(P, p0, (size_t)lr0 * c.G + g, (size_t)lr0 * c.S + (g >> 3), r0);
    q_load<F>(P, p1, (size_t)lr1 * c.G + g, (size_t)lr1 * c.S + (g >> 3), r1);
}

// Sums a0/a1 over the team (wpr warps) into lane 0 of its first warp. Teams synchronise on their
// own named barrier (1 + team), so teams may run different numbers of steps.
QA_DEVICE void team_sum(float& a0, float& a1, int wpr, int team, int sub, int lane, float (*red)[GEMV_WARPS]) {
    a0 = warp_sum(a0);
    a1 = warp_sum(a1);
    if (wpr == 1) return;
    const int warp = team * wpr + sub;
    if (lane == 0) {
        red[0][warp] = a0;
        red[1][warp] = a1;
    }
    asm volatile("bar.sync %0, %1;" ::"r"(1 + team), "r"(wpr * 32) : "memory");
    if (sub == 0 && lane == 0) {
        a0 = a1 = 0.0f;
        for (int q = 0; q < wpr; ++q) {
            a0 += red[0][warp + q];
            a1 += red[1][warp + q];
        }
    }
    asm volatile("bar.sync %0, %1;" ::"r"(1 + team), "r"(wpr * 32) : "memory");
}

// Writes the step's results (lane 0 of the team's first warp).
template <int EPI>
QA_DEVICE void step_epilogue(const QCtx& c, const GemvOut& o, const int* state, int u, int j0, int j1, int ub, float a0, float a1) {
    if (EPI == EPI_STORE) {
        EpiIn in{0.0f, 0.0f, 0.0f, 0.0f, 1.0f};
        epi_load_acts<EPI>(o, c.r, c.n, j0, in);
        gemv_epilogue<EPI>(o, state, c.r, c.n, j0, j0, j0, a0 * c.inv, 0.0f, in);
        if (u + 1 < ub) {
            epi_load_acts<EPI>(o, c.r, c.n, j1, in);
            gemv_epilogue<EPI>(o, state, c.r, c.n, j1, j1, j1, a1 * c.inv, 0.0f, in);
        }
    } else {
        EpiIn in{0.0f, 0.0f, 0.0f, 0.0f, 1.0f};
        epi_load_consts<EPI>(o, state, c.r, j0, j1, in);
        gemv_epilogue<EPI>(o, state, c.r, c.n, u, j0, j1, a0 * c.inv, a1 * c.inv, in);
    }
}

// The units [ua, ub) of one team whose rows lie in parts p0 (first row of a step) and p1 (second
// row), both of format F: steps of two rows, each lane's groups in order, the next tile's weights
// requested before the current tile's arithmetic (two tiles in flight per lane). `pre`: tile 0,
// already loaded (before the PDL wait).
template <int F, int EPI>
QA_DEVICE void run_units(const QParts& P, const QCtx& c, const GemvOut& o, const int* state, int ua, int ub, int p0, int p1, bool use_pre,
                         const QRaw& pre0, const QRaw& pre1, int wpr, int team, int sub, int lane, float (*red)[GEMV_WARPS]) {
    constexpr int STEP = EPI == EPI_STORE ? 2 : 1;
    const int nsteps = (ub - ua + STEP - 1) / STEP;
    const int per = c.g0 < c.G ? (c.G - c.g0 + c.gstep - 1) / c.gstep : 0;  // this lane's groups per row
    const int row0_0 = part_row0(P, p0), row0_1 = part_row0(P, p1);
    int u, j0, j1;
    auto rows = [&](int s, int& lr0, int& lr1) {
        step_units<EPI>(ua, ub, s, o.head_dim, c.n, u, j0, j1);
        lr0 = j0 - row0_0;
        lr1 = j1 - row0_1;
    };
    QRaw c0, c1, n0, n1;
    int lr0, lr1;
    if constexpr (F >= QF_Q4_0) {
        if (per > 0) {
            if (use_pre) {
                c0 = pre0;
                c1 = pre1;
            } else {
                rows(0, lr0, lr1);
                load_tile<F>(P, c, p0, p1, lr0, lr1, 0, c0, c1);
            }
        }
    }
    for (int s = 0; s < nsteps; ++s) {
        rows(s, lr0, lr1);
        const int su = u, sj0 = j0, sj1 = j1;
        float a0 = 0.0f, a1 = 0.0f;
        for (int it = 0; it < per; ++it) {
            const int g = c.g0 + it * c.gstep;
            auto xc = [&](int ch) { return c.xs4[ch * c.G + g]; };
            if constexpr (F >= QF_Q4_0) {
                if (it + 1 < per) {
                    load_tile<F>(P, c, p0, p1, lr0, lr1, it + 1, n0, n1);
                } else if (s + 1 < nsteps) {
                    int nl0, nl1;
                    rows(s + 1, nl0, nl1);
                    load_tile<F>(P, c, p0, p1, nl0, nl1, 0, n0, n1);
                }
                q_dot2<F>(c0, c1, xc, a0, a1);
                c0 = n0;
                c1 = n1;
            } else {
                a0 += float_group_dot<F>(pick(P.qs, p0), (size_t)lr0 * c.k + 32 * g, xc);
                a1 += float_group_dot<F>(pick(P.qs, p1), (size_t)lr1 * c.k + 32 * g, xc);
            }
        }
        team_sum(a0, a1, wpr, team, sub, lane, red);
        if (sub == 0 && lane == 0) step_epilogue<EPI>(c, o, state, su, sj0, sj1, ub, a0, a1);
    }
}

// A paired unit whose two rows differ in format (a SwiGLU with gate in FA and up in FB, or the
// reverse): each row on its own, with no pipelining (rare: no file seen so far does this).
template <int F>
QA_DEVICE float row_dot_plain(const QParts& P, const QCtx& c, int p, int lr) {
    float acc = 0.0f;
    for (int g = c.g0; g < c.G; g += c.gstep) {
        auto xc = [&](int ch) { return c.xs4[ch * c.G + g]; };
        if constexpr (F >= QF_Q4_0) {
            QRaw r;
            q_load<F>(P, p, (size_t)lr * c.G + g, (size_t)lr * c.S + (g >> 3), r);
            float unused = 0.0f;
            q_dot2<F>(r, r, xc, acc, unused);
        } else {
            acc += float_group_dot<F>(pick(P.qs, p), (size_t)lr * c.k + 32 * g, xc);
        }
    }
    return acc;
}

template <int EPI, int FA, int FB>
QA_DEVICE void run_units_mixed(const QParts& P, const QCtx& c, const GemvOut& o, const int* state, int ua, int ub, int p0,
                               int p1, int wpr, int team, int sub, int lane, float (*red)[GEMV_WARPS]) {
    const int row0_0 = part_row0(P, p0), row0_1 = part_row0(P, p1);
    const bool a_first = pick(P.fmt, p0) == FA;  // then the second row is FB
    for (int u = ua; u < ub; ++u) {
        int j0, j1;
        unit_rows<EPI>(u, c.n, o.head_dim, j0, j1);
        float a0, a1;
        if (a_first) {
            a0 = row_dot_plain<FA>(P, c, p0, j0 - row0_0);
            a1 = row_dot_plain<FB>(P, c, p1, j1 - row0_1);
        } else {
            a0 = row_dot_plain<FB>(P, c, p0, j0 - row0_0);
            a1 = row_dot_plain<FA>(P, c, p1, j1 - row0_1);
        }
        team_sum(a0, a1, wpr, team, sub, lane, red);
        if (sub == 0 && lane == 0) step_epilogue<EPI>(c, o, state, u, j0, j1, ub, a0, a1);
    }
}

// The run of units starting at ua (< ub) whose step rows stay in one pair of parts: returns its
// end and those parts. STORE steps take consecutive rows (the second row is in the first's part:
// step_units clamps it to the run); paired units end the run where either row changes part.
template <int EPI>
QA_DEVICE int run_bounds(const QParts& P, int ua, int ub, int n, int head_dim, int& p0, int& p1) {
    int j0, j1;
    unit_rows<EPI>(ua, n, head_dim, j0, j1);
    p0 = part_of(P, j0);
    if (EPI == EPI_STORE) {
        p1 = p0;
        return min(ub, pick(P.row_end, p0));
    }
    p1 = part_of(P, j1);
    int u = ua + 1;
    for (; u < ub; ++u) {
        unit_rows<EPI>(u, n, head_dim, j0, j1);
        if (part_of(P, j0) != p0 || part_of(P, j1) != p1) break;
    }
    return u;
}

}  // namespace

template <int EPI, int FA, int FB>
__device__ void gemv_q_impl(const int* __restrict__ state,
                            const float* __restrict__ x,       // [rows, k]
                            const float* __restrict__ norm_w,  // [k] or null
                            float eps, const QParts& P,        // W [n, k], parts in FA or FB
                            int n, int k, int wpr, int upw, int last_row, const GemvOut& o) {
    constexpr bool PAIR = EPI != EPI_STORE;
    extern __shared__ float4 xs4[];  // [8][G]
    __shared__ float red[2][GEMV_WARPS];
    __shared__ float scratch[32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int sub = warp % wpr, team = warp / wpr;
    const int units = PAIR ? n / 2 : n;
    const int ua = (blockIdx.x * (GEMV_WARPS / wpr) + team) * upw;
    const int ub = min(ua + upw, units);
    QCtx c{xs4, n, k, k >> 5, k >> 8, sub * 32 + lane, wpr * 32, 0, 1.0f};

    // Weights are constants: the first tile of the team's first run is requested before the wait.
    QRaw pre0, pre1;
    bool have_pre = false;
    if (ua < ub && c.g0 < c.G) {
        int p0, p1, u, j0, j1;
        const int b = run_bounds<EPI>(P, ua, ub, n, o.head_dim, p0, p1);
        step_units<EPI>(ua, b, 0, o.head_dim, n, u, j0, j1);
        const int f0 = pick(P.fmt, p0), f1 = pick(P.fmt, p1);
        const int lr0 = j0 - part_row0(P, p0), lr1 = j1 - part_row0(P, p1);
        if constexpr (FA >= QF_Q4_0) {
            if (f0 == f1 && f0 == FA) {
                load_tile<FA>(P, c, p0, p1, lr0, lr1, 0, pre0, pre1);
                have_pre = true;
            }
        }
        if constexpr (FB >= QF_Q4_0 && FB != FA) {
            if (f0 == f1 && f0 == FB) {
                load_tile<FB>(P, c, p0, p1, lr0, lr1, 0, pre0, pre1);
                have_pre = true;
            }
        }
    }
    // The run state is written by the host before the launch (common.cuh): read before the wait.
    const int n_tokens = state_n_tokens(state);
    c.r = last_row ? n_tokens - 1 : (int)blockIdx.y;
    pdl_prologue();  // activations (x, residual) are safe to read from here on
    if (c.r >= n_tokens || c.r < 0) return;  // uniform per block: before any barrier
    c.inv = load_x_shared(x, norm_w, eps, c.r, k, xs4, scratch);

    bool first = true;
    for (int a = ua; a < ub;) {
        int p0, p1;
        const int b = run_bounds<EPI>(P, a, ub, n, o.head_dim, p0, p1);
        const int f0 = pick(P.fmt, p0), f1 = pick(P.fmt, p1);
        const bool use_pre = first && have_pre;  // the prefetch was this first run's tile 0
        if (f0 == f1 && f0 == FA) {
            run_units<FA, EPI>(P, c, o, state, a, b, p0, p1, use_pre, pre0, pre1, wpr, team, sub, lane, red);
        } else if (f0 == f1) {
            run_units<FB, EPI>(P, c, o, state, a, b, p0, p1, use_pre, pre0, pre1, wpr, team, sub, lane, red);
        } else {
            run_units_mixed<EPI, FA, FB>(P, c, o, state, a, b, p0, p1, wpr, team, sub, lane, red);
        }
        first = false;
        a = b;
    }
}

// The entry points of one format pair: QGEMV_ENTRIES(FA, FB, suffix).
#define QGEMV_ENTRIES(FA, FB, SFX)                                                                                   \
    extern "C" __global__ void __launch_bounds__(256, 2) gemv_q_store_##SFX(                                            \
        const int* __restrict__ state, const float* __restrict__ x, const float* __restrict__ norm_w, float eps,     \
        const QParts P, float* __restrict__ out, const float* __restrict__ residual, int n, int k, int wpr, int upw,  \
        int last_row) {                                                                                              \
        const GemvOut o{out, residual, nullptr, nullptr, nullptr, nullptr, 0, 0, 0};                                 \
        gemv_q_impl<EPI_STORE, FA, FB>(state, x, norm_w, eps, P, n, k, wpr, upw, last_row, o);                       \
    }                                                                                                                \
    extern "C" __global__ void __launch_bounds__(256, 2) gemv_q_swiglu_##SFX(                                           \
        const int* __restrict__ state, const float* __restrict__ x, const float* __restrict__ norm_w, float eps,     \
        const QParts P, float* __restrict__ out, int ffn, int k, int wpr, int upw) {                                 \
        const GemvOut o{out, nullptr, nullptr, nullptr, nullptr, nullptr, 0, 0, 0};                                  \
        gemv_q_impl<EPI_SWIGLU, FA, FB>(state, x, norm_w, eps, P, 2 * ffn, k, wpr, upw, 0, o);                        \
    }                                                                                                                \
    extern "C" __global__ void __launch_bounds__(256, 2) gemv_q_rope_##SFX(                                             \
        const int* __restrict__ state, const float* __restrict__ x, const float* __restrict__ norm_w, float eps,     \
        const QParts P, const float* __restrict__ bias, const float* __restrict__ inv_freq,                          \
        float* __restrict__ q_out, float* __restrict__ k_cache, __half* __restrict__ v_cache, int n_heads,          \
        int n_kv_heads, int head_dim, int k, int wpr, int upw) {                                                     \
        const GemvOut o{q_out, nullptr, bias, inv_freq, k_cache, v_cache, n_heads, n_kv_heads, head_dim};             \
        gemv_q_impl<EPI_ROPE, FA, FB>(state, x, norm_w, eps, P, (n_heads + 2 * n_kv_heads) * head_dim, k, wpr, upw,  \
                                      0, o);                                                                         \
    }

// Keep in step with launch::QGEMV_PAIRS (a test compares the two lists).
QGEMV_ENTRIES(QF_F32, QF_F32, f32)
QGEMV_ENTRIES(QF_F16, QF_F16, f16)
QGEMV_ENTRIES(QF_BF16, QF_BF16, bf16)
QGEMV_ENTRIES(QF_Q4_0, QF_Q4_0, q4_0)
QGEMV_ENTRIES(QF_Q4_1, QF_Q4_1, q4_1)
QGEMV_ENTRIES(QF_Q5_0, QF_Q5_0, q5_0)
QGEMV_ENTRIES(QF_Q5_1, QF_Q5_1, q5_1)
QGEMV_ENTRIES(QF_Q8_0, QF_Q8_0, q8_0)
QGEMV_ENTRIES(QF_Q2_K, QF_Q2_K, q2_k)
QGEMV_ENTRIES(QF_Q3_K, QF_Q3_K, q3_k)
QGEMV_ENTRIES(QF_Q4_K, QF_Q4_K, q4_k)
QGEMV_ENTRIES(QF_Q5_K, QF_Q5_K, q5_k)
QGEMV_ENTRIES(QF_Q6_K, QF_Q6_K, q6_k)
QGEMV_ENTRIES(QF_Q4_0, QF_Q8_0, q4_0_q8_0)
QGEMV_ENTRIES(QF_Q4_1, QF_Q8_0, q4_1_q8_0)
QGEMV_ENTRIES(QF_Q5_0, QF_Q8_0, q5_0_q8_0)
QGEMV_ENTRIES(QF_Q5_1, QF_Q8_0, q5_1_q8_0)
QGEMV_ENTRIES(QF_Q3_K, QF_Q6_K, q3_k_q6_k)
QGEMV_ENTRIES(QF_Q4_K, QF_Q6_K, q4_k_q6_k)
QGEMV_ENTRIES(QF_Q5_K, QF_Q6_K, q5_k_q6_k)
QGEMV_ENTRIES(QF_Q3_K, QF_Q4_K, q3_k_q4_k)
QGEMV_ENTRIES(QF_Q3_K, QF_Q5_K, q3_k_q5_k)
QGEMV_ENTRIES(QF_Q2_K, QF_Q3_K, q2_k_q3_k)
#undef QGEMV_ENTRIES
