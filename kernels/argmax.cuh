// The argmax order and block reduction shared by argmax.cu (greedy decode) and sample.cu
// (temperature 0 and the penalised argmax): cpu::kernels::argmax's scan order, so the device picks
// the same id as the CPU twin. Key: (not NaN, value, -index) for numbers, index among NaNs (the
// last NaN wins when every value is NaN) -- a total order, so the reduction order does not matter.
#pragma once

#include "common.cuh"

// Is candidate (va, ia) better than (vb, ib)?
QA_DEVICE bool argmax_better(float va, int ia, float vb, int ib) {
    const bool na = isnan(va), nb = isnan(vb);
    if (na != nb) return nb;  // a number beats NaN
    if (na) return ia > ib;   // among NaNs the last index wins
    if (va != vb) return va > vb;
    return ia < ib;           // ties: lowest index
}

// argmax_better's order as one 64-bit key, so that an unsigned maximum (one atomicMax per block)
// reduces the candidates of any number of blocks without a second pass or a ticket: numbers above
// NaNs (a NaN's high word is 0, a number's its order-preserving bits, never 0), larger values
// higher, equal values by lower index (low word ~j), NaNs by higher index (low word j); -0 counts
// as +0 (they compare equal). 0 is the identity (a NaN at index 0, the worst candidate).
// runtime/src/cuda/argmax_key.rs is its CPU twin and decodes it.
QA_DEVICE unsigned long long argmax_key(float v, int j) {
    if (isnan(v)) return (unsigned long long)(unsigned)j;
    unsigned b = __float_as_uint(v == 0.0f ? 0.0f : v);
    b = (b & 0x80000000u) ? ~b : (b | 0x80000000u);
    return ((unsigned long long)b << 32) | (unsigned long long)(~(unsigned)j);
}

QA_DEVICE unsigned long long key_max(unsigned long long a, unsigned long long b) { return a > b ? a : b; }

// The largest key of the block's THREADS threads into *dst (atomicMax, one per block). Every
// thread must call it (one barrier).
template <int THREADS>
QA_DEVICE void argmax_key_to(unsigned long long key, unsigned long long* dst) {
    __shared__ unsigned long long keys[THREADS / 32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) key = key_max(key, __shfl_xor_sync(0xffffffffu, key, off));
    if (lane == 0) keys[warp] = key;
    __syncthreads();
    if (threadIdx.x == 0) {
#pragma unroll
        for (int w = 1; w < THREADS / 32; ++w) key = key_max(key, keys[w]);
        if (key != 0) atomicMax(dst, key);
    }
}

// Best (v, i) of the block's THREADS threads (a multiple of 32, at most 1024), in every thread of
// warp 0. Every thread must call it; it synchronises before returning, so it can be called again.
template <int THREADS>
QA_DEVICE void argmax_block(float& v, int& i) {
    __shared__ float sv[THREADS / 32];
    __shared__ int si[THREADS / 32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) {
        const float ov = __shfl_xor_sync(0xffffffffu, v, off);
        const int oi = __shfl_xor_sync(0xffffffffu, i, off);
        if (argmax_better(ov, oi, v, i)) { v = ov; i = oi; }
    }
    if (lane == 0) { sv[warp] = v; si[warp] = i; }
    __syncthreads();
    if (warp == 0) {
        v = lane < THREADS / 32 ? sv[lane] : NAN;
        i = lane < THREADS / 32 ? si[lane] : -1;
#pragma unroll
        for (int off = 16; off > 0; off >>= 1) {
            const float ov = __shfl_xor_sync(0xffffffffu, v, off);
            const int oi = __shfl_xor_sync(0xffffffffu, i, off);
            if (argmax_better(ov, oi, v, i)) { v = ov; i = oi; }
        }
    }
    __syncthreads();
}
