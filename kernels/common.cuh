// Shared helpers for every kernel in kernels/*.cu.
//
// Conventions (see plan/src/lib.rs for the contract):
// - Activations are row-major f32 `[rows, row_elems]`; weights are row-major f16 `[n, k]`; norm
//   weights and biases are f32.
// - The KV cache is `[max_seq, n_kv_heads, head_dim]` per layer and per K/V, K in f32 and V in f16
//   (see rope.cu).
// - Every kernel takes `const int* state` first: the device-side run state, `state[0] = pos` (tokens
//   already in the KV cache), `state[1] = n_tokens` (rows of this program invocation). Reading them
//   from device memory is what lets the captured decode graph stay unchanged from token to token:
//   the host updates these 8 bytes before each replay. Grids are sized by the host for the largest
//   row count it launches; blocks whose row is `>= n_tokens` exit at once.
// - No kernel is compiled with --use_fast_math (see build.rs): every kernel here is memory- or
//   latency-bound, so IEEE expf/sincosf/sqrtf/division cost nothing measurable, and RoPE needs the
//   accurate sincosf for angles up to max_seq radians.
#pragma once

#include <cuda_fp16.h>
#include <stdint.h>

// Constants shared with the runtime (GEMV_WARPS, QA_MAX_PARTS, the attention limits, the sampler
// sizes, the weight format codes): written by build.rs from runtime/src/kernel_constants.rs.
#include "generated_constants.cuh"

#define QA_DEVICE __device__ __forceinline__

// ---- run state --------------------------------------------------------------------------------
QA_DEVICE int state_pos(const int* state) { return state[0]; }
QA_DEVICE int state_n_tokens(const int* state) { return state[1]; }

// ---- reductions -------------------------------------------------------------------------------
QA_DEVICE float warp_sum(float v) {
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
    return v;
}

QA_DEVICE float warp_max(float v) {
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, off));
    return v;
}

// Sum over the whole block (blockDim.x a multiple of 32, at most 1024). Every thread gets the result.
// `scratch` needs 32 floats of shared memory; the function synchronises before returning so the
// scratch can be reused immediately.
QA_DEVICE float block_sum(float v, float* scratch) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = blockDim.x >> 5;
    v = warp_sum(v);
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    float r = lane < n_warps ? scratch[lane] : 0.0f;
    r = warp_sum(r);
    __syncthreads();
    return r;
}

QA_DEVICE float block_max(float v, float* scratch) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = blockDim.x >> 5;
    v = warp_max(v);
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    float r = lane < n_warps ? scratch[lane] : -INFINITY;
    r = warp_max(r);
    __syncthreads();
    return r;
}

// ---- activations ------------------------------------------------------------------------------
// silu(x) = x / (1 + exp(-x)), IEEE expf and division, the CPU twin's formula (exact at both
// ends: exp overflow gives -0/+0 for very negative x, 1 + tiny for large x).
QA_DEVICE float silu(float x) { return x / (1.0f + expf(-x)); }

// ---- RoPE (NeoX) + KV write of one rotation pair ---------------------------------------------
// (a, b) = (x[i], x[i + d/2]) of `head` in a biased packed qkv row, rotated by the angle whose
// sine and cosine are (sn, cs) and stored -- query heads (head < n_heads) into the row's q_out
// `q_row`, KV heads into this position's K cache row `k_row` (f32: the K cache is kept in f32,
// see rope.cu).
QA_DEVICE void rope_store_rotated(float a, float b, float sn, float cs, int head, int i, float* q_row, float* k_row,
                                  int n_heads, int head_dim) {
    const int half = head_dim / 2;
    const float r0 = a * cs - b * sn;
    const float r1 = b * cs + a * sn;
    const int e0 = head * head_dim + i;
    if (head < n_heads) {
        q_row[e0] = r0;
        q_row[e0 + half] = r1;
    } else {
        float* k = k_row + (e0 - n_heads * head_dim);
        k[0] = r0;
        k[half] = r1;
    }
}

// The angle of pair i at position p: p * inv_freq[i], accurate sincosf (see rope.cu).
QA_DEVICE void rope_sincos(int p, int i, const float* inv_freq, float* sn, float* cs) { sincosf((float)p * inv_freq[i], sn, cs); }

// rope_store_rotated at position p. Shared by bias_rope_kv_write (rope.cu); the GEMV RoPE epilogue
// (matmul.cu) computes the sine and cosine early, before its PDL wait, and stores with the above.
QA_DEVICE void rope_store_pair(float a, float b, int head, int i, int p, const float* inv_freq, float* q_row,
                               float* k_row, int n_heads, int head_dim) {
    float sn, cs;
    rope_sincos(p, i, inv_freq, &sn, &cs);
    rope_store_rotated(a, b, sn, cs, head, i, q_row, k_row, n_heads, head_dim);
}

// ---- programmatic dependent launch (Hopper) ----------------------------------------------------
// The runtime launches every kernel with the programmatic-stream-serialization attribute (unless
// QWEN_AOT_NO_PDL=1), so kernel N+1 can be scheduled while kernel N drains: the launch latency
// between the ~200 small kernels of a decode step overlaps with work. Every kernel calls
// pdl_prologue() in every block before it touches activations (anything an earlier kernel of this
// invocation writes); before it, a kernel may read constant weights (the GEMV prefetches its first
// batch), the run state (written by the host before the launch) and the K/V cache rows of
// positions < pos (written by earlier invocations; the attention stages its first tiles):
//   griddepcontrol.wait            -- blocks until the previous kernel has completed and its
//                                     writes are visible (a no-op without the attribute);
//   griddepcontrol.launch_dependents -- lets the next kernel start launching now.
// Every block waiting, unconditionally and before any early exit, keeps completion transitive: a
// kernel cannot finish before the one it depends on, so every earlier kernel's writes are visible
// too. The one exception: a block with nothing to do (it reads no activation and writes nothing; attention
// splits past the context) may exit before the wait, as long as at least one block of its grid
// always waits -- the grid still completes only after its predecessor.
QA_DEVICE void pdl_prologue() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#ifdef QA_DIAG_EMPTY  // timing builds only (NVCC_APPEND_FLAGS=-DQA_DIAG_EMPTY): every kernel ends
    asm volatile("exit;" ::: "memory");  // at its wait -- the links' floor (scripts/device-ablate.sh)
#endif
#endif
}

// A program's first kernel (the embedding) zeroes the key its LM head's argmax epilogue maximises
// into (qmma.cu, ARGMAX; null when the program has none), after its wait: the previous program's
// key has been read back by then (stream order), and every later kernel of this program sees the
// zero (completion is transitive, above).
QA_DEVICE void clear_argmax_key(unsigned long long* key) {
    if (key != nullptr && blockIdx.x == 0 && blockIdx.y == 0 && threadIdx.x == 0) *key = 0ull;
}

// ---- asynchronous copies (attention.cu, qmma.cu) -----------------------------------------------
// Closes the thread's current group of cp.async copies; wait<N> returns once at most N of the
// thread's groups are still in flight.
QA_DEVICE void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N>
QA_DEVICE void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

// ---- f16 vector helpers ------------------------------------------------------------------------
// 8 halves in one 16-byte word -> 8 floats.
QA_DEVICE void unpack_half8(const uint4 v, float f[8]) {
    const __half2* h = reinterpret_cast<const __half2*>(&v);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const float2 p = __half22float2(h[i]);
        f[2 * i] = p.x;
        f[2 * i + 1] = p.y;
    }
}

// Streaming 16-byte load of weights: read once per token, so ask the cache to evict them first and
// keep activations/KV resident in L2.
QA_DEVICE uint4 load_stream16(const void* p) { return __ldcs(reinterpret_cast<const uint4*>(p)); }

// Read-only 16-byte load through the non-coherent path (activations read by many warps).
QA_DEVICE float4 load_ro4(const float* p) { return __ldg(reinterpret_cast<const float4*>(p)); }

// ---- flash-decoding split geometry (attention.cu; mirrored by launch::attention_splits) --------
// Keys 0..len-1 are cut into chunks of `attn_chunk(len, n_splits, min_chunk)` keys (a multiple of
// 64); split s covers [s*chunk, min(len, (s+1)*chunk)). A chunk takes at least `min_chunk` keys
// while len <= ATTN_LONG_FACTOR * min_chunk -- short contexts then use one split and no merge
// up to min_chunk keys -- and at least 64 beyond that, where more splits in parallel beat the
// merge they need (experiments/LOG.md: -2.2 % at depth 0 if 64 at every length; +1-3 % at
// 128-512 keys with 64-key splits from min_chunk on, ATTN_LONG_FACTOR 1 rather than 8).
// ATTN_LONG_FACTOR: generated_constants.cuh.
QA_DEVICE int attn_chunk(int len, int n_splits, int min_chunk) {
    int c = (len + n_splits - 1) / n_splits;
    c = (c + 63) & ~63;
    const int least = len <= ATTN_LONG_FACTOR * min_chunk ? min_chunk : 64;
    return c < least ? least : c;
}
