// Teacher-forced scores of a prefill's rows on the device (perplexity, prompt log-probabilities):
// for each row r < n_tokens of logits [rows, vocab], the log-probability of targets[r] under the
// row's log-softmax and the row's most likely token (argmax.cuh's order: lowest id on ties) with
// its log-probability. 16 bytes per row cross to the host instead of the row's 600 KB.
// CPU twin: runtime/src/scores.rs `row_score` (f64 throughout).
//
// dtypes:  logits f32 [rows, vocab]; targets i32 [rows] (each < vocab, checked by the host);
//          out u32 [rows][4]: target log-prob (f32 bits), top log-prob (f32 bits), top id, and
//          1 + the lowest index of a non-finite logit in the row (0: none; the host then refuses
//          the row as it refuses copied logits).
// launch:  grid (rows: those >= n_tokens return at once), block ROW_SCORE_THREADS
//          (kernel_constants.rs). One pass over the row: each thread keeps its
//          elements' maximum m and sum of exp(x - m), rescaled when m grows (an online softmax),
//          in f64 so that 150,000 terms lose nothing; the block combines them.
#include "argmax.cuh"
#include "common.cuh"

extern "C" __global__ void __launch_bounds__(ROW_SCORE_THREADS) row_scores(
    const int* __restrict__ state,
    const float* __restrict__ logits,  // [rows, vocab]
    const int* __restrict__ targets,   // [rows]
    int vocab,
    unsigned int* __restrict__ out) {  // [rows][4]
    __shared__ double s_sum[ROW_SCORE_THREADS / 32];
    __shared__ float s_max[ROW_SCORE_THREADS / 32];
    __shared__ int s_bad[ROW_SCORE_THREADS / 32];
    const int r = blockIdx.x;
    // The run state is written by the host before the launch (common.cuh): read before the wait.
    const int n_tokens = state_n_tokens(state);
    pdl_prologue();
    if (r >= n_tokens) return;  // uniform per block
    const float* row = logits + (size_t)r * vocab;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;

    float best_v = NAN, m = -INFINITY;
    int best_i = -1, bad = INT_MAX;
    double s = 0.0;
    for (int j = threadIdx.x; j < vocab; j += ROW_SCORE_THREADS) {
        const float x = row[j];
        if (!isfinite(x)) {
            bad = min(bad, j);
            continue;
        }
        if (argmax_better(x, j, best_v, best_i)) {
            best_v = x;
            best_i = j;
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
    __syncthreads();
    float row_max = -INFINITY;
    int row_bad = INT_MAX;
#pragma unroll
    for (int w = 0; w < ROW_SCORE_THREADS / 32; ++w) {
        row_max = fmaxf(row_max, s_max[w]);
        row_bad = min(row_bad, s_bad[w]);
    }
    double part = m == -INFINITY ? 0.0 : s * exp((double)m - (double)row_max);
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) part += __shfl_xor_sync(0xffffffffu, part, off);
    if (lane == 0) s_sum[warp] = part;
    argmax_block<ROW_SCORE_THREADS>(best_v, best_i);  // synchronises: s_sum is complete after it
    if (threadIdx.x == 0) {
        double total = 0.0;
#pragma unroll
        for (int w = 0; w < ROW_SCORE_THREADS / 32; ++w) total += s_sum[w];  // warp order: deterministic
        const double log_z = (double)row_max + log(total);
        const float target = row[targets[r]];
        unsigned int* o = out + 4 * (size_t)r;
        o[0] = __float_as_uint((float)((double)target - log_z));
        o[1] = __float_as_uint((float)((double)best_v - log_z));
        o[2] = (unsigned int)best_i;
        o[3] = row_bad == INT_MAX ? 0u : (unsigned int)row_bad + 1u;
    }
}
