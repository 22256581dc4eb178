// Lookups on quantized weights (the canonical layout of quant.cuh):
// 1. dequant_q_f16 -- rows [row_begin, row_begin + rows) of a weight to f16 [rows, k] in scratch,
//    for the prefill GEMM (cuBLAS on f16 tensor cores); four threads per group, eight elements
//    each, so a warp writes 512 contiguous bytes; bit-exact values rounded once to f16 (as the f16
//    plan stores them). dequant_q_f16_x4: up to four whole weights in one launch.
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

// Elements 8 * quarter .. 8 * quarter + 7 of group g of row j (absolute) into v. The four lanes
// of a group load the same planes (one request per warp instruction: the addresses coincide).
QA_DEVICE void q_group_quarter(const QParts& P, int j, int g, int k, int quarter, float v[8]) {
    const int p = part_of(P, j), lr = j - part_row0(P, p);
    const int G = k >> 5;
#define QA_QUARTER(F_)                                                                       \
    if constexpr (F_ < QF_Q4_0) {                                                            \
        const size_t e0 = (size_t)lr * k + 32 * g + 8 * quarter;                             \
        _Pragma("unroll") for (int e = 0; e < 8; ++e) v[e] = float_at<F_>(pick(P.qs, p), e0 + e); \
    } else {                                                                                 \
        QRaw raw;                                                                            \
        q_load<F_>(P, p, (size_t)lr * G + g, (size_t)lr * (k >> 8) + (g >> 3), raw);          \
        q_dequant_chunk<F_>(raw, 2 * quarter, v);                                            \
        q_dequant_chunk<F_>(raw, 2 * quarter + 1, v + 4);                                    \
    }
    QFMT_DISPATCH(pick(P.fmt, p), QA_QUARTER)
#undef QA_QUARTER
}

// out [rows, k] f16 = rows row_begin.. of W, grid-strided over the block's slice of the grid
// (x dimension). Thread i writes elements 8i..8i+7 of out (group i / 4, quarter i % 4): one thread
// per group wrote 64 bytes per lane at a 64-byte stride (four partial-sector stores per line) and
// kept 32 values live, which held the kernel to ~1.3 TB/s.
QA_DEVICE void dequant_rows_f16(const QParts& P, int row_begin, int rows, int k, __half* __restrict__ out) {
    const int G = k >> 5;
    const long long n = (long long)rows * G * 4;
    for (long long tid = (long long)blockIdx.x * blockDim.x + threadIdx.x; tid < n;
         tid += (long long)gridDim.x * blockDim.x) {
        const long long gi = tid >> 2;
        const int lr = (int)(gi / G), g = (int)(gi - (long long)lr * G), quarter = (int)(tid & 3);
        float v[8];
        q_group_quarter(P, row_begin + lr, g, k, quarter, v);
        __half2 h[4];
#pragma unroll
        for (int i = 0; i < 4; ++i) h[i] = __floats2half2_rn(v[2 * i], v[2 * i + 1]);
        *reinterpret_cast<uint4*>(out + 32 * gi + 8 * quarter) = *reinterpret_cast<uint4*>(h);
    }
}

// A slice of one weight; grid ceil(rows * k / 8 / 256), block 256.
extern "C" __global__ void __launch_bounds__(256) dequant_q_f16(const QParts P, int row_begin, int rows, int k,
                                                                __half* __restrict__ out) {
    pdl_prologue();  // out is scratch that the previous GEMM may still read
    dequant_rows_f16(P, row_begin, rows, k, out);
}

// Up to four whole weights in one launch (a layer's matmuls, dequantised together before the
// first of their GEMMs: one launch and one drain instead of four); blockIdx.y picks the weight
// (a weight with rows == 0 is absent). Grid (x, 4), block 256, x sized for the largest weight.
extern "C" __global__ void __launch_bounds__(256)
    dequant_q_f16_x4(const QParts P0, const QParts P1, const QParts P2, const QParts P3, int rows0, int rows1,
                     int rows2, int rows3, int k0, int k1, int k2, int k3, __half* __restrict__ out0,
                     __half* __restrict__ out1, __half* __restrict__ out2, __half* __restrict__ out3) {
    pdl_prologue();  // the outs are scratch that the previous GEMMs may still read
    // One branch per parameter: indexing kernel parameters at run time would copy them to the stack.
    switch (blockIdx.y) {
        case 0: dequant_rows_f16(P0, 0, rows0, k0, out0); break;
        case 1: dequant_rows_f16(P1, 0, rows1, k1, out1); break;
        case 2: dequant_rows_f16(P2, 0, rows2, k2, out2); break;
        default: dequant_rows_f16(P3, 0, rows3, k3, out3); break;
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
