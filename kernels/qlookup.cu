// Lookups on quantized weights (the canonical layout of quant.cuh):
// 1. dequant_q_f16 -- rows [row_begin, row_begin + rows) of a weight to f16 [rows, k] in scratch,
//    for the prefill GEMM (cuBLAS on f16 tensor cores): a block stages a chunk of groups in
//    shared memory, then four threads per group write eight elements each, so a warp writes 512
//    contiguous bytes; bit-exact values rounded once to f16 (as the f16 plan stores them).
//    dequant_q_f16_x4: up to four whole weights in one launch.
// 2. embed_q -- out[t, :] = W[tokens[t], :] in f32, one thread per group; bit-exact with the CPU.
#include "quant.cuh"

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

// ---- staged dequantisation: out [rows, k] f16 = rows row_begin.. of W --------------------------
// A block takes DQ_CHUNK consecutive groups of one part (the part-local group index gi = lr * G + g
// runs across rows, and so does each plane), copies their planes into shared memory with 16-byte
// cp.async -- every byte of the chunk in flight at once, no registers held, the format resolved
// once per block -- then turns them into f16 from there: thread i writes elements 8i..8i+7 of the
// chunk (group i / 4, quarter i % 4), so a warp stores 512 contiguous bytes. (The earlier kernel
// took one item per thread straight from global memory: ~150 instructions per item, a 64-bit
// division, a format switch per item, and four dependent loads per item in flight, ≈ 1-1.5 TB/s.)
// Blocks: per part of the row range, ceil(groups / DQ_CHUNK); dq_blocks bounds their sum (the
// launch's grid), and a block past the last chunk has nothing to do.
// DQ_CHUNK (groups per block) and DQ_THREADS: generated_constants.cuh.

// Blocks of a launch over `rows` rows of k columns: one per DQ_CHUNK groups, plus one per part
// boundary inside the range (QA_MAX_PARTS - 1 at most). Mirrored by launch::dequant_blocks.
QA_DEVICE int dq_blocks(int rows, int k) {
    return rows > 0 ? (rows * (k >> 5) + DQ_CHUNK - 1) / DQ_CHUNK + (QA_MAX_PARTS - 1) : 0;
}

// A block's share: groups [gi0, gi0 + ng) of part p (part-local), written from element `out` of
// the output.
struct DqChunk {
    int p, gi0, ng;
    size_t out;
};

// Chunk b of rows [row_begin, row_begin + rows): the parts' overlaps with the range in order, each
// cut into DQ_CHUNK-group chunks. ng == 0: past the last one.
QA_DEVICE DqChunk dq_chunk(const QParts& P, int row_begin, int rows, int k, int b) {
    const int G = k >> 5;
#pragma unroll
    for (int p = 0; p < QA_MAX_PARTS; ++p) {
        const int r0 = part_row0(P, p);
        const int lo = max(row_begin, r0), hi = min(row_begin + rows, pick(P.row_end, p));
        const int groups = hi > lo ? (hi - lo) * G : 0;
        const int nb = (groups + DQ_CHUNK - 1) / DQ_CHUNK;
        if (b < nb) {
            const int first = b * DQ_CHUNK;
            return DqChunk{p, (lo - r0) * G + first, min(DQ_CHUNK, groups - first),
                           ((size_t)(lo - row_begin) * G + first) * 32};
        }
        b -= nb;
    }
    return DqChunk{0, 0, 0, 0};
}

// Copies plane bytes [begin, end) into dst with 16-byte cp.async, from the 16-byte boundary at or
// below `begin` (planes start 256-byte aligned and end padded to it, so the rounded range stays
// inside the plane's allocation); returns where byte `begin` landed. Every thread calls it.
QA_DEVICE const uint8_t* dq_stage(uint8_t* dst, const uint8_t* plane, size_t begin, size_t end) {
    const size_t a = begin & ~(size_t)15;
    const int chunks = (int)((end - a + 15) >> 4);
    for (int i = threadIdx.x; i < chunks; i += DQ_THREADS) {
        const unsigned d = static_cast<unsigned>(__cvta_generic_to_shared(dst + 16 * i));
        asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(d), "l"(plane + a + 16 * i) : "memory");
    }
    return dst + (begin - a);
}

// Shared memory of a chunk, sized for the widest planes (Q8_0's qs, Q6_K's qh, 4-byte sc and sup;
// a chunk may start inside a super-block, so one more sup entry) plus 32 bytes each for dq_stage's
// rounding (down at the start, up at the end: < 16 bytes each); 16-byte aligned, so a staged byte
// keeps its address modulo 16 and the vector loads below stay aligned.
constexpr int DQ_SLACK = 32;
struct DqStage {
    uint8_t qs[DQ_CHUNK * 32 + DQ_SLACK], qh[DQ_CHUNK * 8 + DQ_SLACK], sc[DQ_CHUNK * 4 + DQ_SLACK],
        sup[(DQ_CHUNK / 8 + 1) * 4 + DQ_SLACK];
};

// Quarter Q (elements 8 Q .. 8 Q + 7) of group g of a staged chunk (s: the index of its
// super-block among the staged ones), as a QRaw whose chunks 0 and 1 are the group's chunks 2 Q and
// 2 Q + 1 (quant.cuh's layouts): only the quarter's bytes are read, at offsets and shifts that
// depend on Q, so that q_dequant_chunk runs on constant chunk indices (a run-time chunk index
// selected among the code words through the stack), and a warp's lanes, of all four quarters,
// take the same path.
template <int F>
QA_DEVICE void q_load_quarter(const uint8_t* qs, const uint8_t* qh, const uint8_t* sc, const uint8_t* sup, int g, int s,
                              int Q, QRaw& r) {
    using T = QTraits<F>;
    const int hi = Q >> 1;  // 1: elements 16..31, the second half (its nibbles, qh word, scales)
    r.q1 = make_uint4(0u, 0u, 0u, 0u);
    r.h = make_uint2(0u, 0u);
    if (T::QS == 8) {  // 2-bit: byte e % 8, bits 2 (e / 8): both words, shifted to chunk 0's bits
        const uint2 v = *reinterpret_cast<const uint2*>(qs + 8 * g);
        r.q0 = make_uint4(v.x >> (2 * Q), v.y >> (2 * Q), 0u, 0u);
    } else if (T::QS == 32) {  // 8-bit: bytes 8 Q .. 8 Q + 7
        const uint2 v = *reinterpret_cast<const uint2*>(qs + 32 * g + 8 * Q);
        r.q0 = make_uint4(v.x, v.y, 0u, 0u);
    } else {  // 4-bit: bytes 8 (Q % 2) .., the high nibbles for the second half
        const uint2 v = *reinterpret_cast<const uint2*>(qs + 16 * g + 8 * (Q & 1));
        r.q0 = make_uint4(v.x >> (4 * hi), v.y >> (4 * hi), 0u, 0u);
    }
    if (T::QH == 4) r.h.x = *reinterpret_cast<const uint32_t*>(qh + 4 * g) >> (2 * Q);  // bit e / 4 of byte e % 4
    if (T::QH == 8) r.h.x = *reinterpret_cast<const uint32_t*>(qh + 8 * g + 4 * hi) >> (4 * (Q & 1));
    uint32_t sv = T::SC == 2 ? *reinterpret_cast<const unsigned short*>(sc + 2 * g)
                             : *reinterpret_cast<const uint32_t*>(sc + 4 * g);
    if (T::HALVES) sv >>= 8 * hi;  // a sub-scale byte per half
    r.s = sv;
    r.u = 0u;
    if (T::SUP == 2) r.u = *reinterpret_cast<const unsigned short*>(sup + 2 * s);
    if (T::SUP == 4) r.u = *reinterpret_cast<const uint32_t*>(sup + 4 * s);
}

// v[0..8) rounded to f16 at dst (16-byte aligned) with one 16-byte store, cached in L2 only (the
// GEMM reads it next). (A plain uint4 assignment here became four 4-byte stores.)
QA_DEVICE uint32_t half2_bits(float a, float b) {
    const __half2 h = __floats2half2_rn(a, b);
    return *reinterpret_cast<const uint32_t*>(&h);
}
QA_DEVICE void store_half8(__half* dst, const float v[8]) {
    __stcg(reinterpret_cast<uint4*>(dst),
           make_uint4(half2_bits(v[0], v[1]), half2_bits(v[2], v[3]), half2_bits(v[4], v[5]), half2_bits(v[6], v[7])));
}

// A quantized chunk: stage its planes (weights are constants: before the PDL wait), then
// dequantise bit-exactly (q_dequant_chunk) once the previous kernel is done with `out`.
template <int F>
QA_DEVICE void dq_run_quant(const QParts& P, const DqChunk& c, __half* __restrict__ out, DqStage& sm) {
    using T = QTraits<F>;
    const size_t g0 = c.gi0, g1 = (size_t)c.gi0 + c.ng;
    const uint8_t* qs = dq_stage(sm.qs, pick(P.qs, c.p), g0 * T::QS, g1 * T::QS);
    const uint8_t* qh = T::QH ? dq_stage(sm.qh, pick(P.qh, c.p), g0 * T::QH, g1 * T::QH) : nullptr;
    const uint8_t* sc = dq_stage(sm.sc, pick(P.sc, c.p), g0 * T::SC, g1 * T::SC);
    // k-quants: k % 256 == 0, so super-block index = gi / 8 (lr * S + g / 8 with G = 8 S).
    const uint8_t* sup = T::SUP ? dq_stage(sm.sup, pick(P.sup, c.p), (g0 >> 3) * T::SUP, ((g1 + 7) >> 3) * T::SUP)
                                : nullptr;
    cp_async_commit();
    pdl_prologue();
    cp_async_wait<0>();
    __syncthreads();
    const int first_sup = c.gi0 >> 3, quarter = threadIdx.x & 3;  // i % 4 for every i of the thread
    for (int i = threadIdx.x; i < 4 * c.ng; i += DQ_THREADS) {
        const int g = i >> 2;
        QRaw r;
        q_load_quarter<F>(qs, qh, sc, sup, g, ((c.gi0 + g) >> 3) - first_sup, quarter, r);
        float v[8];
        q_dequant_chunk<F>(r, 0, v);
        q_dequant_chunk<F>(r, 1, v + 4);
        store_half8(out + c.out + 32 * g + 8 * quarter, v);
    }
}

// A chunk of a float part (row-major: element e of group gi is at 32 gi + e), read directly.
template <int F>
QA_DEVICE void dq_run_float(const QParts& P, const DqChunk& c, __half* __restrict__ out) {
    pdl_prologue();
    const uint8_t* base = pick(P.qs, c.p);
    for (int i = threadIdx.x; i < 4 * c.ng; i += DQ_THREADS) {
        const int g = i >> 2, quarter = i & 3;
        const size_t e0 = 32 * ((size_t)c.gi0 + g) + 8 * quarter;
        float v[8];
#pragma unroll
        for (int e = 0; e < 8; ++e) v[e] = float_at<F>(base, e0 + e);
        store_half8(out + c.out + 32 * g + 8 * quarter, v);
    }
}

// Block b of a dequantisation of rows [row_begin, row_begin + rows) into out [rows, k].
QA_DEVICE void dequant_block_f16(const QParts& P, int row_begin, int rows, int k, __half* __restrict__ out, int b) {
    __shared__ __align__(16) DqStage sm;
    const DqChunk c = dq_chunk(P, row_begin, rows, k, b);
    if (c.ng == 0) {
        pdl_prologue();  // every block waits (common.cuh: completion stays transitive)
        return;
    }
#define QA_DQ_RUN(F_)                          \
    if constexpr (F_ < QF_Q4_0) {              \
        dq_run_float<F_>(P, c, out);           \
    } else {                                   \
        dq_run_quant<F_>(P, c, out, sm);       \
    }
    QFMT_DISPATCH(pick(P.fmt, c.p), QA_DQ_RUN)
#undef QA_DQ_RUN
}

// A slice of one weight; grid dq_blocks(rows, k), block DQ_THREADS.
extern "C" __global__ void __launch_bounds__(DQ_THREADS) dequant_q_f16(const QParts P, int row_begin, int rows, int k,
                                                                       __half* __restrict__ out) {
    dequant_block_f16(P, row_begin, rows, k, out, blockIdx.x);
}

// Up to four whole weights in one launch (a layer's matmuls, dequantised together before the
// first of their GEMMs: one launch and one drain instead of four). The grid is the weights' blocks
// back to back (dq_blocks of each; a weight with rows == 0 is absent), block DQ_THREADS.
extern "C" __global__ void __launch_bounds__(DQ_THREADS)
    dequant_q_f16_x4(const QParts P0, const QParts P1, const QParts P2, const QParts P3, int rows0, int rows1,
                     int rows2, int rows3, int k0, int k1, int k2, int k3, __half* __restrict__ out0,
                     __half* __restrict__ out1, __half* __restrict__ out2, __half* __restrict__ out3) {
    // One branch per parameter: indexing kernel parameters at run time would copy them to the stack.
    int b = blockIdx.x;
    const int n0 = dq_blocks(rows0, k0), n1 = dq_blocks(rows1, k1), n2 = dq_blocks(rows2, k2);
    if (b < n0) {
        dequant_block_f16(P0, 0, rows0, k0, out0, b);
    } else if ((b -= n0) < n1) {
        dequant_block_f16(P1, 0, rows1, k1, out1, b);
    } else if ((b -= n1) < n2) {
        dequant_block_f16(P2, 0, rows2, k2, out2, b);
    } else {
        dequant_block_f16(P3, 0, rows3, k3, out3, b - n2);
    }
}

// out[t, :] = W[tokens[t], :] (f32); grid (ceil(G / 256), rows), block 256. An id outside
// 0..vocab (a runtime bug: ids are checked on the host) writes zeros. argmax_key (or null): as
// embed.cu's.
extern "C" __global__ void __launch_bounds__(256) embed_q(const int* __restrict__ state, const int* __restrict__ tokens,
                                                          const QParts P, float* __restrict__ out, int hidden, int vocab,
                                                          unsigned long long* __restrict__ argmax_key) {
    const int t = blockIdx.y;
    const int n_tokens = state_n_tokens(state);  // written by the host before the launch: before the wait
    pdl_prologue();
    clear_argmax_key(argmax_key);
    if (t >= n_tokens) return;
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
