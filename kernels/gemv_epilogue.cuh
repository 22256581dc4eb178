// The GEMV epilogues shared by the f16 GEMVs (matmul.cu) and the quantized GEMVs (qmatmul.cu):
// what each epilogue does with a finished product row y of one "unit" (a row of W, or the row pair
// an epilogue needs at once), and the unit -> rows mapping. See matmul.cu's header for the
// semantics (plain store with optional residual, SwiGLU on [gate | up], bias + RoPE + KV write).
#pragma once

#include "common.cuh"

// GEMV_WARPS (warps per block of every GEMV): generated_constants.cuh.

enum GemvEpilogue { EPI_STORE = 0, EPI_SWIGLU = 1, EPI_ROPE = 2 };

// What the epilogues need besides y (unused fields are null / 0 for other epilogues).
struct GemvOut {
    float* out;             // STORE [rows, n]; SWIGLU [rows, n/2]; ROPE: q_out [rows, H*d]
    const float* residual;  // STORE: [rows, n] or null
    const float* bias;      // ROPE: [n], or null (no bias: 0.0f is added, like an all-zero bias)
    const float* inv_freq;  // ROPE: [d/2]
    float* k_cache;         // ROPE: [max_seq, Hkv, d] (f32)
    __half* v_cache;        // ROPE: [max_seq, Hkv, d] (f16)
    int n_heads, n_kv_heads, head_dim;
};

// The unit's rows of W: j0, and j1 for the paired epilogues (gate i with up i; RoPE pair i, i + d/2).
template <int EPI>
QA_DEVICE void unit_rows(int unit, int n, int head_dim, int& j0, int& j1) {
    j0 = j1 = unit;
    if (EPI == EPI_SWIGLU) j1 = unit + n / 2;
    if (EPI == EPI_ROPE) {
        const int half = head_dim / 2, head = unit / half;
        j0 = head * head_dim + (unit - head * half);
        j1 = j0 + half;
    }
}

// What an epilogue reads besides the products, fetched before it runs so that the loads are off
// the kernel's critical path: the residual element (store), the bias pair and the sine and cosine
// of the pair's angle (RoPE).
struct EpiIn {
    float res, b0, b1, sn, cs;
};

// The constants and run-state parts of EpiIn (readable before the PDL wait: common.cuh).
template <int EPI>
QA_DEVICE void epi_load_consts(const GemvOut& o, const int* state, int r, int j0, int j1, EpiIn& in) {
    if (EPI == EPI_ROPE) {
        const int d = o.head_dim, head = j0 / d;
        // No bias (null): 0.0f. A uniform branch on a kernel argument, once per unit and before the
        // PDL wait, off the product's path (ptxas: the tensor-core RoPE GEMVs keep their registers
        // and no spills; six qgemv.cu fallbacks at the 128-register cap spill 4 more bytes).
        in.b0 = o.bias != nullptr ? o.bias[j0] : 0.0f;
        in.b1 = o.bias != nullptr ? o.bias[j1] : 0.0f;
        in.sn = 0.0f;
        in.cs = 1.0f;
        if (head < o.n_heads + o.n_kv_heads) rope_sincos(state_pos(state) + r, j0 - head * d, o.inv_freq, &in.sn, &in.cs);
    }
}

// The activation part of EpiIn (after the PDL wait).
template <int EPI>
QA_DEVICE void epi_load_acts(const GemvOut& o, int r, int n, int j0, EpiIn& in) {
    if (EPI == EPI_STORE && o.residual != nullptr) in.res = o.residual[(size_t)r * n + j0];
}

// Writes one unit's result for token row r from its finished products y0 (row j0) and y1 (row j1).
template <int EPI>
QA_DEVICE void gemv_epilogue(const GemvOut& o, const int* state, int r, int n, int unit, int j0, int j1, float y0, float y1,
                             const EpiIn& in) {
    if (EPI == EPI_STORE) {
        o.out[(size_t)r * n + j0] = o.residual != nullptr ? y0 + in.res : y0;
    } else if (EPI == EPI_SWIGLU) {
        o.out[(size_t)r * (n / 2) + unit] = silu(y0) * y1;
    } else {
        // bias_rope_kv_write (rope.cu) on the pair (j0, j1 = j0 + d/2).
        const int d = o.head_dim, half = d / 2;
        const int ql = o.n_heads * d, kl = o.n_kv_heads * d;
        const int head = j0 / d, i = j0 - head * d;
        const int p = state_pos(state) + r;
        const float a = y0 + in.b0, b = y1 + in.b1;
        if (head < o.n_heads + o.n_kv_heads) {
            rope_store_rotated(a, b, in.sn, in.cs, head, i, o.out + (size_t)r * ql, o.k_cache + (size_t)p * kl, o.n_heads, d);
        } else {
            __half* vc = o.v_cache + (size_t)p * kl + (j0 - ql - kl);
            vc[0] = __float2half_rn(a);
            vc[half] = __float2half_rn(b);
        }
    }
}

