// Quantized GEMVs on the tensor cores (v4): the decode's matrix products on weights in the GGUF's
// own quantization, with integer MMAs doing the multiply-adds, so that a lane spends about one
// instruction per four weight elements instead of qgemv.cu's three or four per element.
//
//    y[t, j] = sum_i x'[t, i] * W[j, i], x' = x or x * norm_w (the RMS scale applied to the finished
//    y), then the epilogue of gemv_epilogue.cuh -- the same semantics as qgemv.cu and matmul.cu.
//
// x as three int8 digits. Each block turns its x row into, per group of 32 elements (amax = max|x'|),
//    the balanced base-256 digits of v = rint(x' * DIGIT_RANGE / amax) (int8_mma.cuh), so
//    x' = s (d0 + d1 / 256 + d2 / 65536) with s = amax * DIGIT_UNIT, within amax * 1.2e-7 --
//    about as exact as an f32 x relative to the group's largest element. (One int8 per
//    group, llama.cpp's Q8_1, moves the reference logits by 0.18; f16 x by 0.0055; the bar is the
//    f16 plan's 0.0046: experiments/LOG.md, ninth session.) The weight codes q (unsigned, or Q8_0's
//    signed bytes) times the digits are summed exactly in int32 by mma.m16n8k32.s8; the group's
//    scale, min and zero point are applied per group in f32: sum_i (dl (q_i - z) - ml) x'_i =
//    dl s (C0 + C1 / 256 + C2 / 65536) - (ml + dl z) sum_i x'_i.
//    The k-quant pairs' 8-warp kernels take x's amax over the whole super-block instead (one s for
//    its eight groups, within amax_sb * 1.2e-7 -- still f32-exact next to the largest element), so
//    that the integer sub-scales can multiply the sums in int32 across the super-block and the f32
//    arithmetic above runs once per super-block (consume_superblock).
//
// MMA shape. A warp's tile is 8 rows of W ("tile rows", gq = lane / 4 below); the MMA's 16 A rows
//    are those 8 rows twice: A row gq holds group ga of tile row gq, A row gq + 8 group gb = ga + 1
//    of the same row. The k index inside a group is free as long as A and B agree: lane (gq, tq)
//    supplies codes of elements 4tq..4tq+3 (k slots 4tq..) and 16+4tq.. (k slots 16+4tq..) -- one
//    aligned 4-byte word of the canonical nibble plane. B's 8 columns are group ga's digits d0, d1,
//    d2 (columns 0-2) and group gb's (3-5); columns 6, 7 are zero. So C[gq][0..2] and C[gq+8][3..5]
//    are the useful sums; each lane weighs the four C values it holds (digit_weights) and
//    accumulates its share of tile row gq; a quad's four lanes then add up.
//    Formats with a scale per 16 elements (Q6_K) run two m16n8k16 MMAs, one per half-group, and
//    combine them with the integer sub-scales before converting.
//
// Launch: block 256 = GEMV_WARPS warps (the wide stores: QMMA_WIDE_WARPS, wpt = all of them, one tile per
//    block); `wpt` warps (1, 2, 4, 8; the wide stores: QMMA_WIDE_WARPS) share each tile, warp `sub` taking
//    steps of SG groups (SG (it wpt + sub) .. +SG-1; SG = 4, or 8 for k-quant pairs: step_groups_of);
//    the block's teams take tiles blockIdx.x * teams + team,
//    then grid-stride. grid (blocks, rows_launched); dynamic shared memory QMMA_GROUP_SMEM * k / 32
//    (digits, and per group s and the sums of x'). A tile's rows are all in parts of one format
//    (the host checks: launch::qmma_kernel); the two formats of a kernel are a compile-time pair.
//    Store: tile T is rows 8T..8T+7. SwiGLU / RoPE: tile T is units 4T..4T+3, their first rows in
//    tile rows 0-3 and second rows in 4-7 (unit_rows).
#include "argmax.cuh"
#include "gemv_epilogue.cuh"
#include "quant.cuh"
#include "int8_mma.cuh"

namespace {

constexpr int MMA_TILE = QMMA_TILE_ROWS;  // rows of W per tile (8)

// Per group of x in shared memory: digit scale, sum of x' over the group and over its first half.
struct XGroup {
    float s, sum, sum0, pad;
};
static_assert(QMMA_GROUP_SMEM == 96 + sizeof(XGroup), "digit planes + XGroup per group");

// Byte position of element e of a group in a digit plane ("digit_pos"): lane tq's k slots
// 4tq..4tq+3 (elements 4tq..) then 16+4tq.. (elements 16+4tq..), so that a lane's two B words are
// one 8-byte load: e < 16 at 8 (e / 4) + e % 4, e >= 16 at 8 ((e - 16) / 4) + 4 + e % 4.

// The block's x row r (times norm_w when set) as digits (xd: 96 bytes per group, digit-major, in
// digit_pos order) and per-group sums (xg). A round of the block covers 32 or 64 groups: eight
// lanes per group with four elements (one word of each digit plane) each while the row fits one
// round (k <= 1,024: the shortest per-lane chains), else (k-quant pairs only: WIDE below) four
// lanes with eight elements (two words) each, so that long rows take half as many rounds -- each
// round is a chain of shuffles and digit arithmetic the whole block waits for (down_proj's
// 4,864: 3 rounds instead of 5; 8,960: 5 instead of 9). The rows' x loads of up to PREP_LOADS elements per lane are issued together (one
// L2 round trip for them, not one per round). Every thread calls it (one barrier). Returns the
// inverse RMS (1 without a norm).
constexpr int PREP_LOADS = 16;  // floats of x per lane in flight (registers)

// LANES (8 or 4) lanes per group; lane `part` holds WORDS = 8 / LANES float4s of its group: word
// `part + LANES w` of the group's eight (elements 4 (part + LANES w) ..), i.e. digit-plane word
// 2 (q % 4) + q / 4 for q = part + LANES w (digit_pos).
template <int LANES, int WARPS, bool SB_SCALE>
QA_DEVICE float prep_rounds(const float4* __restrict__ xr, const float4* __restrict__ nw, int G, uint8_t* xd,
                            XGroup* xg) {
    static_assert(!SB_SCALE || LANES == 4, "a super-block's eight groups are one warp's 32 lanes");
    constexpr int WORDS = 8 / LANES, GROUPS = WARPS * 32 / LANES, CHUNK = PREP_LOADS / (4 * WORDS);
    const int part = threadIdx.x & (LANES - 1), slot = threadIdx.x / LANES;
    float ss = 0.0f;
    for (int base = 0; base < G; base += CHUNK * GROUPS) {  // block-uniform
        float4 v[CHUNK][WORDS];
#pragma unroll
        for (int c = 0; c < CHUNK; ++c) {
            const int g = base + c * GROUPS + slot;
#pragma unroll
            for (int w = 0; w < WORDS; ++w) {
                v[c][w] = g < G ? __ldg(xr + 8 * g + part + LANES * w) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
            }
        }
        if (nw != nullptr) {
#pragma unroll
            for (int c = 0; c < CHUNK; ++c) {
                const int g = base + c * GROUPS + slot;
                if (g >= G) continue;
#pragma unroll
                for (int w = 0; w < WORDS; ++w) {
                    float4& a = v[c][w];
                    const float4 n = __ldg(nw + 8 * g + part + LANES * w);
                    ss = fmaf(a.x, a.x, fmaf(a.y, a.y, fmaf(a.z, a.z, fmaf(a.w, a.w, ss))));
                    a = make_float4(a.x * n.x, a.y * n.y, a.z * n.z, a.w * n.w);
                }
            }
        }
#pragma unroll
        for (int c = 0; c < CHUNK; ++c) {
            if (base + c * GROUPS >= G) break;  // block-uniform: the shuffles below
            const int g = base + c * GROUPS + slot;
            float amax = 0.0f, half[WORDS];
#pragma unroll
            for (int w = 0; w < WORDS; ++w) {
                const float4 a = v[c][w];
                amax = fmaxf(amax, fmaxf(fmaxf(fabsf(a.x), fabsf(a.y)), fmaxf(fabsf(a.z), fabsf(a.w))));
                half[w] = (a.x + a.y) + (a.z + a.w);
            }
#pragma unroll
            for (int m = 1; m < (SB_SCALE ? 32 : LANES); m <<= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, m));
            // sum0: the group's elements 0..15 (its words q < 4), total: all 32. Eight lanes:
            // parts 0-3 hold the first half, 4-7 the second; four lanes: each lane's word 0 is
            // in the first half and its word 1 in the second.
            float sum0, total;
            if (LANES == 8) {
                float h = half[0];
                h += __shfl_xor_sync(0xffffffffu, h, 1);
                h += __shfl_xor_sync(0xffffffffu, h, 2);  // parts 0-3: elements 0..15; 4-7: 16..31
                sum0 = h;
                total = h + __shfl_xor_sync(0xffffffffu, h, 4);
            } else {
                float h0 = half[0], h1 = half[WORDS - 1];
                h0 += __shfl_xor_sync(0xffffffffu, h0, 1);
                h1 += __shfl_xor_sync(0xffffffffu, h1, 1);
                h0 += __shfl_xor_sync(0xffffffffu, h0, 2);
                h1 += __shfl_xor_sync(0xffffffffu, h1, 2);
                sum0 = h0;
                total = h0 + h1;
            }
            if (g >= G) continue;
            float s, inv;
            digit_scale(amax, s, inv);
            uint32_t* planes = reinterpret_cast<uint32_t*>(xd + 96 * g);  // QMMA_GROUP_SMEM: 96 + XGroup
#pragma unroll
            for (int w = 0; w < WORDS; ++w) {
                const int q = part + LANES * w, word = 2 * (q & 3) + (q >> 2);
                uint32_t dw[3];
                pack_digits4(v[c][w], inv, dw);
#pragma unroll
                for (int d = 0; d < 3; ++d) planes[8 * d + word] = dw[d];
            }
            if (part == 0) xg[g] = XGroup{s, total, sum0, 0.0f};
        }
    }
    return ss;
}

// WIDE: whether long rows take the four-lane rounds. Only the k-quant pairs compile them: there the
// kernels keep their registers (at most 80, under the 85 that three blocks per SM allow) and the
// 1.5B shapes' step got 2 % shorter; the other pairs' kernels (the default model's Q5_0 / Q8_0)
// went from 72-76 to 77-80 registers with both paths and their step 0.6 % longer
// (experiments/LOG.md, eighteenth session).
template <bool WIDE, bool SB_SCALE, int WARPS>
QA_DEVICE float prep_x_digits(const float* __restrict__ x, const float* __restrict__ norm_w, float eps, int r, int k,
                              uint8_t* xd, XGroup* xg, float* scratch) {
    const int G = k >> 5;
    const float4* xr = reinterpret_cast<const float4*>(x + (size_t)r * k);
    const float4* nw = reinterpret_cast<const float4*>(norm_w);
    float ss = SB_SCALE                        ? prep_rounds<4, WARPS, true>(xr, nw, G, xd, xg)
               : WIDE && G > WARPS * 32 / 8 ? prep_rounds<4, WARPS, false>(xr, nw, G, xd, xg)
                                             : prep_rounds<8, WARPS, false>(xr, nw, G, xd, xg);
    if (norm_w == nullptr) {
        __syncthreads();
        return 1.0f;
    }
    // The sum of squares over the block, with one barrier (scratch is not reused afterwards).
    ss = warp_sum(ss);
    if ((threadIdx.x & 31) == 0) scratch[threadIdx.x >> 5] = ss;
    __syncthreads();  // also: xd and xg are complete
    float total = 0.0f;
#pragma unroll
    for (int w = 0; w < WARPS; ++w) total += scratch[w];
    return 1.0f / sqrtf(total / (float)k + eps);
}
// One group of one tile row, as lane tq holds it: its code words and the group's scale planes.
struct MRaw {
    uint32_t w0, w1;  // qs: word tq (Q8_0: words tq and 4 + tq)
    uint32_t h0, h1;  // qh: the group's 4 or 8 bytes
    uint32_t s, u;    // sc plane (2 or 4 bytes), sup plane (k-quants)
};


// A tile row's planes: where its first group's bytes are.
struct RowPlanes {
    const uint8_t *qs, *qh, *sc, *sup;
};

template <int F>
QA_DEVICE RowPlanes row_planes(const QParts& P, int p, int lr, int G, int S) {
    using T = QTraits<F>;
    const size_t row = (size_t)lr * G;
    return RowPlanes{pick(P.qs, p) + row * T::QS, pick(P.qh, p) + row * T::QH, pick(P.sc, p) + row * T::SC,
                     pick(P.sup, p) + (size_t)lr * S * T::SUP};
}

// The codes of elements 4tq..4tq+3 (lo) and 16+4tq..16+4tq+3 (hi) as four int8 each.
template <int F>
QA_DEVICE void m_codes(const MRaw& r, int tq, uint32_t& lo, uint32_t& hi) {
    if (F == QF_Q8_0) {
        lo = r.w0;
        hi = r.w1;
        return;
    }
    lo = r.w0 & 0x0F0F0F0Fu;
    hi = (r.w0 >> 4) & 0x0F0F0F0Fu;
    if (F == QF_Q5_0 || F == QF_Q5_1 || F == QF_Q5_K) {  // qh bit of element e: byte e % 4, bit e / 4
        lo |= ((r.h0 >> tq) & 0x01010101u) << 4;
        hi |= ((r.h0 >> (tq + 4)) & 0x01010101u) << 4;
    }
    if (F == QF_Q6_K) {  // 2 bits of element e: word e / 16, byte e % 4, bits 2 ((e / 4) % 4)
        lo |= ((r.h0 >> (2 * tq)) & 0x03030303u) << 4;
        hi |= ((r.h1 >> (2 * tq)) & 0x03030303u) << 4;
    }
}

// How lane tq weighs the C values it holds: c0, c1 (tile row gq, columns 2tq, 2tq+1: group a's
// digits for tq 0, 1) and c2, c3 (A row gq + 8: group b's digits for tq 1, 2).
struct DigitWeights {
    float a0, a1, b0, b1;
};

QA_DEVICE DigitWeights digit_weights(int tq) {
    constexpr float D1 = DIGIT_W1, D2 = DIGIT_W2;
    switch (tq) {
        case 0: return {1.0f, D1, 0.0f, 0.0f};
        case 1: return {D2, 0.0f, 0.0f, 1.0f};
        case 2: return {0.0f, 0.0f, D1, D2};
        default: return {0.0f, 0.0f, 0.0f, 0.0f};
    }
}

// The zero point of the codes the MMA multiplies: Q8_0's are its signed bytes themselves (qgemv.cu
// biases them by 128 instead), every other format's are unsigned.
template <int F>
__host__ __device__ constexpr int mma_zero() {
    return F == QF_Q8_0 ? 0 : QTraits<F>::Z;
}

// Group scale (dl) and the term subtracted per unit of sum(x') (ml + dl z) for half h.
template <int F>
QA_DEVICE void m_scales(const MRaw& m, int h, float& dl, float& mz) {
    QRaw r;
    r.s = m.s;
    r.u = m.u;
    float ml;
    q_scales<F>(r, h, dl, ml);
    mz = mma_zero<F>() != 0 ? fmaf(dl, (float)mma_zero<F>(), ml) : ml;
}

// The signed 8-bit sub-scale of half h (Q6_K: sc bytes; value = d * sc * (q - 32)).
QA_DEVICE int q6_sub(uint32_t s, int h) { return (int)(signed char)((s >> (8 * h)) & 0xFFu); }

// Adds one step (groups ga and gb of tile row gq) to acc. xa/xb: the lane's B words (its column's
// digits of group ga or gb, zero for columns 6-7); ya/yb: the per-group x sums.
template <int F>
QA_DEVICE void m_step(const MRaw& ra, const MRaw& rb, uint2 bw, const XGroup& ya, const XGroup& yb, int tq,
                      const DigitWeights& dw, float& acc) {
    uint32_t alo, ahi, blo, bhi;
    m_codes<F>(ra, tq, alo, ahi);
    m_codes<F>(rb, tq, blo, bhi);
    const float min_a = tq == 0 ? 1.0f : 0.0f, min_b = tq == 1 ? 1.0f : 0.0f;  // min terms once per group
    if (!QTraits<F>::HALVES) {
        int c[4] = {0, 0, 0, 0};
        const uint32_t a[4] = {alo, blo, ahi, bhi};
        mma_k32(a, bw.x, bw.y, c);
        const float fa = fmaf((float)c[0], dw.a0, (float)c[1] * dw.a1);
        const float fb = fmaf((float)c[2], dw.b0, (float)c[3] * dw.b1);
        float dla, mza, dlb, mzb;
        m_scales<F>(ra, 0, dla, mza);
        m_scales<F>(rb, 0, dlb, mzb);
        acc = fmaf(fa, dla * ya.s, acc);
        acc = fmaf(fb, dlb * yb.s, acc);
        if (QTraits<F>::MIN || mma_zero<F>() != 0) {  // Q8_0: neither
            acc = fmaf(-mza * ya.sum, min_a, acc);
            acc = fmaf(-mzb * yb.sum, min_b, acc);
        }
    } else {  // Q6_K: per-16 sub-scales, combined in int32 before the conversion
        int c0[4] = {0, 0, 0, 0}, c1[4] = {0, 0, 0, 0};
        mma_k16(alo, blo, bw.x, c0);
        mma_k16(ahi, bhi, bw.y, c1);
        const int sa0 = q6_sub(ra.s, 0), sa1 = q6_sub(ra.s, 1), sb0 = q6_sub(rb.s, 0), sb1 = q6_sub(rb.s, 1);
        const float ia0 = (float)(sa0 * c0[0] + sa1 * c1[0]), ia1 = (float)(sa0 * c0[1] + sa1 * c1[1]);
        const float ib0 = (float)(sb0 * c0[2] + sb1 * c1[2]), ib1 = (float)(sb0 * c0[3] + sb1 * c1[3]);
        const float fa = fmaf(ia0, dw.a0, ia1 * dw.a1), fb = fmaf(ib0, dw.b0, ib1 * dw.b1);
        const float da = half_lo(ra.u), db = half_lo(rb.u);
        constexpr float z = (float)mma_zero<F>();
        acc = fmaf(fa, da * ya.s, acc);
        acc = fmaf(fb, db * yb.s, acc);
        // sum_h d sc_h (q - z) x' -> minus d z sum_h sc_h sum_h(x')
        acc = fmaf(-(da * z) * fmaf((float)sa0, ya.sum0, (float)sa1 * (ya.sum - ya.sum0)), min_a, acc);
        acc = fmaf(-(db * z) * fmaf((float)sb0, yb.sum0, (float)sb1 * (yb.sum - yb.sum0)), min_b, acc);
    }
}

// The absolute W row of tile row gq of tile `tile` (valid: inside the matrix).
template <int EPI>
QA_DEVICE int tile_row(int tile, int gq, int n, int head_dim, bool& valid) {
    if (EPI == EPI_STORE) {
        const int j = tile * MMA_TILE + gq;
        valid = j < n;
        return valid ? j : n - 1;
    }
    int u = tile * (MMA_TILE / 2) + (gq & 3);
    valid = u < n / 2;
    if (!valid) u = n / 2 - 1;
    int j0, j1;
    unit_rows<EPI>(u, n, head_dim, j0, j1);
    return gq < 4 ? j0 : j1;
}

// Groups per step of a warp (SG): QMMA_STEP_GROUPS (4: two MMAs' worth, pairs (g, g + 1) and
// (g + 2, g + 3)) for most pairs, or a whole super-block (8: four pairs) for the k-quant pairs,
// whose rows are whole super-blocks (k % 256 == 0): one cursor advance, one set of copies and one
// wait per 2,048 weights instead of 1,024 (the step's bookkeeping was ~85 of its ~195
// instructions, experiments/LOG.md, thirteenth session). The host takes only rows with a
// multiple of SG groups, so a step is wholly inside a row (and, for SG = 8, one super-block).
constexpr int STEP_GROUPS = QMMA_STEP_GROUPS;
static_assert(STEP_GROUPS == 4, "a step is two pairs");
constexpr int WIDE_STEP_GROUPS = 2 * STEP_GROUPS;  // a super-block

template <int FA, int FB>
__host__ __device__ constexpr int step_groups_of() {
    return QTraits<FA>::SUP != 0 && QTraits<FB>::SUP != 0 ? WIDE_STEP_GROUPS : STEP_GROUPS;
}

// ---- the weight pipeline: cp.async into a per-warp ring, QMMA_STAGES steps deep ----------------
// A step's weights are, per tile row, a few contiguous runs (qs: 64 or 128 bytes; qh, sc, sup: a
// few words). The quad of lanes owning row gq copies that row's runs with 16-byte cp.async (the
// qs and qh runs split over the four lanes, sc and sup by lane tq = 0), so each copy instruction
// moves whole sectors; the lanes then read their MMA fragments (4-byte words of SG groups)
// from shared memory. Rows sit at padded strides so the quad's reads hit distinct banks. The
// copies hold no registers: a warp keeps STG - 1 steps in flight while it computes one (STG:
// QMMA_STAGES, the wide stores QMMA_WIDE_STAGES);
// only a quad shares a row, so a __syncwarp after each lane's own wait makes a stage readable.
constexpr int STAGES = QMMA_STAGES;
constexpr int STAGE_BYTES = 4 * QMMA_RING_WORDS * 32;  // per warp and stage

template <int N>
QA_DEVICE void cp_async_sz(void* dst, const void* src) {
    const unsigned d = static_cast<unsigned>(__cvta_generic_to_shared(dst));
    if (N == 16) {
        asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(d), "l"(src) : "memory");
    } else {
        asm volatile("cp.async.ca.shared.global [%0], [%1], %2;" ::"r"(d), "l"(src), "n"(N) : "memory");
    }
}

// A stage's layout for format F and SG groups per step: per tile row, its qs run (padded), qh
// run, sc run, sup word.
template <int F, int SG>
struct StageLayout {
    using T = QTraits<F>;
    static constexpr int QS_RUN = T::QS * SG;                           // 64 or 128
    static constexpr int QS_ROW = QS_RUN + 16;                          // 20 or 36 words: distinct banks
    static constexpr int QH_RUN = T::QH * SG;                           // 0, 16, 32 or 64
    // Row strides of 4, 12 or 20 words: the eight rows' words in distinct banks.
    static constexpr int QH_ROW = QH_RUN == 32 ? 48 : (QH_RUN == 64 ? 80 : QH_RUN);
    static constexpr int SC_RUN = T::SC * SG;                           // 8 or 16
    static constexpr int QH0 = MMA_TILE * QS_ROW, SC0 = QH0 + MMA_TILE * QH_ROW, SUP0 = SC0 + MMA_TILE * SC_RUN;
    static_assert(QS_RUN % 64 == 0 && QH_RUN % 16 == 0 && QH_RUN <= 64 && SC_RUN <= 16, "the copies below");
    static_assert(SUP0 + MMA_TILE * 4 <= STAGE_BYTES, "a step fits a stage");
};


// Copies step g0 (groups g0..g0+SG-1) of the lane's tile row (rp, local row lr) into the stage:
// the quad's lanes split the qs run and the qh run into 16-byte pieces; lane 0 copies sc and sup.
template <int F, int SG>
QA_DEVICE void issue_step(uint8_t* stage, const RowPlanes& rp, int g0, int lr, int S, int gq, int tq) {
    using T = QTraits<F>;
    using L = StageLayout<F, SG>;
    const uint8_t* qs = rp.qs + (size_t)g0 * T::QS;
    uint8_t* row = stage + gq * L::QS_ROW;
#pragma unroll
    for (int c = 0; c < L::QS_RUN / 64; ++c) cp_async_sz<16>(row + 64 * c + 16 * tq, qs + 64 * c + 16 * tq);
    if (L::QH_RUN >= 16 && tq < L::QH_RUN / 16) {
        cp_async_sz<16>(stage + L::QH0 + gq * L::QH_ROW + 16 * tq, rp.qh + (size_t)g0 * T::QH + 16 * tq);
    }
    if (tq != 0) return;
    cp_async_sz<L::SC_RUN>(stage + L::SC0 + gq * L::SC_RUN, rp.sc + (size_t)g0 * T::SC);
    if (T::SUP) {
        // The sup entry of super-block g0 / 8, from its aligned word (2-byte entries: either half).
        const size_t e = (size_t)lr * S + (g0 >> 3);
        const uint8_t* plane = rp.sup - (size_t)lr * S * T::SUP;
        cp_async_sz<4>(stage + L::SUP0 + gq * 4, plane + ((e * T::SUP) & ~(size_t)3));
    }
}

// Reads the lane's fragments of a completed stage: words tq (and 4 + tq for Q8_0) of each group's
// qs, and the row's qh, sc and sup.
template <int F, int SG>
QA_DEVICE void read_step(const uint8_t* stage, int lr, int g0, int S, int gq, int tq, MRaw (&r)[SG]) {
    using T = QTraits<F>;
    using L = StageLayout<F, SG>;
    const uint32_t* qs = reinterpret_cast<const uint32_t*>(stage + gq * L::QS_ROW);
    const uint32_t* qh = reinterpret_cast<const uint32_t*>(stage + L::QH0 + gq * L::QH_ROW);
    const uint32_t* sc = reinterpret_cast<const uint32_t*>(stage + L::SC0 + gq * L::SC_RUN);
    uint32_t sup = 0u;
    if (T::SUP) {
        sup = *reinterpret_cast<const uint32_t*>(stage + L::SUP0 + gq * 4);
        if (T::SUP == 2 && ((((size_t)lr * S + (g0 >> 3)) & 1) != 0)) sup >>= 16;
    }
#pragma unroll
    for (int i = 0; i < SG; ++i) {
        r[i].w0 = qs[i * (T::QS / 4) + tq];
        r[i].w1 = T::QS == 32 ? qs[i * 8 + 4 + tq] : 0u;
        r[i].h0 = T::QH == 4 ? qh[i] : (T::QH == 8 ? qh[2 * i] : 0u);
        r[i].h1 = T::QH == 8 ? qh[2 * i + 1] : 0u;
        if (T::SC == 4) {
            r[i].s = sc[i];
        } else {
            const uint32_t w = sc[i >> 1];
            r[i].s = (i & 1) ? w >> 16 : w & 0xFFFFu;
        }
        r[i].u = T::SUP == 2 ? (sup & 0xFFFFu) : sup;
    }
}

// A position in a warp's work: the team's tiles in turn (first, first + stride, ...), each `spt`
// steps; step s of a tile is groups SG (s wpt + sub) ... (past k: nothing to do). The
// tile row's planes are resolved when the cursor enters a tile, not per step.
struct Cursor {
    int tile, s;
    bool fa;       // the tile's format is FA (else FB)
    int lr;        // the lane's local row in its part
    RowPlanes rp;  // and its planes (format of the tile)
};

template <int EPI, int FA, int FB>
QA_DEVICE void cursor_enter(Cursor& c, const QParts& P, int ntiles, int n, int head_dim, int G, int S, int gq) {
    c.s = 0;
    if (c.tile >= ntiles) return;
    bool valid;
    const int j = tile_row<EPI>(c.tile, gq, n, head_dim, valid);
    const int p = part_of(P, j);
    c.lr = j - part_row0(P, p);
    c.fa = FA == FB || pick(P.fmt, p) == FA;  // one format per tile (qmma::qmma_kernel)
    c.rp = c.fa ? row_planes<FA>(P, p, c.lr, G, S) : row_planes<FB>(P, p, c.lr, G, S);
}

template <int EPI, int FA, int FB>
QA_DEVICE void cursor_next(Cursor& c, const QParts& P, int spt, int tile_stride, int ntiles, int n, int head_dim,
                           int G, int S, int gq) {
    if (++c.s < spt) return;
    c.tile += tile_stride;
    cursor_enter<EPI, FA, FB>(c, P, ntiles, n, head_dim, G, S, gq);
}

// Starts the copies of the cursor's step into a ring stage slot (nothing past the work or
// past k) and commits a group either way, so that cp.async.wait_group counts steps.
template <int FA, int FB, int SG>
QA_DEVICE void issue_at(const Cursor& c, uint8_t* stage, int g0, bool live, int S, int gq, int tq) {
    if (live) {
        if (c.fa) {
            issue_step<FA, SG>(stage, c.rp, g0, c.lr, S, gq, tq);
        } else {
            issue_step<FB, SG>(stage, c.rp, g0, c.lr, S, gq, tq);
        }
    }
    cp_async_commit();
}

// The lane's B words for the pair (ga, ga + 1) (columns 0-2: ga's digits, 3-5: ga + 1's; 6, 7
// zero) and the MMA step on it.
template <int F>
QA_DEVICE void m_pair(const MRaw& ra, const MRaw& rb, int ga, int gq, int tq, const uint8_t* xd, const XGroup* xg,
                      const DigitWeights& dw, float& acc) {
    uint2 bw = make_uint2(0u, 0u);
    if (gq < 6) bw = *reinterpret_cast<const uint2*>(xd + 96 * (gq < 3 ? ga : ga + 1) + (gq % 3) * 32 + 8 * tq);
    m_step<F>(ra, rb, bw, xg[ga], xg[ga + 1], tq, dw, acc);
}

// A whole super-block of a k-quant row (SG = 8), with x's digits on one scale for the super-block
// (prep_rounds' SB_SCALE): the integer sub-scales multiply the MMA sums in int32 across all eight
// groups, and the f32 arithmetic -- digit weights, d, x's scale, the min or zero-point term -- runs
// once per super-block instead of once per group (the per-pair path spent ~43 instructions per
// two groups on it: experiments/LOG.md, twenty-second session). Bounds: |C| <= 31 * 128 * 32
// (Q5_K) or 63 * 128 * 16 per half (Q6_K), times sub-scales <= 63 or 128, over 8 groups: < 2^28.
template <int F>
QA_DEVICE void consume_superblock(const MRaw (&r)[WIDE_STEP_GROUPS], int g0, int gq, int tq, const uint8_t* xd,
                                  const XGroup* xg, const DigitWeights& dw, float& acc) {
    using T = QTraits<F>;
    int ia[4] = {0, 0, 0, 0};
    float msum = 0.0f;  // sum_g m_g sum(x'_g) (Q4_K, Q5_K) or sum_h sc_h sum(x'_h) (Q6_K)
#pragma unroll
    for (int i = 0; i < WIDE_STEP_GROUPS; i += 2) {
        const int ga = g0 + i;
        uint2 bw = make_uint2(0u, 0u);
        if (gq < 6) bw = *reinterpret_cast<const uint2*>(xd + 96 * (gq < 3 ? ga : ga + 1) + (gq % 3) * 32 + 8 * tq);
        const XGroup ya = xg[ga], yb = xg[ga + 1];
        uint32_t alo, ahi, blo, bhi;
        m_codes<F>(r[i], tq, alo, ahi);
        m_codes<F>(r[i + 1], tq, blo, bhi);
        if (!T::HALVES) {  // Q4_K, Q5_K: sc byte 0 the sub-scale, byte 1 the min
            int c[4] = {0, 0, 0, 0};
            const uint32_t a[4] = {alo, blo, ahi, bhi};
            mma_k32(a, bw.x, bw.y, c);
            const int sa = (int)(r[i].s & 0xFFu), sb = (int)(r[i + 1].s & 0xFFu);
            ia[0] += sa * c[0];
            ia[1] += sa * c[1];
            ia[2] += sb * c[2];
            ia[3] += sb * c[3];
            msum = fmaf((float)((r[i].s >> 8) & 0xFFu), ya.sum, msum);
            msum = fmaf((float)((r[i + 1].s >> 8) & 0xFFu), yb.sum, msum);
        } else {  // Q6_K: signed sub-scales per 16
            int c0[4] = {0, 0, 0, 0}, c1[4] = {0, 0, 0, 0};
            mma_k16(alo, blo, bw.x, c0);
            mma_k16(ahi, bhi, bw.y, c1);
            const int sa0 = q6_sub(r[i].s, 0), sa1 = q6_sub(r[i].s, 1);
            const int sb0 = q6_sub(r[i + 1].s, 0), sb1 = q6_sub(r[i + 1].s, 1);
            ia[0] += sa0 * c0[0] + sa1 * c1[0];
            ia[1] += sa0 * c0[1] + sa1 * c1[1];
            ia[2] += sb0 * c0[2] + sb1 * c1[2];
            ia[3] += sb0 * c0[3] + sb1 * c1[3];
            msum = fmaf((float)sa0, ya.sum0, fmaf((float)sa1, ya.sum - ya.sum0, msum));
            msum = fmaf((float)sb0, yb.sum0, fmaf((float)sb1, yb.sum - yb.sum0, msum));
        }
    }
    // Lane tq's C slots: digit weights (zero for the slots that are not its tile row's), then
    // d and x's super-block scale; the min / zero-point term once per quad (lane tq = 0).
    const float f = fmaf((float)ia[0], dw.a0, fmaf((float)ia[1], dw.a1, fmaf((float)ia[2], dw.b0, (float)ia[3] * dw.b1)));
    const float d = half_lo(r[0].u);
    acc = fmaf(f, d * xg[g0].s, acc);
    const float mz = T::HALVES ? d * (float)mma_zero<F>() : half_hi(r[0].u);
    if (tq == 0) acc = fmaf(-mz, msum, acc);
}

// SB: x's digits are on one scale per super-block (SG = 8 only), and the step takes the
// super-block path.
template <int F, int SG, bool SB>
QA_DEVICE void consume_step(const uint8_t* stage, int lr, int g0, int S, int gq, int tq, const uint8_t* xd,
                            const XGroup* xg, const DigitWeights& dw, float& acc) {
    static_assert(!SB || SG == WIDE_STEP_GROUPS, "the super-block path steps whole super-blocks");
    MRaw r[SG];
    read_step<F, SG>(stage, lr, g0, S, gq, tq, r);
    if constexpr (SB) {
        consume_superblock<F>(r, g0, gq, tq, xd, xg, dw, acc);
    } else {
#pragma unroll
        for (int i = 0; i < SG; i += 2) m_pair<F>(r[i], r[i + 1], g0 + i, gq, tq, xd, xg, dw, acc);
    }
}

}  // namespace

// WARPS: the block's warps, GEMV_WARPS, or QMMA_WIDE_WARPS for the wide store entry points (few
// tiles with long rows -- down_proj -- whose tiles want more than GEMV_WARPS warps each: the
// x digits in fewer rounds and each warp's chain of steps shorter, launch::qmma_gemv).
// ARGMAX (store only: the LM head's entry points, gemv_m_store_argmax_*): each stored value's
// argmax_key is kept per lane, and the block's largest goes to *best with one atomicMax at the
// end -- the greedy argmax without a launch of its own (the caller zeroes *best first). (`best`
// is a parameter of its own rather than a GemvOut field: a wider GemvOut changed the machine code
// of five k-quant RoPE kernels.)
template <int EPI, int FA, int FB, int WARPS, bool ARGMAX = false, int STG = STAGES>
__device__ void gemv_m_impl(const int* __restrict__ state, const float* __restrict__ x, const float* __restrict__ norm_w,
                            float eps, const QParts& P, int n, int k, int wpt, int last_row, const GemvOut& o,
                            unsigned long long* best_key = nullptr) {
    extern __shared__ __align__(16) uint8_t smem[];
    __shared__ float red[WARPS][MMA_TILE];
    __shared__ float scratch[32];
    const int G = k >> 5, S = k >> 8;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    uint8_t* ring = smem + warp * STG * STAGE_BYTES;
    uint8_t* xd = smem + WARPS * STG * STAGE_BYTES;
    XGroup* xg = reinterpret_cast<XGroup*>(xd + 96 * G);
    const int gq = lane >> 2, tq = lane & 3;
    const int teams = WARPS / wpt, team = warp / wpt, sub = warp % wpt;
    const int units = EPI == EPI_STORE ? n : n / 2;
    const int per_tile = EPI == EPI_STORE ? MMA_TILE : MMA_TILE / 2;
    const int ntiles = (units + per_tile - 1) / per_tile;
    constexpr int SG = step_groups_of<FA, FB>();
    const int spt = (G + SG * wpt - 1) / (SG * wpt);  // steps per tile, every warp
    const int first_tile = blockIdx.x * teams + team, tile_stride = gridDim.x * teams;
    const int step_groups = SG * wpt, g_sub = SG * sub;

    // Weights are constants: the first steps stream in while the previous kernel finishes. `in`
    // runs STG - 1 steps ahead of `at`. (Filling all STG slots before the PDL wait, and
    // stages sized per format so that Q5_0 keeps 8 steps in flight, was slower: 624 against
    // 604 us per step, experiments/LOG.md, eleventh session.)
    Cursor in{first_tile, 0, true, 0, RowPlanes{}};
    cursor_enter<EPI, FA, FB>(in, P, ntiles, n, o.head_dim, G, S, gq);
    Cursor at = in;
    int issued = 0;
#pragma unroll
    for (int q = 0; q < STG - 1; ++q, ++issued) {
        const int g0 = in.s * step_groups + g_sub;
        issue_at<FA, FB, SG>(in, ring + (issued % STG) * STAGE_BYTES, g0, in.tile < ntiles && g0 < G, S, gq, tq);
        cursor_next<EPI, FA, FB>(in, P, spt, tile_stride, ntiles, n, o.head_dim, G, S, gq);
    }
    // The run state is written by the host before the launch (common.cuh): read before the wait,
    // so that the x loads below follow the wait by one L2 round trip, not two.
    const int n_tokens = state_n_tokens(state);
    const int r = last_row ? n_tokens - 1 : (int)blockIdx.y;
    // The epilogue's inputs for the warp's first tile (most launches give a team one tile), so
    // that their loads are not a round trip at the tile's end: the constants (RoPE: bias pair,
    // sine and cosine) before the wait, the residual (store) right after the digits.
    EpiIn first_in{0.0f, 0.0f, 0.0f, 0.0f, 1.0f};
    bool first_valid;
    const int first_j = tile_row<EPI>(first_tile, gq, n, o.head_dim, first_valid);
    const bool epi_lane = sub == 0 && tq == 0 && first_tile < ntiles && first_valid && r < n_tokens && r >= 0;
    if (EPI == EPI_ROPE && epi_lane && gq < 4) {
        int j0, j1;
        unit_rows<EPI>(first_tile * (MMA_TILE / 2) + gq, n, o.head_dim, j0, j1);
        epi_load_consts<EPI>(o, state, r, j0, j1, first_in);
    }
    pdl_prologue();  // activations (x, residual) are safe to read from here on
    if (r >= n_tokens || r < 0) {  // uniform per block: before any barrier
        cp_async_wait<0>();
        return;
    }
    // The super-block path (consume_superblock) in the GEMV_WARPS kernels only: in the wide store
    // (0.5B down_proj, then two steps per warp of 16) its longer integer chains cost more than its
    // saved instructions (+9.8 us per step at 0.5B shapes; experiments/LOG.md, twenty-second
    // session). Not re-measured at one step per warp (20 warps).
    constexpr bool SB = SG == WIDE_STEP_GROUPS && WARPS == GEMV_WARPS;
    const float inv = prep_x_digits<SG == WIDE_STEP_GROUPS || WARPS != GEMV_WARPS, SB, WARPS>(x, norm_w, eps, r, k, xd, xg,
                                                                                          scratch);
    if (EPI == EPI_STORE && epi_lane) epi_load_acts<EPI>(o, r, n, first_j, first_in);
    const DigitWeights dw = digit_weights(tq);

    float acc = 0.0f;
    unsigned long long best = 0;  // ARGMAX: the lane's best key so far
    for (int q = 0; at.tile < ntiles; ++q, ++issued) {
        {
            const int g0 = in.s * step_groups + g_sub;
            issue_at<FA, FB, SG>(in, ring + (issued % STG) * STAGE_BYTES, g0, in.tile < ntiles && g0 < G, S, gq, tq);
            cursor_next<EPI, FA, FB>(in, P, spt, tile_stride, ntiles, n, o.head_dim, G, S, gq);
        }
        cp_async_wait<STG - 1>();  // this lane's copies of step q are in;
        __syncwarp();                 // and every lane's
        const int g0 = at.s * step_groups + g_sub;
        if (g0 < G) {
            const uint8_t* stage = ring + (q % STG) * STAGE_BYTES;
            if (at.fa) {
                consume_step<FA, SG, SB>(stage, at.lr, g0, S, gq, tq, xd, xg, dw, acc);
            } else {
                consume_step<FB, SG, SB>(stage, at.lr, g0, S, gq, tq, xd, xg, dw, acc);
            }
        }
        if (at.s == spt - 1) {
            // The tile is done: add up the quad's lanes, then the team's warps.
            acc += __shfl_xor_sync(0xffffffffu, acc, 1);
            acc += __shfl_xor_sync(0xffffffffu, acc, 2);
            if (wpt > 1) {
                if (tq == 0) red[warp][gq] = acc;
                asm volatile("bar.sync %0, %1;" ::"r"(1 + team), "r"(wpt * 32) : "memory");
                if (sub == 0) {
                    acc = 0.0f;
                    for (int w = 0; w < wpt; ++w) acc += red[team * wpt + w][gq];
                }
                asm volatile("bar.sync %0, %1;" ::"r"(1 + team), "r"(wpt * 32) : "memory");
            }
            // Tile row gq's product is in lane 4 gq of the team's first warp; the paired
            // epilogues take a unit's second row (tile row gq + 4) from lane 4 gq + 16.
            const float y0 = acc, y1 = __shfl_sync(0xffffffffu, acc, (lane + 16) & 31);
            acc = 0.0f;
            bool valid;
            const int j = tile_row<EPI>(at.tile, gq, n, o.head_dim, valid);
            if (sub == 0 && tq == 0 && valid) {
                const bool pre = at.tile == first_tile;  // first_in holds this tile's inputs
                EpiIn ein = first_in;
                if (EPI == EPI_STORE) {
                    if (!pre) epi_load_acts<EPI>(o, r, n, j, ein);
                    gemv_epilogue<EPI>(o, state, r, n, j, j, j, y0 * inv, 0.0f, ein);
                    // The value just stored (the argmax entries have no residual).
                    if constexpr (ARGMAX) best = key_max(best, argmax_key(y0 * inv, j));
                } else if (gq < 4) {
                    const int u = at.tile * (MMA_TILE / 2) + gq;
                    int j0, j1;
                    unit_rows<EPI>(u, n, o.head_dim, j0, j1);
                    if (!pre) epi_load_consts<EPI>(o, state, r, j0, j1, ein);
                    gemv_epilogue<EPI>(o, state, r, n, u, j0, j1, y0 * inv, y1 * inv, ein);
                }
            }
        }
        cursor_next<EPI, FA, FB>(at, P, spt, tile_stride, ntiles, n, o.head_dim, G, S, gq);
    }
    if constexpr (ARGMAX) argmax_key_to<WARPS * 32>(best, best_key);
    cp_async_wait<0>();
}

// The entry points of one format pair: QMMA_ENTRIES(FA, FB, suffix, MINB), MINB the blocks per SM
// that their registers must allow (__launch_bounds__): 2 for most pairs (three fit anyway, at 76
// registers; asking for three cost ~50 more instructions per step in rematerialisation), 3 for
// the k-quant pairs, whose super-block steps otherwise take 86-88 registers and leave two blocks
// (16 warps) per SM for wide launches such as a Q6_K LM head (at three: 77-80, no spills). The
// wide store (gemv_m_store_wide_*) runs QMMA_WIDE_WARPS warps in one block per SM, for stores
// whose few tiles want more than GEMV_WARPS warps each (qmma::wide_store).
// Its registers are capped (QMMA_WIDE_MAX_REGS) and its ring is QMMA_WIDE_STAGES deep, so that a
// block of the next kernel fits beside it and starts under PDL (kernel_constants.rs).
#define QMMA_ENTRIES(FA, FB, SFX, MINB)                                                                                    \
    extern "C" __global__ void __launch_bounds__(256, MINB) gemv_m_store_##SFX(                                        \
        const int* __restrict__ state, const float* __restrict__ x, const float* __restrict__ norm_w, float eps,     \
        const QParts P, float* __restrict__ out, const float* __restrict__ residual, int n, int k, int wpt,          \
        int last_row) {                                                                                              \
        const GemvOut o{out, residual, nullptr, nullptr, nullptr, nullptr, 0, 0, 0};                                 \
        gemv_m_impl<EPI_STORE, FA, FB, GEMV_WARPS>(state, x, norm_w, eps, P, n, k, wpt, last_row, o);                            \
    }                                                                                                                \
    extern "C" __global__ void __maxnreg__(QMMA_WIDE_MAX_REGS) gemv_m_store_wide_##SFX(                          \
        const int* __restrict__ state, const float* __restrict__ x, const float* __restrict__ norm_w, float eps,     \
        const QParts P, float* __restrict__ out, const float* __restrict__ residual, int n, int k, int wpt,          \
        int last_row) {                                                                                              \
        const GemvOut o{out, residual, nullptr, nullptr, nullptr, nullptr, 0, 0, 0};                                 \
        gemv_m_impl<EPI_STORE, FA, FB, QMMA_WIDE_WARPS, false, QMMA_WIDE_STAGES>(state, x, norm_w, eps, P, n, k, wpt, \
                                                                          last_row, o);                        \
    }                                                                                                                \
    extern "C" __global__ void __launch_bounds__(256, MINB) gemv_m_swiglu_##SFX(                                       \
        const int* __restrict__ state, const float* __restrict__ x, const float* __restrict__ norm_w, float eps,     \
        const QParts P, float* __restrict__ out, int ffn, int k, int wpt) {                                          \
        const GemvOut o{out, nullptr, nullptr, nullptr, nullptr, nullptr, 0, 0, 0};                                  \
        gemv_m_impl<EPI_SWIGLU, FA, FB, GEMV_WARPS>(state, x, norm_w, eps, P, 2 * ffn, k, wpt, 0, o);                            \
    }                                                                                                                \
    extern "C" __global__ void __launch_bounds__(256, MINB) gemv_m_rope_##SFX(                                         \
        const int* __restrict__ state, const float* __restrict__ x, const float* __restrict__ norm_w, float eps,     \
        const QParts P, const float* __restrict__ bias, const float* __restrict__ inv_freq,                          \
        float* __restrict__ q_out, float* __restrict__ k_cache, __half* __restrict__ v_cache, int n_heads,          \
        int n_kv_heads, int head_dim, int k, int wpt) {                                                              \
        const GemvOut o{q_out, nullptr, bias, inv_freq, k_cache, v_cache, n_heads, n_kv_heads, head_dim};             \
        gemv_m_impl<EPI_ROPE, FA, FB, GEMV_WARPS>(state, x, norm_w, eps, P, (n_heads + 2 * n_kv_heads) * head_dim, k, wpt, 0,    \
                                      o);                                                                            \
    }

// The LM head's store with the greedy argmax as its epilogue (ARGMAX above), for the formats a
// whole matrix can have: gemv_m_store_* without the residual, plus `best` (unsigned long long [1],
// zeroed before the launch).
#define QMMA_ARGMAX_ENTRY(F, SFX, MINB)                                                                                \
    extern "C" __global__ void __launch_bounds__(256, MINB) gemv_m_store_argmax_##SFX(                                \
        const int* __restrict__ state, const float* __restrict__ x, const float* __restrict__ norm_w, float eps,     \
        const QParts P, float* __restrict__ out, int n, int k, int wpt, int last_row,                                \
        unsigned long long* __restrict__ best) {                                                                     \
        const GemvOut o{out, nullptr, nullptr, nullptr, nullptr, nullptr, 0, 0, 0};                                  \
        gemv_m_impl<EPI_STORE, F, F, GEMV_WARPS, true>(state, x, norm_w, eps, P, n, k, wpt, last_row, o, best);       \
    }

// Keep in step with launch::QMMA_KERNELS (a test compares the two lists).
QMMA_ENTRIES(QF_Q4_0, QF_Q4_0, q4_0, 2)
QMMA_ENTRIES(QF_Q4_1, QF_Q4_1, q4_1, 2)
QMMA_ENTRIES(QF_Q5_0, QF_Q5_0, q5_0, 2)
QMMA_ENTRIES(QF_Q5_1, QF_Q5_1, q5_1, 2)
QMMA_ENTRIES(QF_Q8_0, QF_Q8_0, q8_0, 2)
QMMA_ENTRIES(QF_Q4_K, QF_Q4_K, q4_k, 3)
QMMA_ENTRIES(QF_Q5_K, QF_Q5_K, q5_k, 3)
QMMA_ENTRIES(QF_Q6_K, QF_Q6_K, q6_k, 3)
QMMA_ENTRIES(QF_Q4_0, QF_Q8_0, q4_0_q8_0, 2)
QMMA_ENTRIES(QF_Q4_1, QF_Q8_0, q4_1_q8_0, 2)
QMMA_ENTRIES(QF_Q5_0, QF_Q8_0, q5_0_q8_0, 2)
QMMA_ENTRIES(QF_Q5_1, QF_Q8_0, q5_1_q8_0, 2)
QMMA_ENTRIES(QF_Q4_K, QF_Q6_K, q4_k_q6_k, 3)
QMMA_ENTRIES(QF_Q5_K, QF_Q6_K, q5_k_q6_k, 3)
#undef QMMA_ENTRIES

// Keep in step with qmma::QMMA_ARGMAX_KERNELS (a test compares the two lists).
QMMA_ARGMAX_ENTRY(QF_Q4_0, q4_0, 2)
QMMA_ARGMAX_ENTRY(QF_Q4_1, q4_1, 2)
QMMA_ARGMAX_ENTRY(QF_Q5_0, q5_0, 2)
QMMA_ARGMAX_ENTRY(QF_Q5_1, q5_1, 2)
QMMA_ARGMAX_ENTRY(QF_Q8_0, q8_0, 2)
QMMA_ARGMAX_ENTRY(QF_Q4_K, q4_k, 3)
QMMA_ARGMAX_ENTRY(QF_Q5_K, q5_k, 3)
QMMA_ARGMAX_ENTRY(QF_Q6_K, q6_k, 3)
#undef QMMA_ARGMAX_ENTRY
