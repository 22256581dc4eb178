// The LM head on Q8_0 weights, read straight from global memory into MMA fragments.
//
//    out[r, j] = inv_rms * sum_i (x[r, i] * norm_w[i]) * W[j, i]     (norm_w optional: inv_rms = 1)
//
// Why a kernel of its own. qmma.cu serves every format pair and epilogue through a per-warp
// cp.async ring in shared memory; on the default model's LM head (151,936 x 896 Q8_0, 144.6 MB,
// 37 % of the step's bytes) that ring is what holds it back: ncu puts it at 3.19 TB/s,
// stalled on shared-memory instruction traffic (MIO throttle 3.0 cycles per instruction,
// experiments/LOG.md, twenty-second session), with 0.13 warp instructions per weight. Q8_0's
// codes are int8 already and a row's groups are contiguous in the canonical plane, so the codes
// can go from 16-byte loads into the A registers as they are: ≈ 50 SASS instructions per 1,024
// weights on the item path (against ≈ 130), no ring, no shared-memory traffic for the weights.
// Measured (H100, random 0.5B weights, one binary): decode step 573.3 -> 553.9 us.
//
// Fragments. A warp's tile is 16 rows: R = 16 T + gq and R + 8 (the MMA's A rows gq and gq + 8;
//    gq = lane / 4, tq = lane % 4). An item is D8_ITEM spans; a span is 64 elements (two
//    groups, A and B) of both rows: lane tq loads bytes 16 tq .. 16 tq + 15 of the span from each row, so lanes 0-1
//    hold group A's codes and lanes 2-3 group B's. Two m16n8k32 MMAs take the item: the first the
//    lanes' bytes 0-7 (k slots 4 tq .. and 16 + 4 tq .. are span elements 16 tq .. 16 tq + 3 and
//    16 tq + 4 .. 16 tq + 7), the second bytes 8-15. B's column n < 3 is group A's digit n, 3 <=
//    n < 6 group B's digit n - 3 (zero where the k slot is the other group's), 6, 7 zero; so
//    both MMAs add into one C whose columns are the groups' digit sums. The digit planes hold x's
//    digits in element order, so a lane's four B words are one 16-byte shared load.
// Scales. Lane tq holds C columns 2 tq and 2 tq + 1 (tq 0: A d0, A d1; 1: A d2, B d0; 2: B d1,
//    B d2; 3: none): it weighs them by x's group scale and digit weight (xw, a table per span)
//    and by the rows' f16 group scales, and the quad adds up at the tile's end.
// Registers. A warp walks its tiles (T = warp, warp + warps, ...) item by item, each lane keeping
//    D8_DEPTH items in flight (2 x 16 code bytes and 2 scale words each) in a ring: a slot is
//    refilled with the item D8_DEPTH on as soon as its codes and scales are read.
// Launch: GEMV_WARPS warps per block, blocks up to the SMs' resident slots, grid (blocks, rows);
//    dynamic shared memory q8_direct::smem_bytes(k): 3 k digit bytes and 32 bytes per span.
#include "argmax.cuh"
#include "direct_prep.cuh"
#include "int8_mma.cuh"
#include "quant.cuh"

namespace {

constexpr int D8_THREADS = DP_THREADS;
constexpr int D8_TILE = 16;   // rows per warp tile
constexpr int D8_SPAN = DP_SPAN;  // elements per MMA pair (two groups)
constexpr int D8_ITEM = 2;    // spans per item: one pointer step, one scale load per row
// Items in flight per lane (QA_D8_DEPTH: a timing build's override, NVCC_APPEND_FLAGS).
#ifndef QA_D8_DEPTH
#define QA_D8_DEPTH 2
#endif
constexpr int D8_DEPTH = QA_D8_DEPTH;
// Blocks per SM the registers must allow (QA_D8_MIN_BLOCKS: a timing build's override).
#ifndef QA_D8_MIN_BLOCKS
#define QA_D8_MIN_BLOCKS 2
#endif

struct D8Item {
    uint4 a[D8_ITEM], b[D8_ITEM];  // per span: code bytes 16 tq .. 16 tq + 15, rows R and R + 8
    uint2 sa, sb;                  // the item's four f16 group scales, rows R and R + 8
};

// A lane's next item to load: its tile and first span, and where the item's codes (rows R and
// R + 8, at byte 16 tq of the span) and scale words are. Rows past n read row n - 1 (results dropped).
struct D8Loads {
    int tile, span;
    const uint8_t *a, *b, *sa, *sb;
};

QA_DEVICE void d8_rows(D8Loads& l, const uint8_t* __restrict__ qs, const uint8_t* __restrict__ sc, int n, int k,
                       int gq, int tq) {
    const int r0 = min(l.tile * D8_TILE + gq, n - 1), r1 = min(l.tile * D8_TILE + gq + 8, n - 1);
    const size_t groups = (size_t)(k >> 5);
    l.a = qs + (size_t)r0 * k + 16 * tq;
    l.b = qs + (size_t)r1 * k + 16 * tq;
    l.sa = sc + 2 * (size_t)r0 * groups;
    l.sb = sc + 2 * (size_t)r1 * groups;
}

// Starts the loads of the item at `l` and moves `l` to the next one: the next span of the rows,
// or the first span of the warp's next tile.
QA_DEVICE void d8_load_next(D8Loads& l, const uint8_t* __restrict__ qs, const uint8_t* __restrict__ sc, int n, int k,
                            int spans, int tile_stride, int gq, int tq, D8Item& it) {
#pragma unroll
    for (int h = 0; h < D8_ITEM; ++h) {
        it.a[h] = load_stream16(l.a + h * D8_SPAN);
        it.b[h] = load_stream16(l.b + h * D8_SPAN);
    }
    static_assert(D8_ITEM == 2, "an item's scales are one 8-byte word per row");
    it.sa = __ldg(reinterpret_cast<const uint2*>(l.sa));
    it.sb = __ldg(reinterpret_cast<const uint2*>(l.sb));
    if ((l.span += D8_ITEM) < spans) {
        l.a += D8_ITEM * D8_SPAN;
        l.b += D8_ITEM * D8_SPAN;
        l.sa += 4 * D8_ITEM;
        l.sb += 4 * D8_ITEM;
    } else {
        l.span = 0;
        l.tile += tile_stride;
        d8_rows(l, qs, sc, n, k, gq, tq);
    }
}

// ARGMAX: each stored value's argmax_key is kept per lane and the block's largest goes to *best
// with one atomicMax (qmma.cu's ARGMAX: the greedy argmax without a launch of its own).
template <bool ARGMAX>
__device__ void q8_direct_impl(const int* __restrict__ state, const float* __restrict__ x,
                               const float* __restrict__ norm_w, float eps, const QParts& P, float* __restrict__ out,
                               int n, int k, int last_row, unsigned long long* __restrict__ best_key) {
    extern __shared__ __align__(16) uint8_t smem[];
    __shared__ float scratch[GEMV_WARPS];
    const int spans = k / D8_SPAN;
    uint8_t* xd = smem;
    float2* xw = reinterpret_cast<float2*>(smem + 3 * (size_t)k);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, gq = lane >> 2, tq = lane & 3;
    const int tiles = (n + D8_TILE - 1) / D8_TILE, tile_stride = gridDim.x * GEMV_WARPS;
    const int first = blockIdx.x * GEMV_WARPS + warp;
    const int items = first < tiles ? ((tiles - 1 - first) / tile_stride + 1) * (spans / D8_ITEM) : 0;
    const uint8_t* qs = P.qs[0];
    const uint8_t* sc = P.sc[0];

    // Weights are constants: the first items stream in while the previous kernel finishes.
    D8Loads ld{first, 0, nullptr, nullptr, nullptr, nullptr};
    d8_rows(ld, qs, sc, n, k, gq, tq);
    D8Item ring[D8_DEPTH];
#pragma unroll
    for (int d = 0; d < D8_DEPTH; ++d) {
        if (d < items) d8_load_next(ld, qs, sc, n, k, spans, tile_stride, gq, tq, ring[d]);
    }
    const int n_tokens = state_n_tokens(state);
    const int r = last_row ? n_tokens - 1 : (int)blockIdx.y;
    pdl_prologue();  // x is safe to read from here on
    if (r >= n_tokens || r < 0) return;  // uniform per block: before any barrier
    const float inv = d8_prep<false>(x, norm_w, eps, r, k, xd, xw, nullptr, 0.0f, scratch);

    // Lane (gq, tq) supplies B column gq at k slots of span elements 16 tq ..: group A's for tq
    // < 2, B's for tq >= 2, so only columns of that group are non-zero.
    const bool b_live = gq < 6 && ((gq < 3) == (tq < 2));
    const uint8_t* b_plane = xd + (size_t)(gq % 3) * k + 16 * tq;
    // The f16 scale (of the word's two groups) behind each of the lane's C columns.
    const int shift0 = tq < 2 ? 0 : 16, shift1 = tq == 0 ? 0 : 16;
    int at_tile = first, at_span = 0;
    float acc0 = 0.0f, acc1 = 0.0f;
    unsigned long long best = 0;
    for (int base = 0; base < items; base += D8_DEPTH) {
#pragma unroll
        for (int d = 0; d < D8_DEPTH; ++d) {
            if (base + d >= items) break;  // warp-uniform
            const D8Item& it = ring[d];
            float s0[D8_ITEM], s1[D8_ITEM], t0[D8_ITEM], t1[D8_ITEM];
            int cs[D8_ITEM][4];
#pragma unroll
            for (int h = 0; h < D8_ITEM; ++h) {
                uint4 bw = make_uint4(0u, 0u, 0u, 0u);
                if (b_live) bw = *reinterpret_cast<const uint4*>(b_plane + (size_t)(at_span + h) * D8_SPAN);
                const float2 w = xw[4 * (at_span + h) + tq];
#pragma unroll
                for (int i = 0; i < 4; ++i) cs[h][i] = 0;
                const uint32_t a_lo[4] = {it.a[h].x, it.b[h].x, it.a[h].y, it.b[h].y};
                const uint32_t a_hi[4] = {it.a[h].z, it.b[h].z, it.a[h].w, it.b[h].w};
                mma_k32(a_lo, bw.x, bw.y, cs[h]);
                mma_k32(a_hi, bw.z, bw.w, cs[h]);
                const uint32_t wa = h == 0 ? it.sa.x : it.sa.y, wb = h == 0 ? it.sb.x : it.sb.y;
                s0[h] = w.x * half_at(wa, shift0);
                s1[h] = w.y * half_at(wa, shift1);
                t0[h] = w.x * half_at(wb, shift0);
                t1[h] = w.y * half_at(wb, shift1);
            }
            // The slot is free once its codes and scales are read: the item D8_DEPTH on.
            if (base + d + D8_DEPTH < items) d8_load_next(ld, qs, sc, n, k, spans, tile_stride, gq, tq, ring[d]);
#pragma unroll
            for (int h = 0; h < D8_ITEM; ++h) {
                acc0 = fmaf((float)cs[h][0], s0[h], fmaf((float)cs[h][1], s1[h], acc0));
                acc1 = fmaf((float)cs[h][2], t0[h], fmaf((float)cs[h][3], t1[h], acc1));
            }
            at_span += D8_ITEM;
            if (at_span == spans) {  // the tile is done: the quad adds up, lane tq = 0 stores
                acc0 += __shfl_xor_sync(0xffffffffu, acc0, 1);
                acc1 += __shfl_xor_sync(0xffffffffu, acc1, 1);
                acc0 += __shfl_xor_sync(0xffffffffu, acc0, 2);
                acc1 += __shfl_xor_sync(0xffffffffu, acc1, 2);
                const int j0 = at_tile * D8_TILE + gq, j1 = j0 + 8;
                if (tq == 0 && j0 < n) {
                    const float y = acc0 * inv;
                    out[(size_t)r * n + j0] = y;
                    if constexpr (ARGMAX) best = key_max(best, argmax_key(y, j0));
                }
                if (tq == 0 && j1 < n) {
                    const float y = acc1 * inv;
                    out[(size_t)r * n + j1] = y;
                    if constexpr (ARGMAX) best = key_max(best, argmax_key(y, j1));
                }
                acc0 = 0.0f;
                acc1 = 0.0f;
                at_span = 0;
                at_tile += tile_stride;
            }
        }
    }
    if constexpr (ARGMAX) argmax_key_to<D8_THREADS>(best, best_key);
}

}  // namespace

// The plain store (no residual) and the store with the greedy argmax; k a multiple of 128 (whole
// items), one part of Q8_0 (launch::q8_direct_kernel checks).
extern "C" __global__ void __launch_bounds__(D8_THREADS, QA_D8_MIN_BLOCKS)
    gemv_q8_direct_store(const int* __restrict__ state, const float* __restrict__ x, const float* __restrict__ norm_w,
                         float eps, const QParts P, float* __restrict__ out, int n, int k, int last_row) {
    q8_direct_impl<false>(state, x, norm_w, eps, P, out, n, k, last_row, nullptr);
}

extern "C" __global__ void __launch_bounds__(D8_THREADS, QA_D8_MIN_BLOCKS)
    gemv_q8_direct_argmax(const int* __restrict__ state, const float* __restrict__ x, const float* __restrict__ norm_w,
                          float eps, const QParts P, float* __restrict__ out, int n, int k, int last_row,
                          unsigned long long* __restrict__ best) {
    q8_direct_impl<true>(state, x, norm_w, eps, P, out, n, k, last_row, best);
}
