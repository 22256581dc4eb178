// Token embedding: out[t, :] = f32(table[tokens[t], :]).
//
// dtypes:  tokens i32 [rows]; table f16 [vocab, hidden]; out f32 [rows, hidden].
// launch:  grid (ceil(hidden / (256 * 8)), rows), block 256. Each thread converts 8 halves read as
//          one 16-byte load (hidden % 8 == 0; a scalar loop handles other widths). The op moves
//          hidden*6 bytes per row, so it is pure latency: one wave, no shared memory.
// why:     ids were range-checked by the host; an id outside 0..vocab (which would be a runtime
//          bug) writes zeros instead of reading out of bounds.
//          argmax_key (or null): zeroed by block (0, 0) -- a program's first kernel clears what its
//          LM head's argmax epilogue (qmma.cu, ARGMAX) will maximise into.
#include "common.cuh"

extern "C" __global__ void embed_f16(const int* __restrict__ state,
                                     const int* __restrict__ tokens,    // [rows]
                                     const __half* __restrict__ table,  // [vocab, hidden]
                                     float* __restrict__ out,           // [rows, hidden]
                                     int hidden, int vocab, unsigned long long* __restrict__ argmax_key) {
    const int t = blockIdx.y;
    const int n_tokens = state_n_tokens(state);  // written by the host before the launch: before the wait
    pdl_prologue();
    clear_argmax_key(argmax_key);
    if (t >= n_tokens) return;
    const int id = tokens[t];
    const bool ok = id >= 0 && id < vocab;
    const __half* row = table + (size_t)(ok ? id : 0) * hidden;
    float* o = out + (size_t)t * hidden;
    const int stride = gridDim.x * blockDim.x;
    if ((hidden & 7) == 0) {
        for (int v = blockIdx.x * blockDim.x + threadIdx.x; v < hidden / 8; v += stride) {
            float f[8];
            unpack_half8(__ldg(reinterpret_cast<const uint4*>(row) + v), f);
            if (!ok) {
#pragma unroll
                for (int i = 0; i < 8; ++i) f[i] = 0.0f;
            }
            reinterpret_cast<float4*>(o)[2 * v] = make_float4(f[0], f[1], f[2], f[3]);
            reinterpret_cast<float4*>(o)[2 * v + 1] = make_float4(f[4], f[5], f[6], f[7]);
        }
    } else {
        for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < hidden; i += stride)
            o[i] = ok ? __half2float(row[i]) : 0.0f;
    }
}
