// The attention's split merge, folded into the x load of the GEMV after it (o_proj).
//
// Why. A decode context longer than min_chunk keys runs in several splits (attention.cu); the
// last block of each (kv head, head group) merges them after a fence and an atomic ticket, then
// writes out, and o_proj reads out after its PDL wait: a ticket round trip, the (m, l) pairs',
// the partials' and o_proj's read of out, all on the step's path (experiments/LOG.md: without the
// merge a 0.5B step at 128-1,024 keys is ~47 us shorter). Folded, the split blocks of a row of at
// most fold_max active splits only write their partials (attention.cu) and o_proj reads them --
// pairs and partials requested together, ATTN_FOLD_BATCH splits at a time -- where it read out.
// Every o_proj block merges the whole row, so longer rows (more batches) keep the attention's
// merge.
//
//   x[r, h*D + i] = sum_s exp(m_s - M) o_s[i] / sum_s exp(m_s - M) l_s,  M = max_s m_s
//
// over the active splits s of row r (the same count attention.cu derives: attn_chunk in
// common.cuh); with one active split attention.cu wrote out itself (normalised), so x is read as
// before. Layouts as in attention.cu: part_o f32 [rows, H, n_splits, D], part_ml f32 [rows, H,
// n_splits, 2].
#pragma once

#include "common.cuh"

// Where a folded GEMV finds the attention's partials (a kernel argument, passed by value).
struct AttnFold {
    const float* part_o;
    const float* part_ml;
    int n_heads, head_dim, n_splits, min_chunk;
    int fold_max;  // rows of more active splits were merged by the attention
};

// The splits whose partials row r's x is to be merged from: the attention's active splits, or 1
// where the attention wrote out itself (one split, or more than fold_max).
QA_DEVICE int attn_fold_active(const int* state, const AttnFold& f, int r) {
    const int len = state_pos(state) + r + 1;
    const int chunk = attn_chunk(len, f.n_splits, f.min_chunk);
    const int active = (len + chunk - 1) / chunk;
    return active <= f.fold_max ? active : 1;
}

// Elements e0 .. e0 + 3 (e0 % 4 == 0, within one head) of row r's merged attention output, over
// `active` (> 1) splits. Up to ATTN_FOLD_BATCH splits' pairs and partials are requested at once,
// merged online (rescaled to the running maximum), so a context of <= ATTN_FOLD_BATCH splits
// costs one L2 round trip (4, not 8: with 8 the batch's registers and the GEMV's weights in flight
// exceed the 128 a thread has at two blocks per SM, and a spilled weight waits for its load).
// Loads bypass L1 (__ldcg): the partials were written by the previous kernel of this graph.
constexpr int ATTN_FOLD_BATCH = 4;
QA_DEVICE float4 attn_fold_x4(const AttnFold& f, int r, int e0, int active) {
    const int h = e0 / f.head_dim, i = e0 - h * f.head_dim;
    const size_t base = ((size_t)r * f.n_heads + h) * f.n_splits;
    const float2* ml = reinterpret_cast<const float2*>(f.part_ml) + base;
    const float* po = f.part_o + base * f.head_dim + i;
    float M = -INFINITY, L = 0.0f;
    float4 acc = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    for (int s0 = 0; s0 < active; s0 += ATTN_FOLD_BATCH) {
        float2 p[ATTN_FOLD_BATCH];
        float4 o[ATTN_FOLD_BATCH];
#pragma unroll
        for (int b = 0; b < ATTN_FOLD_BATCH; ++b) {
            const bool ok = s0 + b < active;
            p[b] = ok ? __ldcg(ml + s0 + b) : make_float2(-INFINITY, 0.0f);
            o[b] = ok ? __ldcg(reinterpret_cast<const float4*>(po + (size_t)(s0 + b) * f.head_dim))
                      : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        }
        float mb = M;
#pragma unroll
        for (int b = 0; b < ATTN_FOLD_BATCH; ++b) mb = fmaxf(mb, p[b].x);
        // mb is finite: every active split saw at least one key (a finite score).
        const float rescale = expf(M - mb);  // 0 on the first batch (M = -inf)
        L *= rescale;
        acc = make_float4(acc.x * rescale, acc.y * rescale, acc.z * rescale, acc.w * rescale);
#pragma unroll
        for (int b = 0; b < ATTN_FOLD_BATCH; ++b) {
            const float w = expf(p[b].x - mb);  // 0 for the padding (-inf)
            L = fmaf(w, p[b].y, L);
            acc = make_float4(fmaf(w, o[b].x, acc.x), fmaf(w, o[b].y, acc.y), fmaf(w, o[b].z, acc.z),
                              fmaf(w, o[b].w, acc.w));
        }
        M = mb;
    }
    return make_float4(acc.x / L, acc.y / L, acc.z / L, acc.w / L);
}
