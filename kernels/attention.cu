// Causal grouped-query attention over the f16 KV cache (flash-decoding style, one launch).
//
//   for query row t (position p = pos + t), head h, kv head g = h / G (G = H / Hkv):
//   s_j = scale * q[t,h,:] . K[j,g,:] for j in 0..=p; out[t,h,:] = softmax(s) . V[:,g,:]
//
// dtypes:  q f32 [rows, H*d]; K, V f16 [max_seq, Hkv, d]; out f32 [rows, H*d];
//          split partials: part_o f32 [rows, H, n_splits, d], part_ml f32 [rows, H, n_splits, 2];
//          counters u32 [rows, Hkv], zero between launches (the last block resets its counter).
//
// attention_split_d{64,128}: grid (Hkv, n_splits, rows), block 128 (4 warps), static shared memory
//   (14 KB at d=64, 22 KB at d=128; 196 registers). One block owns one KV head and one chunk of keys (attn_chunk in common.cuh) for ALL
//   G query heads of that group, so each K/V row is read from memory once and serves G heads
//   (GQA: G = 7 for Qwen2.5-0.5B). Each thread owns 8 dims (16 bytes) of up to UNROLL keys of a
//   tile and issues all of its K and V loads for the tile at once, together with its q values
//   (registers, f32), before any arithmetic.
//   PERFORMANCE (H100, 0.5B decode shapes, `benches/kernels.rs`): ~14.6 us at 1k cached tokens,
//   ~16.4 us at 4k -- far above the ~1-2 us the bytes need. ncu: ~33k cycles, 7.9 cycles per
//   issued instruction: the blocks are instruction-latency bound (one 4-warp block per SM, each
//   thread doing all G heads in dependent FMA/shuffle chains), not memory bound. Restructuring
//   the loads (this version) or fusing the reduce did not move it. Next step: more warps per
//   block (heads spread over warps, K/V re-read from L1) so that each SM has 16+ warps in flight.
//   - scores: dot over the key's d/8 lanes (shuffle), into shared memory; online softmax per head
//     (one warp per head: running max m and sum l, expf in f32); V accumulated in registers;
//   - with n_splits == 1 (prefill) the block writes out = acc / l directly; otherwise it writes its
//     unnormalised partials (acc, m, l), and the LAST block of its (row, kv head) to finish
//     (atomic ticket after __threadfence) merges all active splits -- M = max m_s,
//     out = sum_s exp(m_s - M) acc_s / sum_s exp(m_s - M) l_s -- so there is no second launch.
//   n_splits is fixed per executor (the decode graph never changes); the chunk length follows the
//   run-time length, so short contexts use few active splits and long ones use all of them.
// numerics: all f32, IEEE expf (not __expf); the only difference from the CPU twin is summation
//   order and dividing once by l at the end instead of normalising each weight.
// limits:  G <= MAX_G = 8, d in {64, 128}, n_splits <= ATT_MAX_SPLITS = 128 (the runtime validates
//   the plan and caps the split count).
#include "common.cuh"

namespace {
constexpr int ATT_WARPS = 4;
constexpr int ATT_THREADS = ATT_WARPS * 32;
constexpr int ATT_UNROLL = 4;  // keys per thread per tile
constexpr int MAX_G = 8;
constexpr int ATT_MAX_SPLITS = 128;
}  // namespace

template <int D>
__device__ void attention_split_impl(const int* __restrict__ state,
                                     const float* __restrict__ q,        // [rows, H*d]
                                     const __half* __restrict__ kc,      // [max_seq, Hkv, d]
                                     const __half* __restrict__ vc,      // [max_seq, Hkv, d]
                                     float* __restrict__ out,            // [rows, H*d]
                                     float* __restrict__ part_o,         // [rows, H, S, d]
                                     float* __restrict__ part_ml,        // [rows, H, S, 2]
                                     unsigned int* __restrict__ counters, // [rows, Hkv]
                                     int n_heads, int n_kv_heads, float scale, int n_splits) {
    constexpr int LPK = D / 8;              // lanes per key (one 16-byte vector each)
    constexpr int KPW = 32 / LPK;           // keys per warp per step
    constexpr int KPB = KPW * ATT_WARPS;    // keys per block per step
    constexpr int TILE = KPB * ATT_UNROLL;  // keys per tile: 64 (d=64) or 32 (d=128)
    static_assert(D % 8 == 0 && 32 % LPK == 0, "head_dim must be 8 * a divisor of 32");

    __shared__ float s_s[MAX_G][TILE];
    __shared__ float m_s[MAX_G], l_s[MAX_G], alpha_s[MAX_G];
    __shared__ __align__(16) float red[ATT_WARPS][MAX_G][D];
    __shared__ float w_s[MAX_G][ATT_MAX_SPLITS];
    __shared__ bool is_last;

    pdl_prologue();
    const int kvh = blockIdx.x, split = blockIdx.y, t = blockIdx.z;
    if (t >= state_n_tokens(state)) return;
    const int len = state_pos(state) + t + 1;
    const int chunk = attn_chunk(len, n_splits);
    const int start = split * chunk;
    if (start >= len) return;  // inactive split (uniform per block)
    const int end = min(len, start + chunk);
    const int active = (len + chunk - 1) / chunk;
    const int G = n_heads / n_kv_heads;
    const int h0 = kvh * G;
    const size_t row_stride = (size_t)n_kv_heads * D;  // halves per cache position
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int sub = lane % LPK;                 // which 8 dims
    const int kslot = warp * KPW + lane / LPK;  // which key of a step

    // q for this thread's 8 dims of every head of the group (registers).
    float qr[MAX_G][8];
    const float* qrow = q + ((size_t)t * n_heads + h0) * D + sub * 8;
#pragma unroll
    for (int g = 0; g < MAX_G; ++g) {
        if (g < G) {
            const float4 a = __ldg(reinterpret_cast<const float4*>(qrow + g * D));
            const float4 b = __ldg(reinterpret_cast<const float4*>(qrow + g * D + 4));
            qr[g][0] = a.x; qr[g][1] = a.y; qr[g][2] = a.z; qr[g][3] = a.w;
            qr[g][4] = b.x; qr[g][5] = b.y; qr[g][6] = b.z; qr[g][7] = b.w;
        }
    }
    if (tid < MAX_G) {
        m_s[tid] = -INFINITY;
        l_s[tid] = 0.0f;
    }
    float acc[MAX_G][8];
#pragma unroll
    for (int g = 0; g < MAX_G; ++g)
#pragma unroll
        for (int e = 0; e < 8; ++e) acc[g][e] = 0.0f;

    const __half* kbase = kc + (size_t)kvh * D + sub * 8;
    const __half* vbase = vc + (size_t)kvh * D + sub * 8;

    for (int tile0 = start; tile0 < end; tile0 += TILE) {
        const int tn = min(TILE, end - tile0);
        // ---- all K and V loads of the tile first ----
        uint4 kr[ATT_UNROLL], vr[ATT_UNROLL];
#pragma unroll
        for (int u = 0; u < ATT_UNROLL; ++u) {
            const int jj = u * KPB + kslot;
            if (jj < tn) {
                const size_t off = (size_t)(tile0 + jj) * row_stride;
                kr[u] = __ldg(reinterpret_cast<const uint4*>(kbase + off));
                vr[u] = __ldg(reinterpret_cast<const uint4*>(vbase + off));
            } else {
                kr[u] = make_uint4(0, 0, 0, 0);
                vr[u] = make_uint4(0, 0, 0, 0);
            }
        }
        // ---- scores (all lanes take part in every shuffle) ----
#pragma unroll
        for (int u = 0; u < ATT_UNROLL; ++u) {
            const int jj = u * KPB + kslot;
            float kf[8];
            unpack_half8(kr[u], kf);
#pragma unroll
            for (int g = 0; g < MAX_G; ++g) {
                if (g < G) {
                    float dsum = 0.0f;
#pragma unroll
                    for (int e = 0; e < 8; ++e) dsum = fmaf(qr[g][e], kf[e], dsum);
#pragma unroll
                    for (int off = LPK / 2; off > 0; off >>= 1) dsum += __shfl_xor_sync(0xffffffffu, dsum, off);
                    if (jj < tn && sub == 0) s_s[g][jj] = scale * dsum;
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
            __syncwarp();  // every lane has read m_s[g] before lane 0 overwrites it
            if (lane == 0) {
                const float alpha = m_old == -INFINITY ? 0.0f : expf(m_old - m_new);
                alpha_s[g] = alpha;
                l_s[g] = l_s[g] * alpha + sum;
                m_s[g] = m_new;
            }
        }
        __syncthreads();
        // ---- V accumulation from the registers loaded above ----
#pragma unroll
        for (int g = 0; g < MAX_G; ++g) {
            if (g < G) {
                const float a = alpha_s[g];
#pragma unroll
                for (int e = 0; e < 8; ++e) acc[g][e] *= a;
            }
        }
#pragma unroll
        for (int u = 0; u < ATT_UNROLL; ++u) {
            const int jj = u * KPB + kslot;
            if (jj < tn) {
                float vf[8];
                unpack_half8(vr[u], vf);
#pragma unroll
                for (int g = 0; g < MAX_G; ++g) {
                    if (g < G) {
                        const float pj = s_s[g][jj];
#pragma unroll
                        for (int e = 0; e < 8; ++e) acc[g][e] = fmaf(pj, vf[e], acc[g][e]);
                    }
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
    if (n_splits == 1) return;

    // ---- the last block of this (row, kv head) merges every active split ----
    __threadfence();
    __syncthreads();
    if (tid == 0) is_last = atomicAdd(&counters[t * n_kv_heads + kvh], 1u) == (unsigned)active - 1;
    __syncthreads();
    if (!is_last) return;
    __threadfence();
    for (int g = warp; g < G; g += ATT_WARPS) {
        const size_t base = ((size_t)t * n_heads + h0 + g) * n_splits;
        float M = -INFINITY;
        for (int s = lane; s < active; s += 32) M = fmaxf(M, __ldcg(part_ml + 2 * (base + s)));
        M = warp_max(M);
        float l = 0.0f;
        for (int s = lane; s < active; s += 32) {
            const float w = expf(__ldcg(part_ml + 2 * (base + s)) - M);
            w_s[g][s] = w;
            l = fmaf(w, __ldcg(part_ml + 2 * (base + s) + 1), l);
        }
        l = warp_sum(l);
        if (lane == 0) l_s[g] = l;
    }
    __syncthreads();
    // One float4 of output per thread (G*D/4 <= 256 per block); the loads of 8 splits are issued
    // together, so the merge costs ceil(active / 8) round trips, not one per split.
    for (int idx = tid; idx < G * D / 4; idx += ATT_THREADS) {
        const int g = idx / (D / 4), d4 = idx - g * (D / 4);
        const size_t base = ((size_t)t * n_heads + h0 + g) * n_splits;
        const float4* po = reinterpret_cast<const float4*>(part_o + base * D) + d4;
        float4 o = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        for (int s0 = 0; s0 < active; s0 += 8) {
            float4 v[8];
#pragma unroll
            for (int k = 0; k < 8; ++k)
                v[k] = s0 + k < active ? __ldcg(po + (size_t)(s0 + k) * (D / 4)) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
#pragma unroll
            for (int k = 0; k < 8; ++k) {
                const float w = s0 + k < active ? w_s[g][s0 + k] : 0.0f;
                o.x = fmaf(w, v[k].x, o.x);
                o.y = fmaf(w, v[k].y, o.y);
                o.z = fmaf(w, v[k].z, o.z);
                o.w = fmaf(w, v[k].w, o.w);
            }
        }
        const float l = l_s[g];
        reinterpret_cast<float4*>(out + ((size_t)t * n_heads + h0 + g) * D)[d4] = make_float4(o.x / l, o.y / l, o.z / l, o.w / l);
    }
    if (tid == 0) counters[t * n_kv_heads + kvh] = 0;  // ready for the next launch (graph replay)
}

#define ATTENTION_SPLIT(D)                                                                            \
    extern "C" __global__ void __launch_bounds__(ATT_THREADS) attention_split_d##D(                  \
        const int* __restrict__ state, const float* __restrict__ q, const __half* __restrict__ kc,    \
        const __half* __restrict__ vc, float* __restrict__ out, float* __restrict__ part_o,           \
        float* __restrict__ part_ml, unsigned int* __restrict__ counters, int n_heads, int n_kv_heads, \
        float scale, int n_splits) {                                                                  \
        attention_split_impl<D>(state, q, kc, vc, out, part_o, part_ml, counters, n_heads, n_kv_heads, \
                                scale, n_splits);                                                     \
    }

ATTENTION_SPLIT(64)
ATTENTION_SPLIT(128)
