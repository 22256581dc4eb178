// Q5_0 GEMVs read straight from the canonical planes into MMA fragments: the store (with or
// without the residual, or with the greedy argmax) and SwiGLU on [gate | up], with the norm
// prologue. Measured (H100, the real default model, one binary with QWEN_AOT_Q5_DIRECT=0 as the
// base): decode step 554.6 -> 531.3 us, nearly all of it gate|up's (experiments/LOG.md).
//
//    y[r, j] = inv_rms * sum_i (x[r, i] * norm_w[i]) * W[j, i], then gemv_epilogue.cuh's epilogue
//
// Why. qmma.cu serves every format through a per-warp cp.async ring in shared memory: a copy, a
// wait, a warp barrier and a fragment load for every word (q8_direct.cu's header; ncu, twenty-second
// session). The default model's Q5_0 matrices (o_proj, gate|up: 5.4 of its 9.7 MB per layer) need
// no such staging: in the canonical 4-bit plane (plan/src/quant/mod.rs) word w of a group holds
// elements 4w..4w+3 in its low nibbles and 16+4w..16+4w+3 in its high ones -- exactly the k slots
// 4 tq.. and 16 + 4 tq.. that lane tq of an m16n8k32 A fragment holds.
//
// Fragments. A warp's tile is 16 row slots: slot gq and gq + 8 are the MMA's A rows (gq = lane / 4,
//    tq = lane % 4); store: tile T's slots are rows 16 T ..; SwiGLU: slot gq is gate row (unit)
//    8 T + gq and slot gq + 8 its up row, so one quad ends with both halves of a unit. An item is
//    one span of 128 elements (four groups) of a tile: lane tq loads its own group 4 s + tq of
//    both rows whole (16 code bytes and 4 high-bit bytes each: one 16-byte and one 4-byte load)
//    and the rows' four f16 scales (8 bytes each). MMA w (0..3) takes word w of every lane's
//    group, so its 32 k slots hold four groups (one per lane of a quad) -- more than B's 8 columns
//    can keep apart with x's three digits. So each word runs two MMAs on the same A registers:
//    pair 0 (groups 0, 1: lanes tq 0, 1 supply B) and pair 1 (groups 2, 3: tq 2, 3), B's columns
//    laid out as in direct_prep.cuh (n < 3: digit n of the pair's first group; 3 <= n < 6: the
//    second's), the other pair's lanes supplying zeros. 8 MMAs per 2,048 weights instead of the
//    ideal 4 -- the tensor cores are far from busy in a GEMV -- and no repacked copy of the weight.
// Zero point. Q5_0's value is d (q - 16) with q = nibble | high bit << 4 (unsigned, < 32, so the
//    s8 MMA takes it as is): sum_i (q_i - 16) x'_i = sum_i q_i x'_i - 16 sum_i x'_i, the second
//    term added per group by the lane holding its digit-0 column (xz: direct_prep.cuh).
// Work. A block of GEMV_WARPS warps owns `tpb` consecutive tiles; its warps take the tiles' items
//    round-robin (warp w: items w, w + 8, ...), each keeping Q5D_DEPTH items in flight in
//    registers, the first Q5D_DEPTH requested before the PDL wait (at the default model's shapes
//    that is every item a warp has: gate|up is 608 tiles x 7 spans on 203 blocks of 3 tiles).
//    A warp's items of one tile are consecutive in its walk, so it leaves each tile once: it then
//    writes the quad sums into its own slots of shared memory (part: per tile, warp and slot),
//    and after a barrier thread e adds slot e % 16 of tile e / 16 over the eight warps in warp
//    order (the same sums, bit for bit, on every run: no atomics) and runs its unit's epilogue
//    (tpb <= 16: one pass; its residual was requested right after the PDL wait).
// Launch: DP_THREADS threads, grid (ceil(tiles / tpb), rows); dynamic shared memory
//    q5_direct::smem_bytes(k, tpb): the digit planes, the column tables, GEMV_WARPS x 16 floats
//    per tile and 32 bytes of zeros.
#include "argmax.cuh"
#include "direct_prep.cuh"
#include "gemv_epilogue.cuh"
#include "int8_mma.cuh"
#include "quant.cuh"

namespace {

constexpr int Q5D_TILE = 16;   // row slots per warp tile
constexpr int Q5D_SPAN = 128;  // elements per item: four groups, one per lane of a quad
// Items in flight per lane (QA_Q5D_DEPTH: a timing build's override, NVCC_APPEND_FLAGS).
#ifndef QA_Q5D_DEPTH
#define QA_Q5D_DEPTH 3
#endif
constexpr int Q5D_DEPTH = QA_Q5D_DEPTH;
// Blocks per SM the registers must allow (QA_Q5D_MIN_BLOCKS: a timing build's override).
#ifndef QA_Q5D_MIN_BLOCKS
#define QA_Q5D_MIN_BLOCKS 2
#endif

struct Q5Item {
    uint4 a, b;       // group 4 s + tq's code bytes (low nibbles), row slots gq and gq + 8
    uint32_t ha, hb;  // its high-bit bytes, both slots
    uint2 sa, sb;     // the span's four f16 group scales, both slots
};

// The row of W behind row slot `slot` of tile `tile` (rows past the weight read its last one;
// their results are dropped).
template <int EPI>
QA_DEVICE int q5d_row(int tile, int slot, int n) {
    if (EPI == EPI_SWIGLU) {
        const int half = n / 2, unit = min(tile * 8 + (slot & 7), half - 1);
        return slot < 8 ? unit : half + unit;
    }
    return min(tile * Q5D_TILE + slot, n - 1);
}

// Row j's group g in the qs, qh and sc planes of its part: byte offsets 16 gi, 4 gi, 2 gi.
struct Q5Row {
    const uint8_t *qs, *qh, *sc;
};

QA_DEVICE Q5Row q5d_row_planes(const QParts& P, int j, int G) {
    const int p = part_of(P, j);
    const size_t g0 = (size_t)(j - part_row0(P, p)) * G;
    return {pick(P.qs, p) + 16 * g0, pick(P.qh, p) + 4 * g0, pick(P.sc, p) + 2 * g0};
}

// Starts the loads of the item (tile, span) of lane (gq, tq).
template <int EPI>
QA_DEVICE void q5d_load(const QParts& P, int tile, int span, int n, int G, int gq, int tq, Q5Item& it) {
    const Q5Row ra = q5d_row_planes(P, q5d_row<EPI>(tile, gq, n), G);
    const Q5Row rb = q5d_row_planes(P, q5d_row<EPI>(tile, gq + 8, n), G);
    const int g = 4 * span + tq;
    it.a = load_stream16(ra.qs + 16 * g);
    it.b = load_stream16(rb.qs + 16 * g);
    it.ha = ld_u32(ra.qh + 4 * g);
    it.hb = ld_u32(rb.qh + 4 * g);
    it.sa = __ldg(reinterpret_cast<const uint2*>(ra.sc + 8 * span));
    it.sb = __ldg(reinterpret_cast<const uint2*>(rb.sc + 8 * span));
}

// Word w of a group's codes (q: its qs word w, h: its qh word) as the A registers of k slots
// 4 tq.. (elements 4w..4w+3: low nibbles, high bits w) and 16 + 4 tq.. (elements 16+4w..:
// high nibbles, high bits 4 + w), one unsigned 5-bit code per byte.
QA_DEVICE void q5d_codes(uint32_t q, uint32_t h, int w, uint32_t& lo, uint32_t& hi) {
    lo = (q & 0x0F0F0F0Fu) | (((h >> w) & 0x01010101u) << 4);
    hi = ((q >> 4) & 0x0F0F0F0Fu) | (((h >> (4 + w)) & 0x01010101u) << 4);
}

// A walk over a warp's items in order: item warp + GEMV_WARPS j is span `span` of the block's
// tile `tl` (spans may be fewer than GEMV_WARPS: a step can cross several tiles).
struct Q5Walk {
    int tl, span;
    QA_DEVICE void step(int spans) {
        span += GEMV_WARPS;
        while (span >= spans) {
            span -= spans;
            ++tl;
        }
    }
};

// ARGMAX (the store without a residual): each stored value's argmax_key is kept per thread and the
// block's largest goes to *best_key with one atomicMax (qmma.cu's ARGMAX).
// FOLD (a store): x is the attention's output, merged from `fold`'s partials where the row's
// attention ran in several splits (attn_fold.cuh).
template <int EPI, bool ARGMAX, bool FOLD = false>
__device__ void q5_direct_impl(const int* __restrict__ state, const float* __restrict__ x,
                               const float* __restrict__ norm_w, float eps, const QParts& P, const GemvOut& o, int n,
                               int k, int tpb, int last_row, unsigned long long* __restrict__ best_key,
                               const AttnFold* fold = nullptr) {
    extern __shared__ __align__(16) uint8_t smem[];
    __shared__ float scratch[GEMV_WARPS];
    const int G = k >> 5, spans = k / Q5D_SPAN, spans64 = k / DP_SPAN;
    uint8_t* xd = smem;
    float2* xw = reinterpret_cast<float2*>(smem + 3 * (size_t)k);
    float2* xz = xw + 4 * spans64;
    float* part = reinterpret_cast<float*>(xz + 4 * spans64);  // per tile, warp and row slot: the warp's sum (0 if it had no item there)
    const int part_floats = Q5D_TILE * GEMV_WARPS * tpb;
    const uint8_t* zeros = reinterpret_cast<uint8_t*>(part + part_floats);  // 32 bytes of 0
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, gq = lane >> 2, tq = lane & 3;
    const int tiles = EPI == EPI_SWIGLU ? (n / 2 + 7) / 8 : (n + Q5D_TILE - 1) / Q5D_TILE;
    const int tile0 = blockIdx.x * tpb;
    const int block_items = max(0, min(tpb, tiles - tile0)) * spans;
    const int items = warp < block_items ? (block_items - 1 - warp) / GEMV_WARPS + 1 : 0;
    for (int e = threadIdx.x; e < part_floats + 8; e += DP_THREADS) part[e] = 0.0f;  // and the zeros

    // Weights are constants: the first items stream in while the previous kernel finishes.
    Q5Walk ld{warp / spans, warp % spans};
    Q5Item ring[Q5D_DEPTH];
#pragma unroll
    for (int d = 0; d < Q5D_DEPTH; ++d) {
        if (d < items) {
            q5d_load<EPI>(P, tile0 + ld.tl, ld.span, n, G, gq, tq, ring[d]);
            ld.step(spans);
        }
    }
    const int n_tokens = state_n_tokens(state);
    const int r = last_row ? n_tokens - 1 : (int)blockIdx.y;
    pdl_prologue();  // x is safe to read from here on
    if (r >= n_tokens || r < 0) return;  // uniform per block: before any barrier
    // This thread's epilogue unit (slot e % 16 of tile e / 16; tpb <= 16), its residual requested
    // now, off the path after the MMAs.
    const int e_tl = threadIdx.x / Q5D_TILE, e_slot = threadIdx.x % Q5D_TILE;
    const int e_unit = e_tl < tpb ? (EPI == EPI_SWIGLU ? (tile0 + e_tl) * 8 + e_slot : (tile0 + e_tl) * Q5D_TILE + e_slot)
                                  : INT_MAX;
    EpiIn in{};
    if (EPI == EPI_STORE && e_unit < n) epi_load_acts<EPI>(o, r, n, e_unit, in);
    const int fold_active = FOLD ? attn_fold_active(state, *fold, r) : 1;  // the run state: readable
    const float inv =
        d8_prep<true, FOLD>(x, norm_w, eps, r, k, xd, xw, xz, 16.0f, scratch, fold, fold_active);

    // Lane (gq, tq) supplies B column gq at the k slots of its own group 4 s + tq, in the MMAs of
    // its pair tq / 2: digit gq % 3 where the column is its group's (the pair's first group for
    // even tq: columns 0-2; the second for odd tq: 3-5), zeros elsewhere (a stride of 0 keeps
    // those lanes on the zeros).
    const bool live = gq < 6 && gq / 3 == (tq & 1);
    const uint8_t* plane = xd + (size_t)(gq % 3) * k + 32 * tq;
    const uint8_t* b_base0 = live && tq < 2 ? plane : zeros;
    const uint8_t* b_base1 = live && tq >= 2 ? plane : zeros;
    const int b_stride0 = live && tq < 2 ? 32 * 4 : 0, b_stride1 = live && tq >= 2 ? 32 * 4 : 0;
    // The f16 scale (of a pair's two groups) behind each of the lane's C columns 2 tq, 2 tq + 1.
    const int shift0 = tq < 2 ? 0 : 16, shift1 = tq == 0 ? 0 : 16;
    Q5Walk at{warp / spans, warp % spans};
    float acc0 = 0.0f, acc1 = 0.0f;
    for (int base = 0; base < items; base += Q5D_DEPTH) {
#pragma unroll
        for (int d = 0; d < Q5D_DEPTH; ++d) {
            if (base + d >= items) break;  // warp-uniform
            const Q5Item& it = ring[d];
            const uint4 b0lo = *reinterpret_cast<const uint4*>(b_base0 + at.span * b_stride0);
            const uint4 b0hi = *reinterpret_cast<const uint4*>(b_base0 + at.span * b_stride0 + 16);
            const uint4 b1lo = *reinterpret_cast<const uint4*>(b_base1 + at.span * b_stride1);
            const uint4 b1hi = *reinterpret_cast<const uint4*>(b_base1 + at.span * b_stride1 + 16);
            int c0[4] = {0, 0, 0, 0}, c1[4] = {0, 0, 0, 0};
#pragma unroll
            for (int w = 0; w < 4; ++w) {
                uint32_t a[4];
                q5d_codes(word4(it.a, w), it.ha, w, a[0], a[2]);
                q5d_codes(word4(it.b, w), it.hb, w, a[1], a[3]);
                mma_k32(a, word4(b0lo, w), word4(b0hi, w), c0);
                mma_k32(a, word4(b1lo, w), word4(b1hi, w), c1);
            }
            // Pair p's groups are 64-element span 2 s + p of the tables; its scales word p.
            const float2 w0 = xw[4 * (2 * at.span) + tq], w1 = xw[4 * (2 * at.span + 1) + tq];
            const float2 z0 = xz[4 * (2 * at.span) + tq], z1 = xz[4 * (2 * at.span + 1) + tq];
            const float a00 = half_at(it.sa.x, shift0), a01 = half_at(it.sa.x, shift1);
            const float a10 = half_at(it.sa.y, shift0), a11 = half_at(it.sa.y, shift1);
            const float b00 = half_at(it.sb.x, shift0), b01 = half_at(it.sb.x, shift1);
            const float b10 = half_at(it.sb.y, shift0), b11 = half_at(it.sb.y, shift1);
            // The slot is free once its codes and scales are read: the item Q5D_DEPTH on.
            if (base + d + Q5D_DEPTH < items) {
                q5d_load<EPI>(P, tile0 + ld.tl, ld.span, n, G, gq, tq, ring[d]);
                ld.step(spans);
            }
            acc0 = fmaf(a00, fmaf((float)c0[0], w0.x, z0.x), acc0);
            acc0 = fmaf(a01, fmaf((float)c0[1], w0.y, z0.y), acc0);
            acc0 = fmaf(a10, fmaf((float)c1[0], w1.x, z1.x), acc0);
            acc0 = fmaf(a11, fmaf((float)c1[1], w1.y, z1.y), acc0);
            acc1 = fmaf(b00, fmaf((float)c0[2], w0.x, z0.x), acc1);
            acc1 = fmaf(b01, fmaf((float)c0[3], w0.y, z0.y), acc1);
            acc1 = fmaf(b10, fmaf((float)c1[2], w1.x, z1.x), acc1);
            acc1 = fmaf(b11, fmaf((float)c1[3], w1.y, z1.y), acc1);
            const int tl = at.tl;
            at.step(spans);
            if (base + d + 1 == items || at.tl != tl) {  // leaving the tile: the quad adds up
                acc0 += __shfl_xor_sync(0xffffffffu, acc0, 1);
                acc1 += __shfl_xor_sync(0xffffffffu, acc1, 1);
                acc0 += __shfl_xor_sync(0xffffffffu, acc0, 2);
                acc1 += __shfl_xor_sync(0xffffffffu, acc1, 2);
                if (tq == 0) {
                    part[(tl * GEMV_WARPS + warp) * Q5D_TILE + gq] = acc0;
                    part[(tl * GEMV_WARPS + warp) * Q5D_TILE + gq + 8] = acc1;
                }
                acc0 = 0.0f;
                acc1 = 0.0f;
            }
        }
    }
    __syncthreads();  // part holds every warp's row sums
    // Thread e runs slot e % 16 of tile e / 16 (tpb <= 16: one pass); its warps' sums in warp order.
    unsigned long long best = 0;
    auto row_sum = [&](int sl) {
        float y = 0.0f;
#pragma unroll
        for (int w = 0; w < GEMV_WARPS; ++w) y += part[(e_tl * GEMV_WARPS + w) * Q5D_TILE + sl];
        return y * inv;
    };
    if constexpr (EPI == EPI_SWIGLU) {
        if (e_slot < 8 && e_unit < n / 2) {
            gemv_epilogue<EPI>(o, state, r, n, e_unit, e_unit, e_unit + n / 2, row_sum(e_slot), row_sum(e_slot + 8), in);
        }
    } else if (e_unit < n) {
        const float y = row_sum(e_slot);
        gemv_epilogue<EPI>(o, state, r, n, e_unit, e_unit, e_unit, y, 0.0f, in);
        if constexpr (ARGMAX) best = key_max(best, argmax_key(y, e_unit));
    }
    if constexpr (ARGMAX) argmax_key_to<DP_THREADS>(best, best_key);
}

QA_DEVICE GemvOut q5d_out(float* out, const float* residual) {
    return GemvOut{out, residual, nullptr, nullptr, nullptr, nullptr, 0, 0, 0};
}

}  // namespace

// out[r, j] (+ residual[r, j] when residual is not null) for rows r of the launch (every row, or
// row n_tokens - 1 when last_row); every part Q5_0, k a multiple of 128 (q5_direct::direct_kernel
// checks).
extern "C" __global__ void __launch_bounds__(DP_THREADS, QA_Q5D_MIN_BLOCKS)
    gemv_q5_direct_store(const int* __restrict__ state, const float* __restrict__ x, const float* __restrict__ norm_w,
                         float eps, const QParts P, float* __restrict__ out, const float* __restrict__ residual, int n,
                         int k, int tpb, int last_row) {
    q5_direct_impl<EPI_STORE, false>(state, x, norm_w, eps, P, q5d_out(out, residual), n, k, tpb, last_row, nullptr);
}

// The store with x the attention's output merged from its split partials (attn_fold.cuh): o_proj
// after an attention launched with fold_max > 0 (the same fold_max: rows of 2..=fold_max active
// splits are merged here, others read x). No norm (x is the attention's output as it is).
extern "C" __global__ void __launch_bounds__(DP_THREADS, QA_Q5D_MIN_BLOCKS)
    gemv_q5_direct_store_fold(const int* __restrict__ state, const float* __restrict__ x,
                              const float* __restrict__ norm_w, float eps, const QParts P, float* __restrict__ out,
                              const float* __restrict__ residual, int n, int k, int tpb, int last_row,
                              const float* __restrict__ part_o, const float* __restrict__ part_ml, int n_heads,
                              int head_dim, int n_splits, int min_chunk, int fold_max) {
    const AttnFold fold{part_o, part_ml, n_heads, head_dim, n_splits, min_chunk, fold_max};
    q5_direct_impl<EPI_STORE, false, true>(state, x, norm_w, eps, P, q5d_out(out, residual), n, k, tpb, last_row,
                                           nullptr, &fold);
}

// The store without a residual with the greedy argmax (the LM head: launch::qgemv_argmax).
extern "C" __global__ void __launch_bounds__(DP_THREADS, QA_Q5D_MIN_BLOCKS)
    gemv_q5_direct_argmax(const int* __restrict__ state, const float* __restrict__ x, const float* __restrict__ norm_w,
                          float eps, const QParts P, float* __restrict__ out, int n, int k, int tpb, int last_row,
                          unsigned long long* __restrict__ best) {
    q5_direct_impl<EPI_STORE, true>(state, x, norm_w, eps, P, q5d_out(out, nullptr), n, k, tpb, last_row, best);
}

// out[r, u] = silu(gate_u) * up_u for the ffn units of a [gate | up] weight (2 ffn rows).
extern "C" __global__ void __launch_bounds__(DP_THREADS, QA_Q5D_MIN_BLOCKS)
    gemv_q5_direct_swiglu(const int* __restrict__ state, const float* __restrict__ x, const float* __restrict__ norm_w,
                          float eps, const QParts P, float* __restrict__ out, int ffn, int k, int tpb) {
    q5_direct_impl<EPI_SWIGLU, false>(state, x, norm_w, eps, P, q5d_out(out, nullptr), 2 * ffn, k, tpb, 0, nullptr);
}
