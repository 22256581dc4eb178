// Lookups on quantized weights (the canonical layout of quant.cuh):
// 1. dequant_q_f16 -- rows [row_begin, row_begin + rows) of a weight to f16 [rows, k] in scratch,
//    for the prefill GEMM (cuBLAS on f16 tensor cores); one thread per group; bit-exact values
//    rounded once to f16 (as the f16 plan stores them).
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

// out [rows, k] f16 = rows row_begin.. of W; grid ceil(rows * k / 32 / 256), block 256.
extern "C" __global__ void __launch_bounds__(256) dequant_q_f16(const QParts P, int row_begin, int rows, int k,
                                                                __half* __restrict__ out) {
    pdl_prologue();  // out is scratch that the previous GEMM may still read
    const int G = k >> 5;
    const long long gid = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (gid >= (long long)rows * G) return;
    const int lr = (int)(gid / G), g = (int)(gid - (long long)lr * G);
    float v[32];
    q_group_values(P, row_begin + lr, g, k, v);
    uint4* o = reinterpret_cast<uint4*>(out + (size_t)lr * k + 32 * g);
#pragma unroll
    for (int c = 0; c < 4; ++c) {
        __half2 h[4];
#pragma unroll
        for (int i = 0; i < 4; ++i) h[i] = __floats2half2_rn(v[8 * c + 2 * i], v[8 * c + 2 * i + 1]);
        o[c] = *reinterpret_cast<uint4*>(h);
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
