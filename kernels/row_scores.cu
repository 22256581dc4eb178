// Scores of logits rows on the device (perplexity, prompt and generated tokens' log-probabilities):
// for each row r < n_tokens of logits [rows, vocab], the log-probability of targets[r] under the
// row's log-softmax and the row's k = max(top_n, 1) most likely tokens (largest logit first, equal
// logits by lower id: argmax.cuh's order for numbers) with their log-probabilities. A few bytes per
// row cross to the host instead of the row's 600 KB.
// CPU twin: runtime/src/scores.rs `row_score` (f64 throughout).
//
// dtypes:  logits f32 [rows, vocab]; targets i32 [rows] (each < vocab, checked by the host);
//          top_n <= ROW_SCORE_MAX_TOP; out u32 [rows][2 + 2k]: target log-prob (f32 bits), 1 + the
//          lowest index of a non-finite logit in the row (0: none; the host then refuses the row
//          as it refuses copied logits), then k pairs (id, log-prob f32 bits), most likely first;
//          past the row's finite logits the id is 0xFFFFFFFF and the log-prob -inf.
// launch:  grid (rows: those >= n_tokens return at once, slices <= ROW_SCORE_MAX_SLICES), block
//          ROW_SCORE_THREADS (kernel_constants.rs). With slices > 1, partials u32
//          [rows][slices][ROW_SCORE_PART_WORDS] and tickets u32 [rows] (zero; zero again after).
// How:     one pass over the row: each thread keeps its elements' maximum m and sum of exp(x - m),
//          rescaled when m grows (an online softmax), summed in f64 so that 150,000 terms lose
//          nothing (each term an f32 expf: within ~1e-7 of the twin's f64 where it matters),
//          and its best element; the block combines them (the top 1). For more, a second pass:
//          the 32 half-warps' maxima are 32 distinct elements, so the smallest of them, T, has at
//          least 32 >= k logits at or above it -- and typically only ~100 of 150,000 -- which go
//          to shared memory and each find their rank there. (Keeping a sorted list per thread in
//          the first pass instead cost ~90-110 us a row on an H100: some lane of a warp inserts
//          at nearly every element, so the whole warp runs the insertion.) A row with more than
//          RS_CAP logits at or above T (many equal logits) takes k passes instead, each finding
//          the best logit behind the last one found.
//          A row may be cut into slices (gridDim.y blocks; a decode step's one row would otherwise
//          be one block on one SM, ~80 us on an H100): each block does the above for its slice
//          and stores its maximum, sum and top k (raw logits) as a partial; the last block to
//          take a ticket merges them -- the sums rescaled to the row's maximum in slice order
//          (deterministic), each listed logit's rank counted in the slices' sorted lists.
#include "argmax.cuh"
#include "common.cuh"

namespace {

constexpr int RS_WARPS = ROW_SCORE_THREADS / 32;
// The threshold pass finds k only if the half-warps' maxima are at least k elements, and the
// empty slots are written by one thread each.
static_assert(ROW_SCORE_THREADS % 32 == 0 && ROW_SCORE_MAX_TOP <= ROW_SCORE_THREADS / 16,
              "row_scores: k must not exceed the half-warps");
constexpr int RS_CAP = 1024;  // candidates at or above the threshold kept in shared memory
// The merge holds every slice's list in the candidates' shared memory.
static_assert(ROW_SCORE_MAX_SLICES * ROW_SCORE_MAX_TOP <= RS_CAP, "row_scores: the slices' lists must fit RS_CAP");
// The merge's warp 0 takes two slices per lane.
static_assert(ROW_SCORE_MAX_SLICES <= 64, "row_scores: at most 64 slices");

// Is (va, ia) ahead of (vb, ib)? Larger value, then lower id: argmax_better's order for numbers
// (only finite logits are compared, against each other or the +-inf of "none yet").
QA_DEVICE bool top_ahead(float va, int ia, float vb, int ib) { return va > vb || (va == vb && ia < ib); }

// The pair (v, i) of the block ahead of the others (every thread gets it). `sv` / `si` hold
// RS_WARPS entries of shared memory; synchronises before returning.
QA_DEVICE void block_ahead(float& v, int& i, float* sv, int* si) {
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) {
        const float ov = __shfl_xor_sync(0xffffffffu, v, off);
        const int oi = __shfl_xor_sync(0xffffffffu, i, off);
        if (top_ahead(ov, oi, v, i)) {
            v = ov;
            i = oi;
        }
    }
    if ((threadIdx.x & 31) == 0) {
        sv[threadIdx.x >> 5] = v;
        si[threadIdx.x >> 5] = i;
    }
    __syncthreads();
#pragma unroll
    for (int w = 0; w < RS_WARPS; ++w) {
        if (top_ahead(sv[w], si[w], v, i)) {
            v = sv[w];
            i = si[w];
        }
    }
    __syncthreads();
}

// float4 loads each thread keeps in flight while it walks a row (for_each_logit; QA_RS_UNROLL:
// a timing build's override, NVCC_APPEND_FLAGS). 8 spills 32 bytes at 512 threads and was no
// faster on an H100 (the scoring call alone: top 1 76 us against 80, top 5 93 against 90).
#ifndef QA_RS_UNROLL
#define QA_RS_UNROLL 4
#endif
constexpr int RS_UNROLL = QA_RS_UNROLL;

// Calls f(x, j) for every logit j in [begin, end) of `row` this thread owns. A decode row's pass
// is bound by how many loads each thread has in flight: one float at a time took ~120 us per
// 151,936-entry row on one block of an H100 (80 us with float4s); here RS_UNROLL float4s (16
// logits) per thread are requested together when the range is 16-byte aligned and a multiple of
// 4 long (every real vocabulary's slices), else one float at a time.
template <typename F>
QA_DEVICE void for_each_logit(const float* __restrict__ row, int begin, int end, F&& f) {
    if (((begin | end) & 3) != 0 || (reinterpret_cast<uintptr_t>(row) & 15) != 0) {
        for (int j = begin + threadIdx.x; j < end; j += ROW_SCORE_THREADS) f(row[j], j);
        return;
    }
    const float4* r4 = reinterpret_cast<const float4*>(row);
    const int n4 = end >> 2;
    for (int base = (begin >> 2) + threadIdx.x; base < n4; base += ROW_SCORE_THREADS * RS_UNROLL) {
        float4 v[RS_UNROLL];
#pragma unroll
        for (int u = 0; u < RS_UNROLL; ++u) {
            const int q = base + u * ROW_SCORE_THREADS;
            if (q < n4) v[u] = __ldg(r4 + q);
        }
#pragma unroll
        for (int u = 0; u < RS_UNROLL; ++u) {
            const int q = base + u * ROW_SCORE_THREADS;
            if (q < n4) {
                f(v[u].x, 4 * q);
                f(v[u].y, 4 * q + 1);
                f(v[u].z, 4 * q + 2);
                f(v[u].w, 4 * q + 3);
            }
        }
    }
}

// Slot `rank` of a row's list: (id, log-prob), or the empty slot when id is INT_MAX.
QA_DEVICE void put_top(unsigned int* o, int rank, float v, int id, double log_z) {
    const bool empty = id == INT_MAX;
    o[2 + 2 * rank] = empty ? 0xFFFFFFFFu : (unsigned int)id;
    o[3 + 2 * rank] = __float_as_uint(empty ? -INFINITY : (float)((double)v - log_z));
}

// A slice's partial result (ROW_SCORE_PART_WORDS u32): [0] its maximum (f32 bits), [1] its lowest
// non-finite index (INT_MAX: none), [2..4) its sum of exp(x - maximum) (f64 bits, low word first),
// then k (logit f32 bits, id) pairs, best first; an empty slot is (-inf, INT_MAX).
QA_DEVICE void put_part(unsigned int* p, int rank, float v, int id) {
    p[4 + 2 * rank] = __float_as_uint(id == INT_MAX ? -INFINITY : v);
    p[5 + 2 * rank] = (unsigned int)id;
}

}  // namespace

extern "C" __global__ void __launch_bounds__(ROW_SCORE_THREADS) row_scores(
    const int* __restrict__ state,
    const float* __restrict__ logits,  // [rows, vocab]
    const int* __restrict__ targets,   // [rows]
    int vocab,
    int top_n,
    unsigned int* __restrict__ out,       // [rows][2 + 2 max(top_n, 1)]
    unsigned int* __restrict__ partials,  // [rows][slices][ROW_SCORE_PART_WORDS] (slices > 1)
    unsigned int* __restrict__ tickets) { // [rows], zero (slices > 1; zero again after)
    __shared__ double s_sum[RS_WARPS];
    __shared__ float s_max[RS_WARPS], s_floor[RS_WARPS];
    __shared__ int s_bad[RS_WARPS];
    __shared__ double s_log_z;
    __shared__ int s_count, s_last;
    __shared__ float c_val[RS_CAP];
    __shared__ int c_id[RS_CAP];
    const int r = blockIdx.x, slices = gridDim.y;
    // The run state is written by the host before the launch (common.cuh): read before the wait.
    const int n_tokens = state_n_tokens(state);
    pdl_prologue();
    if (r >= n_tokens) return;  // uniform per block
    const int k = max(1, min(top_n, ROW_SCORE_MAX_TOP));
    const float* row = logits + (size_t)r * vocab;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    // This block's slice of the row: whole float4s, the last slice shorter.
    const int len = slices == 1 ? vocab : (((vocab + slices - 1) / slices + 3) & ~3);
    const int begin = min(vocab, (int)blockIdx.y * len), end = min(vocab, begin + len);
    unsigned int* part = partials + ((size_t)r * slices + blockIdx.y) * ROW_SCORE_PART_WORDS;

    float best_v = NAN, m = -INFINITY;
    int best_i = -1, bad = INT_MAX;
    double s = 0.0;
    for_each_logit(row, begin, end, [&](float x, int j) {
        if (!isfinite(x)) {
            bad = min(bad, j);
            return;
        }
        if (argmax_better(x, j, best_v, best_i)) {
            best_v = x;
            best_i = j;
        }
        if (x > m) {
            s = s * exp((double)m - (double)x);  // exp(-inf) = 0 on the first element
            m = x;
        }
        // The term in f32 (IEEE expf; the argument's rounding is at most 2^-24 |x - m|, so the
        // terms that matter, near the maximum, are within ~1e-7 of f64's), summed in f64: the
        // f64 exp cost ~20 us more per row (one SM: a decode step with log-probabilities, H100).
        s += (double)expf(x - m);
    });
    // The block's maximum and first non-finite index, then every thread's sum rescaled to it;
    // and the smallest of the half-warps' maxima (the second pass's threshold).
    float wm = m, half = m;
    int wb = bad;
#pragma unroll
    for (int off = 1; off < 16; off <<= 1) half = fmaxf(half, __shfl_xor_sync(0xffffffffu, half, off));
    half = fminf(half, __shfl_xor_sync(0xffffffffu, half, 16));
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) {
        wm = fmaxf(wm, __shfl_xor_sync(0xffffffffu, wm, off));
        wb = min(wb, __shfl_xor_sync(0xffffffffu, wb, off));
    }
    if (lane == 0) {
        s_max[warp] = wm;
        s_bad[warp] = wb;
        s_floor[warp] = half;
    }
    __syncthreads();
    float block_max = -INFINITY, threshold = INFINITY;
    int block_bad = INT_MAX;
#pragma unroll
    for (int w = 0; w < RS_WARPS; ++w) {
        block_max = fmaxf(block_max, s_max[w]);
        block_bad = min(block_bad, s_bad[w]);
        threshold = fminf(threshold, s_floor[w]);
    }
    double sum_part = m == -INFINITY ? 0.0 : s * exp((double)m - (double)block_max);
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) sum_part += __shfl_xor_sync(0xffffffffu, sum_part, off);
    if (lane == 0) s_sum[warp] = sum_part;
    argmax_block<ROW_SCORE_THREADS>(best_v, best_i);  // synchronises: s_sum is complete after it
    unsigned int* o = out + (size_t)(2 + 2 * k) * r;
    if (threadIdx.x == 0) {
        double total = 0.0;
#pragma unroll
        for (int w = 0; w < RS_WARPS; ++w) total += s_sum[w];  // warp order: deterministic
        const int top = best_i < 0 ? INT_MAX : best_i;  // best_i -1: no finite logit
        if (slices == 1) {
            const double log_z = (double)block_max + log(total);
            s_log_z = log_z;
            o[0] = __float_as_uint((float)((double)row[targets[r]] - log_z));
            o[1] = block_bad == INT_MAX ? 0u : (unsigned int)block_bad + 1u;
            if (k == 1) put_top(o, 0, best_v, top, log_z);
        } else {
            part[0] = __float_as_uint(block_max);
            part[1] = (unsigned int)block_bad;
            const unsigned long long bits = (unsigned long long)__double_as_longlong(total);
            part[2] = (unsigned int)bits;
            part[3] = (unsigned int)(bits >> 32);
            if (k == 1) put_part(part, 0, best_v, top);
        }
        s_count = 0;
    }
    // The k best of this block's range: the row's (slices == 1, with their log-probabilities) or
    // the slice's (raw logits, for the merge).
    auto put = [&](int rank, float v, int id) {
        if (slices == 1) {
            put_top(o, rank, v, id, s_log_z);
        } else {
            put_part(part, rank, v, id);
        }
    };
    if (k > 1) {
        __syncthreads();
        // Second pass: the logits at or above the threshold (at least min(32, finite logits) of
        // them when every half-warp had one; every finite logit of the range otherwise).
        for_each_logit(row, begin, end, [&](float x, int j) {
            if (isfinite(x) && x >= threshold) {
                const int p = atomicAdd(&s_count, 1);
                if (p < RS_CAP) {
                    c_val[p] = x;
                    c_id[p] = j;
                }
            }
        });
        __syncthreads();
        const int n = s_count;
        if (n <= RS_CAP) {
            // Ids are distinct, so the ranks are: the first k are the range's k best.
            for (int c = threadIdx.x; c < n; c += ROW_SCORE_THREADS) {
                const float v = c_val[c];
                const int id = c_id[c];
                int rank = 0;
                for (int d = 0; d < n; ++d) rank += top_ahead(c_val[d], c_id[d], v, id);
                if (rank < k) put(rank, v, id);
            }
            if (threadIdx.x >= n && threadIdx.x < k) put(threadIdx.x, -INFINITY, INT_MAX);  // fewer than k
        } else {
            // Too many at the threshold (equal logits): k passes, each taking the best logit
            // behind the previous one (block-uniform loop).
            float pv = INFINITY;
            int pi = -1;
            for (int rank = 0; rank < k; ++rank) {
                float bv = -INFINITY;
                int bi = INT_MAX;
                for_each_logit(row, begin, end, [&](float x, int j) {
                    if (isfinite(x) && top_ahead(pv, pi, x, j) && top_ahead(x, j, bv, bi)) {
                        bv = x;
                        bi = j;
                    }
                });
                block_ahead(bv, bi, c_val, c_id);
                if (threadIdx.x == 0) put(rank, bv, bi);
                pv = bv;
                pi = bi;
            }
        }
    }
    if (slices == 1) return;  // uniform

    // ---- the last slice's block to finish merges every slice (atomic ticket after a fence) ----
    __threadfence();  // every thread's partial writes, before the ticket
    __syncthreads();
    if (threadIdx.x == 0) s_last = atomicAdd(&tickets[r], 1u) == (unsigned int)slices - 1;
    __syncthreads();
    if (!s_last) return;  // uniform
    __threadfence();
    const unsigned int* parts = partials + (size_t)r * slices * ROW_SCORE_PART_WORDS;
    const int n_cand = slices * k;  // <= RS_CAP (ROW_SCORE_MAX_SLICES, checked at compile time)
    if (threadIdx.x == 0) s_count = 0;
    __syncthreads();
    for (int c = threadIdx.x; c < n_cand; c += ROW_SCORE_THREADS) {
        const unsigned int* p = parts + (c / k) * ROW_SCORE_PART_WORDS + 4 + 2 * (c % k);
        c_val[c] = __uint_as_float(__ldcg(p));
        c_id[c] = (int)__ldcg(p + 1);
        if (c_id[c] != INT_MAX) atomicAdd(&s_count, 1);
    }
    if (warp == 0) {
        // The row's maximum, then the slices' sums rescaled to it: lane b takes slices b, b + 32
        // (in that order), the lanes' sums added in the shuffle's fixed order (deterministic).
        float bm[2];
        double bs[2];
        int row_bad = INT_MAX;
        float row_max = -INFINITY;
#pragma unroll
        for (int u = 0; u < 2; ++u) {
            const int b = lane + 32 * u;
            bm[u] = -INFINITY;
            bs[u] = 0.0;
            if (b < slices) {
                const unsigned int* p = parts + b * ROW_SCORE_PART_WORDS;
                bm[u] = __uint_as_float(__ldcg(p));
                row_bad = min(row_bad, (int)__ldcg(p + 1));
                bs[u] = __longlong_as_double((long long)(((unsigned long long)__ldcg(p + 3) << 32) | __ldcg(p + 2)));
            }
            row_max = fmaxf(row_max, bm[u]);
        }
        double total = 0.0;
#pragma unroll
        for (int off = 16; off > 0; off >>= 1) {
            row_max = fmaxf(row_max, __shfl_xor_sync(0xffffffffu, row_max, off));
            row_bad = min(row_bad, __shfl_xor_sync(0xffffffffu, row_bad, off));
        }
#pragma unroll
        for (int u = 0; u < 2; ++u) {
            if (bm[u] != -INFINITY) total += bs[u] * exp((double)bm[u] - (double)row_max);
        }
#pragma unroll
        for (int off = 16; off > 0; off >>= 1) total += __shfl_xor_sync(0xffffffffu, total, off);
        if (lane == 0) {
            const double log_z = (double)row_max + log(total);
            s_log_z = log_z;
            o[0] = __float_as_uint((float)((double)row[targets[r]] - log_z));
            o[1] = row_bad == INT_MAX ? 0u : (unsigned int)row_bad + 1u;
            tickets[r] = 0u;  // for the next launch (stream-ordered after this one)
            s_max[0] = -INFINITY;  // the threshold below: none (every listed logit a candidate)
            s_bad[0] = INT_MAX;    // unless a slice's maximum is found the k-th
        }
    }
    __syncthreads();
    // With at least k slices, the k-th best of the slices' maxima (distinct entries) is a
    // threshold: a listed logit behind it has those k ahead of it. Only the few at or ahead of
    // it are ranked (ranking all 37 x 20 listed logits cost ~60 us more per row on an H100).
    if (slices >= k && threadIdx.x < slices) {
        const float v = c_val[threadIdx.x * k];
        const int id = c_id[threadIdx.x * k];
        int rank = 0;
        for (int b = 0; b < slices; ++b) rank += top_ahead(c_val[b * k], c_id[b * k], v, id);
        // Equal entries (empty slices: -inf, INT_MAX) share a rank; then none may be the k-th
        // and the threshold stays none.
        if (rank == k - 1 && id != INT_MAX) {
            s_max[0] = v;
            s_bad[0] = id;
        }
    }
    __syncthreads();
    const float thr_v = s_max[0];
    const int thr_i = s_bad[0];
    // Each slice's list is sorted, so a candidate's rank is how many entries of each list are
    // ahead of it: ids are distinct, the row's k best are the ranks below k.
    const double log_z = s_log_z;
    const int n = s_count;
    for (int c = threadIdx.x; c < n_cand; c += ROW_SCORE_THREADS) {
        const float v = c_val[c];
        const int id = c_id[c];
        if (id == INT_MAX || top_ahead(thr_v, thr_i, v, id)) continue;
        int rank = 0;
        for (int b = 0; b < slices; ++b) {
            for (int e = b * k; e < (b + 1) * k && top_ahead(c_val[e], c_id[e], v, id); ++e) ++rank;
        }
        if (rank < k) put_top(o, rank, v, id, log_z);
    }
    if (threadIdx.x >= n && threadIdx.x < k) put_top(o, threadIdx.x, -INFINITY, INT_MAX, log_z);  // fewer than k
}

