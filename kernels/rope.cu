// Fused bias + RoPE (NeoX) + KV-cache write on packed QKV rows.
//
//   row t (position p = pos + t): x = qkv[t] + bias, with qkv[t] = [q (H*d) | k (Hkv*d) | v (Hkv*d)]
//   (bias null -- a model without q/k/v biases: 0.0f is added, as the CPU twin does, so the result
//   is an all-zero bias's bit for bit)
//   for every q and k head and i < d/2: angle = p * inv_freq[i];
//     (x[i], x[i+d/2]) <- (x[i]*cos - x[i+d/2]*sin, x[i+d/2]*cos + x[i]*sin)
//   q_out[t] = rotated q (f32); K cache[p] = rotated k (f32); V cache[p] = biased v (f16).
//
// dtypes:  qkv f32 [rows, (H + 2*Hkv) * d]; bias f32 [(H + 2*Hkv) * d] or null; inv_freq f32 [d/2];
//          q_out f32 [rows, H*d]; k_cache f32, v_cache f16 [max_seq, Hkv, d] (this layer's slices).
// launch:  grid (rows), block 128; threads stride over (head, i) rotation pairs, then over the
//          Hkv*d values of v. A row is ~4.6 KB at 0.5B: latency-bound, one block per row suffices.
// numerics: inv_freq[i] = theta^(-2i/d) is computed once on the host with the same f32 expression
//          as the CPU twin (so both sides multiply by bit-identical factors); angle = p * inv_freq
//          in f32 like the twin; sincosf is the accurate version (angles reach max_seq radians, far
//          outside the range where the fast __sinf is usable). K is stored in f32 and V rounded to
//          f16. An f16 K cache was nearly all of the GPU's error against the float32 reference
//          (experiments/LOG.md, fifteenth session: a CPU replay of the f16 K rounding alone gives a
//          max |top-5 logit error| of 0.0122 of the GPU's 0.0124; K in f32 gives 0.0042): a score
//          is a 64- or 128-long dot product of K with q, so K's 2^-11 relative rounding reaches the
//          softmax directly, while V's rounding averages out over the keys. The cost is 50 % more
//          KV-cache bytes per token (+12.6 MB per decode step at depth 2048 on the 0.5B model).
#include "common.cuh"

extern "C" __global__ void bias_rope_kv_write(const int* __restrict__ state,
                                              const float* __restrict__ qkv,       // [rows, (H+2Hkv)*d]
                                              const float* __restrict__ bias,      // [(H+2Hkv)*d] or null
                                              const float* __restrict__ inv_freq,  // [d/2]
                                              float* __restrict__ q_out,           // [rows, H*d]
                                              float* __restrict__ k_cache,        // [max_seq, Hkv, d]
                                              __half* __restrict__ v_cache,        // [max_seq, Hkv, d]
                                              int n_heads, int n_kv_heads, int head_dim) {
    const int t = blockIdx.x;
    const int n_tokens = state_n_tokens(state), pos = state_pos(state);  // host-written: before the wait
    pdl_prologue();
    if (t >= n_tokens) return;
    const int p = pos + t;
    const int d = head_dim, half = d / 2;
    const int ql = n_heads * d, kl = n_kv_heads * d;
    const float* x = qkv + (size_t)t * (ql + 2 * kl);

    float* q_row = q_out + (size_t)t * ql;
    float* k_row = k_cache + (size_t)p * kl;
    for (int idx = threadIdx.x; idx < (n_heads + n_kv_heads) * half; idx += blockDim.x) {
        const int head = idx / half, i = idx - head * half;
        const int e0 = head * d + i, e1 = e0 + half;
        const float b0 = bias != nullptr ? bias[e0] : 0.0f, b1 = bias != nullptr ? bias[e1] : 0.0f;
        rope_store_pair(x[e0] + b0, x[e1] + b1, head, i, p, inv_freq, q_row, k_row, n_heads, d);
    }
    __half* v = v_cache + (size_t)p * kl;
    for (int idx = threadIdx.x; idx < kl; idx += blockDim.x) {
        const int e = ql + kl + idx;
        v[idx] = __float2half_rn(x[e] + (bias != nullptr ? bias[e] : 0.0f));
    }
}
