// Causal grouped-query attention over the f16 KV cache (flash-decoding style).
//
//   for query row t (position p = pos + t), head h, kv head g = h / G (G = H / Hkv):
//   s_j = scale * q[t,h,:] . K[j,g,:] for j in 0..=p; out[t,h,:] = softmax(s) . V[:,g,:]
//
// dtypes:  q f32 [rows, H*d]; K, V f16 [max_seq, Hkv, d]; out f32 [rows, H*d];
//          decode partials: part_o f32 [rows, H, n_splits, d], part_ml f32 [rows, H, n_splits, 2].
//
// attention_split_d{64,128}: grid (Hkv, n_splits, rows), block 128 (4 warps), static shared memory
//   (< 25 KB). One block owns one KV head and one chunk of keys (see attn_chunk in common.cuh) for
//   ALL G query heads of that group, so each K/V row is read from memory once and serves G heads
//   (GQA: G = 7 for Qwen2.5-0.5B). Keys are processed in tiles of 128 with an online softmax:
//   - scores: d/8 lanes per key, each lane one 16-byte load (8 halves) of K, dot with q (shared
//     memory, f32), shuffle-reduced over the key's lanes; scores for the tile go to shared memory;
//   - softmax: one warp per head updates the running max m and sum l (expf, f32);
//   - V: each thread accumulates 8 output dims for all G heads (registers) over its keys, after
//     rescaling by exp(m_old - m_new); a final shuffle + shared reduction combines the key slots.
//   With n_splits == 1 (prefill) the block writes out[t, h, :] = acc / l directly; otherwise it
//   writes unnormalised partials (acc, m, l) for attention_reduce.
//   n_splits is fixed per executor (the decode graph never changes); the chunk length follows the
//   run-time length, so short contexts use few active splits and long ones use all of them.
// attention_reduce: grid (H, rows), block d: combines the active splits of one head:
//   M = max m_s; out = sum_s exp(m_s - M) acc_s / sum_s exp(m_s - M) l_s.
// numerics: all f32, IEEE expf (not __expf); the only difference from the CPU twin is summation
//   order and dividing once by l at the end instead of normalising each weight.
// limits:  G <= 8 (MAX_G), d in {64, 128} (instantiations below); the runtime validates the plan.
#include "common.cuh"

namespace {
constexpr int ATT_WARPS = 4;
constexpr int ATT_THREADS = ATT_WARPS * 32;
constexpr int ATT_TILE = 128;
constexpr int MAX_G = 8;
}  // namespace

template <int D>
__device__ void attention_split_impl(const int* __restrict__ state,
                                     const float* __restrict__ q,      // [rows, H*d]
                                     const __half* __restrict__ kc,    // [max_seq, Hkv, d]
                                     const __half* __restrict__ vc,    // [max_seq, Hkv, d]
                                     float* __restrict__ out,          // [rows, H*d]
                                     float* __restrict__ part_o,       // [rows, H, S, d]
                                     float* __restrict__ part_ml,      // [rows, H, S, 2]
                                     int n_heads, int n_kv_heads, float scale, int n_splits) {
    constexpr int LPK = D / 8;            // lanes per key (one 16-byte vector each)
    constexpr int KPW = 32 / LPK;         // keys per warp per step
    constexpr int KPB = KPW * ATT_WARPS;  // keys per block per step
    static_assert(D % 8 == 0 && 32 % LPK == 0, "head_dim must be 8 * a divisor of 32");

    __shared__ __align__(16) float q_s[MAX_G][D];
    __shared__ float s_s[MAX_G][ATT_TILE];
    __shared__ float m_s[MAX_G], l_s[MAX_G], alpha_s[MAX_G];
    __shared__ __align__(16) float red[ATT_WARPS][MAX_G][D];

    const int kvh = blockIdx.x, split = blockIdx.y, t = blockIdx.z;
    if (t >= state_n_tokens(state)) return;
    const int len = state_pos(state) + t + 1;
    const int chunk = attn_chunk(len, n_splits);
    const int start = split * chunk;
    if (start >= len) return;  // inactive split: attention_reduce ignores it
    const int end = min(len, start + chunk);
    const int G = n_heads / n_kv_heads;
    const int h0 = kvh * G;
    const size_t row_stride = (size_t)n_kv_heads * D;  // halves per cache position
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int sub = lane % LPK;                     // which 8 dims of the key
    const int kslot = warp * KPW + lane / LPK;      // which key of the step

    const float* qrow = q + (size_t)t * n_heads * D;
    for (int idx = tid; idx < G * D; idx += ATT_THREADS) q_s[idx / D][idx % D] = qrow[h0 * D + idx];
    if (tid < MAX_G) {
        m_s[tid] = -INFINITY;
        l_s[tid] = 0.0f;
    }
    __syncthreads();

    float acc[MAX_G][8];
#pragma unroll
    for (int g = 0; g < MAX_G; ++g)
#pragma unroll
        for (int e = 0; e < 8; ++e) acc[g][e] = 0.0f;

    const __half* kbase = kc + (size_t)kvh * D + sub * 8;
    const __half* vbase = vc + (size_t)kvh * D + sub * 8;

    for (int tile0 = start; tile0 < end; tile0 += ATT_TILE) {
        const int tn = min(ATT_TILE, end - tile0);
        // ---- scores (the loop bound is uniform per warp so the shuffles are full-warp) ----
        for (int j0 = 0; j0 < tn; j0 += KPB) {
            const int jj = j0 + kslot;
            const bool ok = jj < tn;
            float kf[8];
            if (ok) {
                unpack_half8(__ldg(reinterpret_cast<const uint4*>(kbase + (size_t)(tile0 + jj) * row_stride)), kf);
            } else {
#pragma unroll
                for (int e = 0; e < 8; ++e) kf[e] = 0.0f;
            }
#pragma unroll
            for (int g = 0; g < MAX_G; ++g) {
                if (g < G) {
                    const float4 qa = *reinterpret_cast<const float4*>(&q_s[g][sub * 8]);
                    const float4 qb = *reinterpret_cast<const float4*>(&q_s[g][sub * 8 + 4]);
                    float dsum = qa.x * kf[0] + qa.y * kf[1] + qa.z * kf[2] + qa.w * kf[3] +
                                 qb.x * kf[4] + qb.y * kf[5] + qb.z * kf[6] + qb.w * kf[7];
#pragma unroll
                    for (int off = LPK / 2; off > 0; off >>= 1)
                        dsum += __shfl_xor_sync(0xffffffffu, dsum, off);
                    if (ok && sub == 0) s_s[g][jj] = scale * dsum;
                }
            }
        }
        __syncthreads();
        // ---- online softmax update: one warp per head ----
        for (int g = warp; g < G; g += ATT_WARPS) {
            float mx = -INFINITY;
            for (int j = lane; j < tn; j += 32) mx = fmaxf(mx, s_s[g][j]);
            mx = warp_max(mx);
            const float m_old = m_s[g];
            const float m_new = fmaxf(m_old, mx);
            float sum = 0.0f;
            for (int j = lane; j < tn; j += 32) {
                const float pj = expf(s_s[g][j] - m_new);
                s_s[g][j] = pj;
                sum += pj;
            }
            sum = warp_sum(sum);
            if (lane == 0) {
                const float alpha = m_old == -INFINITY ? 0.0f : expf(m_old - m_new);
                alpha_s[g] = alpha;
                l_s[g] = l_s[g] * alpha + sum;
                m_s[g] = m_new;
            }
        }
        __syncthreads();
        // ---- V accumulation ----
#pragma unroll
        for (int g = 0; g < MAX_G; ++g) {
            if (g < G) {
                const float a = alpha_s[g];
#pragma unroll
                for (int e = 0; e < 8; ++e) acc[g][e] *= a;
            }
        }
        for (int jj = kslot; jj < tn; jj += KPB) {
            float vf[8];
            unpack_half8(__ldg(reinterpret_cast<const uint4*>(vbase + (size_t)(tile0 + jj) * row_stride)), vf);
#pragma unroll
            for (int g = 0; g < MAX_G; ++g) {
                if (g < G) {
                    const float pj = s_s[g][jj];
#pragma unroll
                    for (int e = 0; e < 8; ++e) acc[g][e] = fmaf(pj, vf[e], acc[g][e]);
                }
            }
        }
        __syncthreads();  // s_s is overwritten by the next tile
    }

    // ---- combine the key slots: lanes with equal `sub` inside a warp, then the warps ----
#pragma unroll
    for (int g = 0; g < MAX_G; ++g) {
        if (g < G) {
#pragma unroll
            for (int e = 0; e < 8; ++e) {
                float v = acc[g][e];
#pragma unroll
                for (int off = LPK; off < 32; off <<= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
                if (lane < LPK) red[warp][g][sub * 8 + e] = v;
            }
        }
    }
    __syncthreads();
    for (int idx = tid; idx < G * D; idx += ATT_THREADS) {
        const int g = idx / D, dd = idx - g * D;
        float o = 0.0f;
#pragma unroll
        for (int w = 0; w < ATT_WARPS; ++w) o += red[w][g][dd];
        const int h = h0 + g;
        if (n_splits == 1) {
            out[((size_t)t * n_heads + h) * D + dd] = o / l_s[g];
        } else {
            const size_t slot = ((size_t)t * n_heads + h) * n_splits + split;
            part_o[slot * D + dd] = o;
            if (dd == 0) {
                part_ml[2 * slot] = m_s[g];
                part_ml[2 * slot + 1] = l_s[g];
            }
        }
    }
}

#define ATTENTION_SPLIT(D)                                                                          \
    extern "C" __global__ void __launch_bounds__(ATT_THREADS) attention_split_d##D(                \
        const int* __restrict__ state, const float* __restrict__ q, const __half* __restrict__ kc,  \
        const __half* __restrict__ vc, float* __restrict__ out, float* __restrict__ part_o,         \
        float* __restrict__ part_ml, int n_heads, int n_kv_heads, float scale, int n_splits) {      \
        attention_split_impl<D>(state, q, kc, vc, out, part_o, part_ml, n_heads, n_kv_heads, scale, \
                                n_splits);                                                          \
    }

ATTENTION_SPLIT(64)
ATTENTION_SPLIT(128)

extern "C" __global__ void attention_reduce(const int* __restrict__ state,
                                            const float* __restrict__ part_o,   // [rows, H, S, d]
                                            const float* __restrict__ part_ml,  // [rows, H, S, 2]
                                            float* __restrict__ out,            // [rows, H*d]
                                            int n_heads, int head_dim, int n_splits) {
    const int h = blockIdx.x, t = blockIdx.y;
    if (t >= state_n_tokens(state)) return;
    const int len = state_pos(state) + t + 1;
    const int chunk = attn_chunk(len, n_splits);
    const int active = (len + chunk - 1) / chunk;
    const size_t base = ((size_t)t * n_heads + h) * n_splits;
    float M = -INFINITY;
    for (int s = 0; s < active; ++s) M = fmaxf(M, part_ml[2 * (base + s)]);
    for (int dd = threadIdx.x; dd < head_dim; dd += blockDim.x) {
        float l = 0.0f, o = 0.0f;
        for (int s = 0; s < active; ++s) {
            const float w = expf(part_ml[2 * (base + s)] - M);
            l = fmaf(w, part_ml[2 * (base + s) + 1], l);
            o = fmaf(w, part_o[(base + s) * head_dim + dd], o);
        }
        out[((size_t)t * n_heads + h) * head_dim + dd] = o / l;
    }
}
