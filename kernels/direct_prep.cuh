// x's side of the direct GEMVs (kernels/q8_direct.cu, kernels/q5_direct.cu), which load the weight
// codes straight into the MMA's A registers: x's row as three digit planes in element order, and
// per 64-element span the weights of each lane's two C columns. A span's MMA keeps two groups
// apart in B's columns: n < 3 is digit n of the span's first group, 3 <= n < 6 digit n - 3 of
// its second, 6 and 7 are zero; lane tq of a quad holds C columns 2 tq and 2 tq + 1.
#pragma once

#include "attn_fold.cuh"
#include "int8_mma.cuh"

constexpr int DP_THREADS = GEMV_WARPS * 32;  // threads of a direct GEMV block
constexpr int DP_SPAN = 64;                  // elements per span: two groups

// The weight of C column c (< 8) of a span whose two groups have digit scales s_first and
// s_second: that group's scale times its digit's weight.
QA_DEVICE float d8_column_weight(float s_first, float s_second, int c) {
    if (c >= 6) return 0.0f;
    const int d = c % 3;
    const float digit = d == 0 ? 1.0f : (d == 1 ? DIGIT_W1 : DIGIT_W2);
    return (c < 3 ? s_first : s_second) * digit;
}

// The zero-point term of C column c (< 8) of a span whose groups' sums of x' are sum_first and
// sum_second: -zero * that sum for a digit-0 column, else 0 (each group's term is added once, by
// the lane holding its digit 0).
QA_DEVICE float d8_column_zero(float sum_first, float sum_second, int c, float zero) {
    return c < 6 && c % 3 == 0 ? -zero * (c < 3 ? sum_first : sum_second) : 0.0f;
}

// Row r of x (times norm_w) as digit planes xd (3 x k bytes, element order) and the per-lane
// column weights xw (per span, float2 per lane tq). ZERO: also the zero-point terms xz (per span,
// float2 per lane tq, laid out as xw: d8_column_zero), so that a format whose codes carry an
// offset (Q5_0: q - 16) adds it with one FMA per column. FOLD with fold_active > 1 (a row whose
// attention ran in several splits; attn_fold.cuh): x's elements are the merge of the attention's
// partials, `fold`'s, instead of x's. Every thread calls it (one barrier). Returns the inverse RMS
// (1 without a norm). k is a whole number of spans (the direct kernels' hosts check).
// The tables are written in the same pass as the digits: a span's two groups are the slots 2m and
// 2m + 1, eight lanes apart in one warp, so a shuffle brings the second group's scale and sum to
// the first's lanes 0-3, which write lane tq's entries. (They were a second pass over group
// tables in shared memory, behind a second barrier on every direct GEMV's path after its PDL
// wait: experiments/LOG.md, 42nd session.)
template <bool ZERO, bool FOLD = false>
QA_DEVICE float d8_prep(const float* __restrict__ x, const float* __restrict__ norm_w, float eps, int r, int k,
                        uint8_t* xd, float2* xw, float2* xz, float zero, float* scratch,
                        const AttnFold* fold = nullptr, int fold_active = 1) {
    const int G = k >> 5, part = threadIdx.x & 7, slot = threadIdx.x >> 3;
    const float4* xr = reinterpret_cast<const float4*>(x + (size_t)r * k);
    const float4* nw = reinterpret_cast<const float4*>(norm_w);
    float ss = 0.0f;
    for (int base = 0; base < G; base += DP_THREADS / 8) {  // block-uniform: the shuffles below
        const int g = base + slot;                          // base is even: g's parity is slot's
        float4 v = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        if (g < G) {
            if (FOLD && fold_active > 1) {
                v = attn_fold_x4(*fold, r, 32 * g + 4 * part, fold_active);
            } else {
                v = __ldg(xr + 8 * g + part);
            }
        }
        if (nw != nullptr && g < G) {
            const float4 m = __ldg(nw + 8 * g + part);
            ss = fmaf(v.x, v.x, fmaf(v.y, v.y, fmaf(v.z, v.z, fmaf(v.w, v.w, ss))));
            v = make_float4(v.x * m.x, v.y * m.y, v.z * m.z, v.w * m.w);
        }
        float amax = fmaxf(fmaxf(fabsf(v.x), fabsf(v.y)), fmaxf(fabsf(v.z), fabsf(v.w)));
#pragma unroll
        for (int m = 1; m < 8; m <<= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, m));
        float sum = 0.0f;
        if constexpr (ZERO) {
            sum = (v.x + v.y) + (v.z + v.w);
#pragma unroll
            for (int m = 1; m < 8; m <<= 1) sum += __shfl_xor_sync(0xffffffffu, sum, m);
        }
        float s, inv;
        digit_scale(amax, s, inv);  // past G: amax 0, so s = inv = 0
        const float s_next = __shfl_xor_sync(0xffffffffu, s, 8);  // the other group of the span
        const float sum_next = ZERO ? __shfl_xor_sync(0xffffffffu, sum, 8) : 0.0f;
        if (g >= G) continue;
        uint32_t dw[3];
        pack_digits4(v, inv, dw);
#pragma unroll
        for (int d = 0; d < 3; ++d) *reinterpret_cast<uint32_t*>(xd + (size_t)d * k + 32 * g + 4 * part) = dw[d];
        // Lane tq's C columns c = 2 tq, 2 tq + 1 are digit c % 3 of the span's group c / 3 (c < 6).
        if ((slot & 1) == 0 && part < 4 && g + 1 < G) {
            const int e = 4 * (g >> 1) + part, c = 2 * part;
            xw[e] = make_float2(d8_column_weight(s, s_next, c), d8_column_weight(s, s_next, c + 1));
            if constexpr (ZERO) {
                xz[e] = make_float2(d8_column_zero(sum, sum_next, c, zero), d8_column_zero(sum, sum_next, c + 1, zero));
            }
        }
    }
    ss = warp_sum(ss);
    if ((threadIdx.x & 31) == 0) scratch[threadIdx.x >> 5] = ss;
    __syncthreads();  // xd, xw (and xz) and scratch are complete
    if (norm_w == nullptr) return 1.0f;
    float total = 0.0f;
#pragma unroll
    for (int w = 0; w < GEMV_WARPS; ++w) total += scratch[w];
    return 1.0f / sqrtf(total / (float)k + eps);
}

QA_DEVICE float half_at(uint32_t word, int shift) {
    return __half2float(__ushort_as_half((unsigned short)((word >> shift) & 0xFFFFu)));
}
