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
// launch:  grid (rows: those >= n_tokens return at once), block ROW_SCORE_THREADS
//          (kernel_constants.rs).
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
#include "argmax.cuh"
#include "common.cuh"

namespace {

constexpr int RS_WARPS = ROW_SCORE_THREADS / 32;
// The threshold pass finds k only if the half-warps' maxima are at least k elements, and the
// empty slots are written by one thread each.
static_assert(ROW_SCORE_THREADS % 32 == 0 && ROW_SCORE_MAX_TOP <= ROW_SCORE_THREADS / 16,
              "row_scores: k must not exceed the half-warps");
constexpr int RS_CAP = 1024;  // candidates at or above the threshold kept in shared memory

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

// Calls f(x, j) for every logit j of `row` this thread owns. A decode row is one block's work
// on one SM, so its pass is bound by how many loads each thread has in flight: one float at a
// time took ~120 us per 151,936-entry row on an H100 (the scoring call alone; 80 us now); here
// RS_UNROLL float4s (16 logits) per thread are requested together when the row is 16-byte
// aligned and a multiple of 4 long (every real vocabulary), else one float at a time.
template <typename F>
QA_DEVICE void for_each_logit(const float* __restrict__ row, int vocab, F&& f) {
    if ((vocab & 3) != 0 || (reinterpret_cast<uintptr_t>(row) & 15) != 0) {
        for (int j = threadIdx.x; j < vocab; j += ROW_SCORE_THREADS) f(row[j], j);
        return;
    }
    const float4* r4 = reinterpret_cast<const float4*>(row);
    const int n4 = vocab >> 2;
    for (int base = threadIdx.x; base < n4; base += ROW_SCORE_THREADS * RS_UNROLL) {
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

}  // namespace

extern "C" __global__ void __launch_bounds__(ROW_SCORE_THREADS) row_scores(
    const int* __restrict__ state,
    const float* __restrict__ logits,  // [rows, vocab]
    const int* __restrict__ targets,   // [rows]
    int vocab,
    int top_n,
    unsigned int* __restrict__ out) {  // [rows][2 + 2 max(top_n, 1)]
    __shared__ double s_sum[RS_WARPS];
    __shared__ float s_max[RS_WARPS], s_floor[RS_WARPS];
    __shared__ int s_bad[RS_WARPS];
    __shared__ double s_log_z;
    __shared__ int s_count;
    __shared__ float c_val[RS_CAP];
    __shared__ int c_id[RS_CAP];
    const int r = blockIdx.x;
    // The run state is written by the host before the launch (common.cuh): read before the wait.
    const int n_tokens = state_n_tokens(state);
    pdl_prologue();
    if (r >= n_tokens) return;  // uniform per block
    const int k = max(1, min(top_n, ROW_SCORE_MAX_TOP));
    const float* row = logits + (size_t)r * vocab;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;

    float best_v = NAN, m = -INFINITY;
    int best_i = -1, bad = INT_MAX;
    double s = 0.0;
    for_each_logit(row, vocab, [&](float x, int j) {
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
    float row_max = -INFINITY, threshold = INFINITY;
    int row_bad = INT_MAX;
#pragma unroll
    for (int w = 0; w < RS_WARPS; ++w) {
        row_max = fmaxf(row_max, s_max[w]);
        row_bad = min(row_bad, s_bad[w]);
        threshold = fminf(threshold, s_floor[w]);
    }
    double part = m == -INFINITY ? 0.0 : s * exp((double)m - (double)row_max);
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) part += __shfl_xor_sync(0xffffffffu, part, off);
    if (lane == 0) s_sum[warp] = part;
    argmax_block<ROW_SCORE_THREADS>(best_v, best_i);  // synchronises: s_sum is complete after it
    unsigned int* o = out + (size_t)(2 + 2 * k) * r;
    if (threadIdx.x == 0) {
        double total = 0.0;
#pragma unroll
        for (int w = 0; w < RS_WARPS; ++w) total += s_sum[w];  // warp order: deterministic
        const double log_z = (double)row_max + log(total);
        s_log_z = log_z;
        s_count = 0;
        o[0] = __float_as_uint((float)((double)row[targets[r]] - log_z));
        o[1] = row_bad == INT_MAX ? 0u : (unsigned int)row_bad + 1u;
        if (k == 1) put_top(o, 0, best_v, best_i < 0 ? INT_MAX : best_i, log_z);  // best_i -1: no finite logit
    }
    if (k == 1) return;  // uniform
    __syncthreads();
    const double log_z = s_log_z;
    // Second pass: the logits at or above the threshold (at least min(32, finite logits) of them).
    for_each_logit(row, vocab, [&](float x, int j) {
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
        // Ids are distinct, so the ranks are: the first k are the row's k best.
        for (int c = threadIdx.x; c < n; c += ROW_SCORE_THREADS) {
            const float v = c_val[c];
            const int id = c_id[c];
            int rank = 0;
            for (int d = 0; d < n; ++d) rank += top_ahead(c_val[d], c_id[d], v, id);
            if (rank < k) put_top(o, rank, v, id, log_z);
        }
        if (threadIdx.x >= n && threadIdx.x < k) put_top(o, threadIdx.x, -INFINITY, INT_MAX, log_z);  // fewer than k
        return;
    }
    // Too many at the threshold (equal logits): k passes, each taking the best logit behind the
    // previous one (block-uniform loop).
    float pv = INFINITY;
    int pi = -1;
    for (int rank = 0; rank < k; ++rank) {
        float bv = -INFINITY;
        int bi = INT_MAX;
        for_each_logit(row, vocab, [&](float x, int j) {
            if (isfinite(x) && top_ahead(pv, pi, x, j) && top_ahead(x, j, bv, bi)) {
                bv = x;
                bi = j;
            }
        });
        block_ahead(bv, bi, c_val, c_id);
        if (threadIdx.x == 0) put_top(o, rank, bv, bi, log_z);
        pv = bv;
        pi = bi;
    }
}
