// Causal grouped-query attention over the KV cache (K f32, V f16; flash-decoding style, one launch).
//
//   for query row t (position p = pos + t), head h, kv head g = h / G (G = H / Hkv):
//   s_j = scale * q[t,h,:] . K[j,g,:] for j in 0..=p; out[t,h,:] = softmax(s) . V[:,g,:]
//
// dtypes:  q f32 [rows, H*d]; K f32, V f16 [max_seq, Hkv, d] (rope.cu says why K is f32); out f32 [rows, H*d];
//          split partials: part_o f32 [rows, H, n_splits, d], part_ml f32 [rows, H, n_splits, 2];
//          counters u32 [rows, Hkv * head_groups] (<= [rows, H]), zero between launches (the last
//          block of each (row, kv head, head group) resets its counter).
//
// attention_rows_d{64,128} (prefill: one split, several rows): grid (Hkv * head_groups, 1,
//   ceil(rows / ATT_PREFILL_ROWS)); each block serves ATT_PREFILL_ROWS consecutive query rows with
//   the same code, every staged K/V tile and every K/V element read from shared memory once for
//   all of them, rows masked to their own causal length; blocks take the rows longest first (the
//   last rows see the most keys), so the short blocks fill the tail. Otherwise as below.
// attention_split_d{64,128}: grid (Hkv * head_groups, n_splits, rows), block 256 (8 warps), dynamic
//   shared memory attention_smem_bytes(d, 1) (below; 61,440 bytes at d = 64, 60,416 at d = 128: two
//   stages of K and V tiles, q of the heads, probabilities, merge weights -- more than the 48 KB a
//   static array may take, so the host raises the kernel's limit and passes the size at launch,
//   runtime/src/cuda/launch/attention.rs `attention_smem_bytes`, which must agree with the layout here);
//   80-90 registers (two blocks per SM). One block owns one KV head, one group of
//   GH = ceil(G / head_groups) of its G query heads, and one chunk of keys (attn_chunk in common.cuh): the block stages each K/V tile once
//   into shared memory (cp.async, 16-byte pieces, two stages so the next tile loads while this one
//   is used) and warp w < GH serves query head h0 + w on its own -- no block barrier inside the
//   softmax. head_groups > 1 spreads a group's heads over more SMs (each block re-reads the tile
//   from L2) to cut the per-block instruction latency, which is what bounds short contexts:
//   - scores: lane i takes keys i, i+32, .. of the tile (TILE = 4096/d keys: 64 at d=64, 32 at
//     d=128) and does the whole d-long dot product itself (f32 K rows padded by 16 bytes in
//     shared memory, so the 16-byte reads down a column are conflict-free; q read as a broadcast);
//   - online softmax per warp: running max m (warp-uniform, one warp_max per tile), the running sum
//     l kept per lane and summed once at the end, IEEE expf; probabilities to shared memory;
//   - V: lane owns d/32 output dims and sums over the tile's keys (rows read as contiguous words).
//   With one active split (short contexts, prefill) the block writes out = acc / l directly;
//   otherwise it writes its unnormalised partials (acc, m, l). A row of at most `fold_max` active
//   splits stops there: the GEMV after this kernel (o_proj) merges them as it loads its x
//   (attn_fold.cuh; fold_max 0: never). Otherwise the LAST block of its (row, kv head, head
//   group) to finish (atomic ticket after __threadfence) merges all active splits, one warp per
//   head -- M = max m_s, out = sum_s exp(m_s - M) acc_s / sum_s exp(m_s - M) l_s -- so there is
//   no second launch.
//   PDL: the K/V rows of positions < pos were written by earlier steps, so the first two tiles'
//   copies of those rows are issued BEFORE griddepcontrol.wait (their latency overlaps the qkv
//   kernel); only q and this step's own rows (positions >= pos, written by the qkv kernel) are
//   requested after it. Later tiles are issued as their buffer frees up.
//   n_splits is fixed per executor (the decode graph never changes); the chunk length follows the
//   run-time length (attn_chunk in common.cuh: min_chunk keys, a kernel argument, up to
//   ATTN_LONG_FACTOR x min_chunk keys, at least 64 beyond), so short contexts use one block per
//   KV head and longer ones many one-tile splits.
//   PERFORMANCE: see experiments/LOG.md (the previous version, one 4-warp block doing all G heads in
//   long dependent chains with 196 registers, took ~14.6 us at 1k cached tokens).
// numerics: all f32, IEEE expf (not __expf); the only difference from the CPU twin is summation
//   order and dividing once by l at the end instead of normalising each weight.
// limits:  G <= MAX_G (8), d in {64, 128}, n_splits <= ATT_MAX_SPLITS (128) (the runtime validates
//   the plan and caps the split count), min_chunk a positive multiple of 64, 1 <= head_groups <= G
//   (a group left without heads exits at once).
#include "common.cuh"

// ATT_WARPS and ATT_MAX_SPLITS: generated_constants.cuh (shared with runtime/src/cuda/launch/attention.rs).
namespace {
constexpr int ATT_THREADS = ATT_WARPS * 32;
constexpr int MAX_G = ATT_WARPS;  // warp w serves query head w of the group

// 16-byte asynchronous copy global -> shared (L2 only); `valid == false` writes 16 zero bytes
// and reads nothing.
QA_DEVICE void cp_async16(void* smem, const void* gmem, bool valid) {
    const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
    const int n = valid ? 16 : 0;
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(n) : "memory");
}
}  // namespace

// The dynamic shared memory layout of the attention kernels for head_dim D and R query rows per
// block, in this order, every part a multiple of 16 bytes: K tiles f32 [2][TILE][D + 4] | V tiles
// f16 [2][TILE][D + 8] | q f32 [R][MAX_G][D] | probabilities f32 [R][ATT_WARPS][TILE] | merge
// weights f32 [ATT_WARPS][ATT_MAX_SPLITS].
template <int D, int R>
struct AttnSmem {
    static constexpr int TILE = 4096 / D;  // keys per tile
    static constexpr int ROW_K = D + 4;    // floats per shared K row (16-byte pad)
    static constexpr int ROW_V = D + 8;    // halves per shared V row (16-byte pad)
    static constexpr int K_BYTES = 2 * TILE * ROW_K * 4;
    static constexpr int V_BYTES = 2 * TILE * ROW_V * 2;
    static constexpr int Q_BYTES = R * MAX_G * D * 4;
    static constexpr int P_BYTES = R * ATT_WARPS * TILE * 4;
    static constexpr int W_BYTES = ATT_WARPS * ATT_MAX_SPLITS * 4;
    static constexpr int BYTES = K_BYTES + V_BYTES + Q_BYTES + P_BYTES + W_BYTES;
};

QA_DEVICE unsigned dynamic_smem_bytes() {
    unsigned n;
    asm("mov.u32 %0, %%dynamic_smem_size;" : "=r"(n));
    return n;
}

// R query rows per block: 1 for decode (and any split count); more only with one split (a
// prefill's direct mode), where the R rows share every K/V tile the block stages -- the rows of a
// prefill need the same keys but the last row's few, so R rows cost one block's tile traffic.
template <int D, int R>
__device__ void attention_impl(const int* __restrict__ state,
                                     const float* __restrict__ q,        // [rows, H*d]
                                     const float* __restrict__ kc,       // [max_seq, Hkv, d]
                                     const __half* __restrict__ vc,      // [max_seq, Hkv, d]
                                     float* __restrict__ out,            // [rows, H*d]
                                     float* __restrict__ part_o,         // [rows, H, S, d]
                                     float* __restrict__ part_ml,        // [rows, H, S, 2]
                                     unsigned int* __restrict__ counters, // [rows, Hkv]
                                     int n_heads, int n_kv_heads, float scale, int n_splits, int min_chunk,
                                     int head_groups, int fold_max) {
    using Lay = AttnSmem<D, R>;
    constexpr int TILE = Lay::TILE;              // keys per tile: 16 KB of K and 8 KB of V
    constexpr int KPL = TILE / 32;             // keys per lane in the score phase
    constexpr int DPL = D / 32;                // output dims per lane
    constexpr int ROW_K = Lay::ROW_K, ROW_V = Lay::ROW_V;
    constexpr int CPR_K = D / 4;               // 16-byte pieces per K row (4 floats)
    constexpr int CPR_V = D / 8;               // 16-byte pieces per V row (8 halves)
    constexpr int PIECES_K = TILE * CPR_K;     // per K tile
    constexpr int PIECES_V = TILE * CPR_V;     // per V tile
    constexpr int MU = 64 / DPL;               // partials in flight per lane in the merge
    // Independent FMA chains per key (scores) and per output dim (V). A decode block serves one
    // row with 1-4 of its 8 warps, so nothing hides a chain's latency: with two chains a d = 128
    // score was 64 dependent FMAs (~256 cycles a tile). Decode at d = 128 (R = 1, one key a lane)
    // takes one score chain per float4 component and parity of c (8 chains of 16 FMAs) and one V
    // chain per key of a 4-key step (4): 1.5B shapes 968.5 -> 954.0 us a step (H100, 42nd-43rd
    // sessions). At d = 64 the same cut (4 score chains) measured no gain (527.3 -> 528.7 us), so
    // it and the prefill rows (R > 1: registers for R rows) keep two chains of each.
    constexpr bool LONG_CHAINS = R == 1 && DPL == 4;
    constexpr int SCH = LONG_CHAINS ? 8 : 2;
    constexpr int VCH = LONG_CHAINS ? 4 : 2;
    static_assert(KPL >= 1 && TILE % 4 == 0 && (DPL == 2 || DPL == 4), "head_dim must be 64 or 128");
    static_assert(PIECES_K % ATT_THREADS == 0 && PIECES_V % ATT_THREADS == 0,
                  "tile pieces must divide evenly over the block");

    extern __shared__ __align__(16) unsigned char smem[];
    auto k_s = reinterpret_cast<float(*)[TILE * ROW_K]>(smem);
    auto v_s = reinterpret_cast<__half(*)[TILE * ROW_V]>(smem + Lay::K_BYTES);
    float* q_s = reinterpret_cast<float*>(smem + Lay::K_BYTES + Lay::V_BYTES);
    auto p_s = reinterpret_cast<float(*)[ATT_WARPS][TILE]>(smem + Lay::K_BYTES + Lay::V_BYTES + Lay::Q_BYTES);
    auto w_s = reinterpret_cast<float(*)[ATT_MAX_SPLITS]>(smem + Lay::K_BYTES + Lay::V_BYTES + Lay::Q_BYTES + Lay::P_BYTES);
    __shared__ bool is_last;
    // A launch with less shared memory than this layout needs is a host bug (launch/attention.rs must agree
    // with AttnSmem): stop loudly rather than corrupt memory.
    if (dynamic_smem_bytes() < (unsigned)Lay::BYTES) __trap();

    const int kvh = blockIdx.x / head_groups, hg = blockIdx.x - kvh * head_groups;
    // t0: the block's first query row. Prefill blocks (R > 1) take the rows in reverse, so the
    // longest ones (the last rows see the most keys) start first and the short ones fill the tail.
    const int split = blockIdx.y, t0 = (R == 1 ? blockIdx.z : gridDim.z - 1 - blockIdx.z) * R;
    const int G = n_heads / n_kv_heads;
    const int GH = (G + head_groups - 1) / head_groups;
    const int n_h = min(GH, G - hg * GH);  // query heads of this block (uniform)
    // The run state is written by the host before the graph starts, so it is readable before the
    // PDL wait; so are the K/V rows of positions < pos, written by earlier steps.
    const int pos = state_pos(state);
    const int n_rows = max(0, min(R, state_n_tokens(state) - t0));  // the block's rows within n_tokens
    // Keys of the block's last row, its longest (row t0 + r has pos + t0 + r + 1 keys). With R > 1
    // the block is the only split (the host's contract): one chunk of every key.
    const int len = pos + t0 + max(n_rows, 1);
    const int chunk = R == 1 ? attn_chunk(len, n_splits, min_chunk) : len;
    const int start = split * chunk;
    const bool active_block = n_h > 0 && n_rows > 0 && start < len;  // uniform per block
    const int end = min(len, start + chunk);
    const int active = (len + chunk - 1) / chunk;
    const int h0 = kvh * G + hg * GH;
    const size_t row_stride = (size_t)n_kv_heads * D;  // elements per cache position
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const bool has_head = warp < n_h;
    const float* kg = kc + (size_t)kvh * D;
    const __half* vg = vc + (size_t)kvh * D;

    // Stage the K and V rows [tile0, tile0 + TILE) into buffer `buf`: rows past `end` become
    // zeros; `cached` selects the rows of positions < pos (constants of this step, staged before
    // the PDL wait) or the others (this step's own rows, written by the qkv kernel: after it).
    auto issue = [&](int tile0, int buf, bool cached) {
        // Whether key row j of the tile is copied in this pass, and whether it exists (else zeros).
        auto take = [&](int j, bool& ok) {
            const int g = tile0 + j;
            ok = g < end;
            if (ok && (g < pos) != cached) return false;  // the other pass's row
            if (!ok && !cached) return false;             // zero rows: written once, in the cached pass
            return true;
        };
#pragma unroll
        for (int r = 0; r < PIECES_K / ATT_THREADS; ++r) {
            const int c = r * ATT_THREADS + tid;
            const int j = c / CPR_K, piece = c - j * CPR_K;
            bool ok;
            if (!take(j, ok)) continue;
            const size_t off = (size_t)(ok ? tile0 + j : 0) * row_stride + piece * 4;
            cp_async16(&k_s[buf][j * ROW_K + piece * 4], kg + off, ok);
        }
#pragma unroll
        for (int r = 0; r < PIECES_V / ATT_THREADS; ++r) {
            const int c = r * ATT_THREADS + tid;
            const int j = c / CPR_V, piece = c - j * CPR_V;
            bool ok;
            if (!take(j, ok)) continue;
            const size_t off = (size_t)(ok ? tile0 + j : 0) * row_stride + piece * 8;
            cp_async16(&v_s[buf][j * ROW_V + piece * 8], vg + off, ok);
        }
    };
    // A block without keys (a split past the context, a head group without heads, a row past
    // n_tokens) reads and writes nothing, so it leaves before the wait and frees its slot for the
    // kernels after it -- except block (0,0,0), which always waits: the grid then still completes
    // only after its predecessor (common.cuh), whatever the context length.
    const bool lead = (blockIdx.x | blockIdx.y | blockIdx.z) == 0;
    if (!active_block && !lead) return;

    // Tiles 0 and 1 use the two buffers; later tiles are issued as buffers free up.
    const int n_tiles = active_block ? (end - start + TILE - 1) / TILE : 0;
    for (int it = 0; it < min(n_tiles, 2); ++it) issue(start + it * TILE, it, true);
    cp_async_commit();

    pdl_prologue();  // q and this step's K/V rows (the qkv kernel's output) are readable from here on
    if (!active_block) return;  // the lead block, idle: nothing was issued

    // q of the block's heads and rows -> shared (zeros for rows past n_tokens), and this step's
    // K/V rows of tiles 0 and 1.
#pragma unroll
    for (int r = 0; r < R; ++r) {
        const float* qg = q + ((size_t)(t0 + min(r, n_rows - 1)) * n_heads + h0) * D;
        for (int i = tid; i < n_h * D / 4; i += ATT_THREADS) cp_async16(q_s + r * MAX_G * D + 4 * i, qg + 4 * i, r < n_rows);
    }
    for (int it = 0; it < min(n_tiles, 2); ++it) issue(start + it * TILE, it, false);
    cp_async_commit();

    float m[R];         // running max of this warp's head, per row (warp-uniform)
    float l[R];         // this lane's share of the running sum of exp(s - m), per row
    float acc[R][DPL];
#pragma unroll
    for (int r = 0; r < R; ++r) {
        m[r] = -INFINITY;
        l[r] = 0.0f;
#pragma unroll
        for (int e = 0; e < DPL; ++e) acc[r][e] = 0.0f;
    }

    for (int it = 0; it < n_tiles; ++it) {
        const int tile0 = start + it * TILE;
        const int buf = it & 1;
        // Tile it is complete once every group up to its own is; tile it + 1's group (committed
        // at the end of iteration it - 1, for it >= 1) may stay in flight.
        if (it >= 1 && it + 1 < n_tiles) {
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        __syncthreads();  // tile `it` (and q) visible to every warp
        if (has_head) {
            const float* kt = k_s[buf];
            const __half* vt = v_s[buf];
            // ---- scores: lane owns keys lane + 32k; SCH partial sums per key and row (shorter
            // chains); each K element read from shared memory once for all R rows ----
            float sp[R][SCH][KPL];
#pragma unroll
            for (int r = 0; r < R; ++r)
#pragma unroll
                for (int ch = 0; ch < SCH; ++ch)
#pragma unroll
                    for (int k = 0; k < KPL; ++k) sp[r][ch][k] = 0.0f;
#pragma unroll
            for (int c = 0; c < CPR_K; ++c) {
                float4 kf[KPL];
#pragma unroll
                for (int k = 0; k < KPL; ++k) kf[k] = *reinterpret_cast<const float4*>(kt + (k * 32 + lane) * ROW_K + c * 4);
#pragma unroll
                for (int r = 0; r < R; ++r) {
                    const float4 qa = *reinterpret_cast<const float4*>(q_s + (r * MAX_G + warp) * D + c * 4);
#pragma unroll
                    for (int k = 0; k < KPL; ++k) {
                        if constexpr (SCH == 8) {
                            const int b = (c & 1) * 4;
                            sp[r][b][k] = fmaf(qa.x, kf[k].x, sp[r][b][k]);
                            sp[r][b + 1][k] = fmaf(qa.y, kf[k].y, sp[r][b + 1][k]);
                            sp[r][b + 2][k] = fmaf(qa.z, kf[k].z, sp[r][b + 2][k]);
                            sp[r][b + 3][k] = fmaf(qa.w, kf[k].w, sp[r][b + 3][k]);
                        } else {
                            float s = sp[r][c & 1][k];
                            s = fmaf(qa.x, kf[k].x, s);
                            s = fmaf(qa.y, kf[k].y, s);
                            s = fmaf(qa.z, kf[k].z, s);
                            s = fmaf(qa.w, kf[k].w, s);
                            sp[r][c & 1][k] = s;
                        }
                    }
                }
            }
            // ---- online softmax (this warp's head), per row ----
            float alpha[R];
#pragma unroll
            for (int r = 0; r < R; ++r) {
                // Row r sees keys < pos + t0 + r + 1 (and this split's end); a later tile may hold
                // none of them (R > 1): then its max stays m[r], finite since tile 0 holds key 0.
                const int tn = min(TILE, min(end, pos + t0 + r + 1) - tile0);
                float sc[KPL];
                float mx = -INFINITY;
#pragma unroll
                for (int k = 0; k < KPL; ++k) {
                    float dot;
                    if constexpr (SCH == 8) {
                        dot = ((sp[r][0][k] + sp[r][1][k]) + (sp[r][2][k] + sp[r][3][k])) +
                              ((sp[r][4][k] + sp[r][5][k]) + (sp[r][6][k] + sp[r][7][k]));
                    } else {
                        dot = sp[r][0][k] + sp[r][1][k];
                    }
                    sc[k] = k * 32 + lane < tn ? scale * dot : -INFINITY;
                    mx = fmaxf(mx, sc[k]);
                }
                mx = warp_max(mx);
                const float m_new = fmaxf(m[r], mx);  // finite: see above
                alpha[r] = expf(m[r] - m_new);        // 0 on the first tile (m = -inf)
                m[r] = m_new;
                float psum = 0.0f;
#pragma unroll
                for (int k = 0; k < KPL; ++k) {
                    const float p = expf(sc[k] - m_new);  // 0 for keys past the row's end
                    p_s[r][warp][k * 32 + lane] = p;
                    psum += p;
                }
                l[r] = l[r] * alpha[r] + psum;
            }
            __syncwarp();
            // ---- V: lane owns dims lane*DPL ..; rows past the end are zeros with p = 0; each V
            // element read once for all R rows ----
            float a[R][VCH][DPL];  // key u of each 4-key step into chain u % VCH
#pragma unroll
            for (int r = 0; r < R; ++r)
#pragma unroll
                for (int e = 0; e < DPL; ++e) {
                    a[r][0][e] = acc[r][e] * alpha[r];
#pragma unroll
                    for (int ch = 1; ch < VCH; ++ch) a[r][ch][e] = 0.0f;
                }
#pragma unroll
            for (int j = 0; j < TILE; j += 4) {
                float pj[R][4];
#pragma unroll
                for (int r = 0; r < R; ++r) {
                    const float4 p4 = *reinterpret_cast<const float4*>(&p_s[r][warp][j]);
                    pj[r][0] = p4.x;
                    pj[r][1] = p4.y;
                    pj[r][2] = p4.z;
                    pj[r][3] = p4.w;
                }
#pragma unroll
                for (int u = 0; u < 4; ++u) {
                    const __half2* vr = reinterpret_cast<const __half2*>(vt + (j + u) * ROW_V + lane * DPL);
#pragma unroll
                    for (int e2 = 0; e2 < DPL / 2; ++e2) {
                        const float2 v = __half22float2(vr[e2]);
#pragma unroll
                        for (int r = 0; r < R; ++r) {
                            a[r][u % VCH][2 * e2] = fmaf(pj[r][u], v.x, a[r][u % VCH][2 * e2]);
                            a[r][u % VCH][2 * e2 + 1] = fmaf(pj[r][u], v.y, a[r][u % VCH][2 * e2 + 1]);
                        }
                    }
                }
            }
#pragma unroll
            for (int r = 0; r < R; ++r)
#pragma unroll
                for (int e = 0; e < DPL; ++e) {
                    if constexpr (VCH == 4) {
                        acc[r][e] = (a[r][0][e] + a[r][1][e]) + (a[r][2][e] + a[r][3][e]);
                    } else {
                        acc[r][e] = a[r][0][e] + a[r][1][e];
                    }
                }
        }
        __syncthreads();  // buffer `buf` and p_s are free again
        if (it + 2 < n_tiles) {
            issue(tile0 + 2 * TILE, buf, true);
            issue(tile0 + 2 * TILE, buf, false);
            cp_async_commit();
        }
    }
#pragma unroll
    for (int r = 0; r < R; ++r) l[r] = warp_sum(l[r]);
    const int h = h0 + warp;

    if (active == 1) {  // the only split: normalise and write (uniform per block)
        if (has_head) {
#pragma unroll
            for (int r = 0; r < R; ++r) {
                if (r >= n_rows) break;
                float* o = out + ((size_t)(t0 + r) * n_heads + h) * D + lane * DPL;
#pragma unroll
                for (int e = 0; e < DPL; ++e) o[e] = acc[r][e] / l[r];
            }
        }
        return;
    }
    if constexpr (R == 1) {  // several splits: R is 1 (the host's contract)
    const int t = t0;

    if (has_head) {
        const size_t slot = ((size_t)t * n_heads + h) * n_splits + split;
        float* po = part_o + slot * D + lane * DPL;
#pragma unroll
        for (int e = 0; e < DPL; ++e) po[e] = acc[0][e];
        if (lane == 0) reinterpret_cast<float2*>(part_ml)[slot] = make_float2(m[0], l[0]);
    }

    // ---- the last block of this (row, kv head, head group) merges every active split ----
    if (active <= fold_max) return;  // the GEMV after this kernel merges them (attn_fold.cuh)
    __threadfence();
    __syncthreads();
    if (tid == 0) is_last = atomicAdd(&counters[t * gridDim.x + blockIdx.x], 1u) == (unsigned)active - 1;
    __syncthreads();
    if (!is_last) return;
    __threadfence();
    if (tid == 0) counters[t * gridDim.x + blockIdx.x] = 0;  // ready for the next launch (graph replay)
    if (!has_head) return;

    const size_t base = ((size_t)t * n_heads + h) * n_splits;
    const float2* ml = reinterpret_cast<const float2*>(part_ml) + base;
    float2 mls[ATT_MAX_SPLITS / 32];
    float M = -INFINITY;
#pragma unroll
    for (int k = 0; k < ATT_MAX_SPLITS / 32; ++k) {
        const int s = k * 32 + lane;
        mls[k] = s < active ? __ldcg(ml + s) : make_float2(-INFINITY, 0.0f);
        M = fmaxf(M, mls[k].x);
    }
    M = warp_max(M);
    float L = 0.0f;
#pragma unroll
    for (int k = 0; k < ATT_MAX_SPLITS / 32; ++k) {
        const int s = k * 32 + lane;
        if (s < active) {
            const float w = expf(mls[k].x - M);
            w_s[warp][s] = w;
            L = fmaf(w, mls[k].y, L);
        }
    }
    L = warp_sum(L);
    __syncwarp();
    // MU partials per lane in flight at once: ceil(active / MU) round trips.
    const float* pob = part_o + base * D + lane * DPL;
    float o[DPL];
#pragma unroll
    for (int e = 0; e < DPL; ++e) o[e] = 0.0f;
    for (int sb = 0; sb < active; sb += MU) {
        float x[MU][DPL];
#pragma unroll
        for (int k = 0; k < MU; ++k) {
            if (sb + k < active) {
                if constexpr (DPL == 2) {
                    const float2 v = __ldcg(reinterpret_cast<const float2*>(pob + (size_t)(sb + k) * D));
                    x[k][0] = v.x; x[k][1] = v.y;
                } else {
                    const float4 v = __ldcg(reinterpret_cast<const float4*>(pob + (size_t)(sb + k) * D));
                    x[k][0] = v.x; x[k][1] = v.y; x[k][2] = v.z; x[k][3] = v.w;
                }
            } else {
#pragma unroll
                for (int e = 0; e < DPL; ++e) x[k][e] = 0.0f;
            }
        }
#pragma unroll
        for (int k = 0; k < MU; ++k) {
            const float w = sb + k < active ? w_s[warp][sb + k] : 0.0f;
#pragma unroll
            for (int e = 0; e < DPL; ++e) o[e] = fmaf(w, x[k][e], o[e]);
        }
    }
    float* op = out + ((size_t)t * n_heads + h) * D + lane * DPL;
#pragma unroll
    for (int e = 0; e < DPL; ++e) op[e] = o[e] / L;
    }
}

#define ATTENTION_KERNEL(NAME, D, R)                                                                   \
    extern "C" __global__ void __launch_bounds__(ATT_THREADS) NAME(                                   \
        const int* __restrict__ state, const float* __restrict__ q, const float* __restrict__ kc,     \
        const __half* __restrict__ vc, float* __restrict__ out, float* __restrict__ part_o,           \
        float* __restrict__ part_ml, unsigned int* __restrict__ counters, int n_heads, int n_kv_heads, \
        float scale, int n_splits, int min_chunk, int head_groups, int fold_max) {                    \
        attention_impl<D, R>(state, q, kc, vc, out, part_o, part_ml, counters, n_heads, n_kv_heads,   \
                             scale, n_splits, min_chunk, head_groups, fold_max);                      \
    }

// Decode (one row per block, any split count) and prefill (ATT_PREFILL_ROWS rows per block, one
// split) entry points.
ATTENTION_KERNEL(attention_split_d64, 64, 1)
ATTENTION_KERNEL(attention_split_d128, 128, 1)
ATTENTION_KERNEL(attention_rows_d64, 64, ATT_PREFILL_ROWS)
ATTENTION_KERNEL(attention_rows_d128, 128, ATT_PREFILL_ROWS)
