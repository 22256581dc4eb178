// Scores of logits rows on the device (perplexity, prompt and generated tokens' log-probabilities):
// for each row r < n_tokens of logits [rows, vocab], the log-probability of targets[r] under the
// row's log-softmax and the row's k = max(top_n, 1) most likely tokens (largest logit first, equal
// logits by lower id: argmax.cuh's order for numbers) with their log-probabilities. A few bytes per
// row cross to the host instead of the row's 600 KB.
// CPU twin: runtime/src/scores.rs `row_score` (f64 throughout).
//
// dtypes:  logits f32 [rows, vocab]; targets i32 [rows] (each < vocab, checked by the host);
//          out u32 [rows][2 + 2k]: target log-prob (f32 bits), 1 + the lowest index of a
//          non-finite logit in the row (0: none; the host then refuses the row as it refuses
//          copied logits), then k pairs (id, log-prob f32 bits), most likely first; past the
//          row's length the id is 0xFFFFFFFF and the log-prob -inf.
// launch:  grid (rows: those >= n_tokens return at once), block ROW_SCORE_THREADS
//          (kernel_constants.rs); `row_scores` for top_n <= 1, `row_scores_top` for top_n up to
//          ROW_SCORE_MAX_TOP (each thread keeps that many candidates in registers).
// How:     one pass over the row: each thread keeps its elements' maximum m and sum of exp(x - m),
//          rescaled when m grows (an online softmax), in f64 so that 150,000 terms lose nothing,
//          and its KMAX best elements as a sorted list; the block combines the sums, each warp
//          merges its lanes' lists into its k best (k rounds of a warp argmax over the lists'
//          heads), and each of the warps' k candidates finds its rank among all of them.
#include "common.cuh"

namespace {

constexpr int RS_WARPS = ROW_SCORE_THREADS / 32;

// Is (va, ia) ahead of (vb, ib)? Larger value, then lower id. Values are finite or the empty
// slot's -inf (id INT_MAX), so every element is ahead of an empty slot.
QA_DEVICE bool top_ahead(float va, int ia, float vb, int ib) { return va > vb || (va == vb && ia < ib); }

template <int KMAX>
QA_DEVICE void row_scores_impl(const int* __restrict__ state, const float* __restrict__ logits,
                               const int* __restrict__ targets, int vocab, int top_n, unsigned int* __restrict__ out) {
    __shared__ double s_sum[RS_WARPS];
    __shared__ float s_max[RS_WARPS];
    __shared__ int s_bad[RS_WARPS];
    __shared__ float c_val[RS_WARPS * KMAX];
    __shared__ int c_id[RS_WARPS * KMAX];
    __shared__ double s_log_z;
    const int r = blockIdx.x;
    // The run state is written by the host before the launch (common.cuh): read before the wait.
    const int n_tokens = state_n_tokens(state);
    pdl_prologue();
    if (r >= n_tokens) return;  // uniform per block
    const int k = max(1, min(top_n, KMAX));
    const float* row = logits + (size_t)r * vocab;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;

    float tv[KMAX];
    int ti[KMAX];
#pragma unroll
    for (int p = 0; p < KMAX; ++p) {
        tv[p] = -INFINITY;
        ti[p] = INT_MAX;
    }
    float m = -INFINITY;
    int bad = INT_MAX;
    double s = 0.0;
    for (int j = threadIdx.x; j < vocab; j += ROW_SCORE_THREADS) {
        const float x = row[j];
        if (!isfinite(x)) {
            bad = min(bad, j);
            continue;
        }
        if (top_ahead(x, j, tv[KMAX - 1], ti[KMAX - 1])) {
            // Into the last slot, then bubbled up: the list stays sorted (registers: every index
            // is a constant once unrolled).
            tv[KMAX - 1] = x;
            ti[KMAX - 1] = j;
#pragma unroll
            for (int p = KMAX - 1; p > 0; --p) {
                if (top_ahead(tv[p], ti[p], tv[p - 1], ti[p - 1])) {
                    const float v = tv[p];
                    const int i = ti[p];
                    tv[p] = tv[p - 1];
                    ti[p] = ti[p - 1];
                    tv[p - 1] = v;
                    ti[p - 1] = i;
                }
            }
        }
        if (x > m) {
            s = s * exp((double)m - (double)x);  // exp(-inf) = 0 on the first element
            m = x;
        }
        s += exp((double)x - (double)m);
    }
    // The block's maximum and first non-finite index, then every thread's sum rescaled to it.
    float wm = m;
    int wb = bad;
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) {
        wm = fmaxf(wm, __shfl_xor_sync(0xffffffffu, wm, off));
        wb = min(wb, __shfl_xor_sync(0xffffffffu, wb, off));
    }
    if (lane == 0) {
        s_max[warp] = wm;
        s_bad[warp] = wb;
    }
    // The warp's k best: k rounds, each taking the best head of the lanes' lists and popping it
    // from the lane that held it (ids are distinct, except the empty slots' INT_MAX: popping
    // every empty head changes nothing).
    for (int round = 0; round < k; ++round) {
        float hv = tv[0];
        int hi = ti[0];
#pragma unroll
        for (int off = 16; off > 0; off >>= 1) {
            const float ov = __shfl_xor_sync(0xffffffffu, hv, off);
            const int oi = __shfl_xor_sync(0xffffffffu, hi, off);
            if (top_ahead(ov, oi, hv, hi)) {
                hv = ov;
                hi = oi;
            }
        }
        if (lane == 0) {
            c_val[warp * KMAX + round] = hv;
            c_id[warp * KMAX + round] = hi;
        }
        const bool pop = ti[0] == hi;
#pragma unroll
        for (int p = 0; p < KMAX - 1; ++p) {
            tv[p] = pop ? tv[p + 1] : tv[p];
            ti[p] = pop ? ti[p + 1] : ti[p];
        }
        if (pop) {
            tv[KMAX - 1] = -INFINITY;
            ti[KMAX - 1] = INT_MAX;
        }
    }
    __syncthreads();
    float row_max = -INFINITY;
    int row_bad = INT_MAX;
#pragma unroll
    for (int w = 0; w < RS_WARPS; ++w) {
        row_max = fmaxf(row_max, s_max[w]);
        row_bad = min(row_bad, s_bad[w]);
    }
    double part = m == -INFINITY ? 0.0 : s * exp((double)m - (double)row_max);
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) part += __shfl_xor_sync(0xffffffffu, part, off);
    if (lane == 0) s_sum[warp] = part;
    __syncthreads();
    unsigned int* o = out + (size_t)(2 + 2 * k) * r;
    if (threadIdx.x == 0) {
        double total = 0.0;
#pragma unroll
        for (int w = 0; w < RS_WARPS; ++w) total += s_sum[w];  // warp order: deterministic
        const double log_z = (double)row_max + log(total);
        s_log_z = log_z;
        o[0] = __float_as_uint((float)((double)row[targets[r]] - log_z));
        o[1] = row_bad == INT_MAX ? 0u : (unsigned int)row_bad + 1u;
    }
    __syncthreads();
    // Candidate c (warp c / k's (c % k)-th best) ranks after every candidate ahead of it; empty
    // slots (equal to each other) by their candidate number, so that ranks are distinct. The
    // first k ranks are the row's k best.
    if (threadIdx.x < RS_WARPS * k) {
        const int c = threadIdx.x, slot = (c / k) * KMAX + c % k;
        const float v = c_val[slot];
        const int id = c_id[slot];
        int rank = 0;
        for (int d = 0; d < RS_WARPS * k; ++d) {
            const int other = (d / k) * KMAX + d % k;
            const float ov = c_val[other];
            const int oid = c_id[other];
            rank += top_ahead(ov, oid, v, id) || (ov == v && oid == id && d < c);
        }
        if (rank < k) {
            const bool empty = id == INT_MAX;
            o[2 + 2 * rank] = empty ? 0xFFFFFFFFu : (unsigned int)id;
            o[3 + 2 * rank] = __float_as_uint(empty ? -INFINITY : (float)((double)v - s_log_z));
        }
    }
}

}  // namespace

extern "C" __global__ void __launch_bounds__(ROW_SCORE_THREADS) row_scores(const int* __restrict__ state,
                                                                           const float* __restrict__ logits,
                                                                           const int* __restrict__ targets, int vocab,
                                                                           int top_n, unsigned int* __restrict__ out) {
    row_scores_impl<1>(state, logits, targets, vocab, top_n, out);
}

extern "C" __global__ void __launch_bounds__(ROW_SCORE_THREADS) row_scores_top(const int* __restrict__ state,
                                                                               const float* __restrict__ logits,
                                                                               const int* __restrict__ targets,
                                                                               int vocab, int top_n,
                                                                               unsigned int* __restrict__ out) {
    row_scores_impl<ROW_SCORE_MAX_TOP>(state, logits, targets, vocab, top_n, out);
}
