// Seeded sampling on the device: the function of runtime/src/sampler.rs (`sampler::sample`), bit
// for bit, so the CUDA graph can replace the greedy argmax with it and still match the CPU oracle.
//
// What is computed, for the row r = n_tokens - 1 of the logits and the draw position
// P = pos + n_tokens (state as in common.cuh):
//   1. Penalties over the distinct ids among the tokens fed at positions [max(0, P - window), P):
//      positions < pos come from `history` (i32 [max_seq]), positions >= pos from `fed` (the
//      tokens of this invocation). A positive logit is divided by repeat_penalty, another one
//      multiplied, then presence_penalty is subtracted -- each op rounded alone (__f*_rn: no FMA
//      contraction), as the CPU does. The result goes to a scratch copy `pl`: the logits buffer the
//      host may read back is never written.
//   2. temperature == 0: argmax of the penalised row with the CPU scan's tie/NaN rules (lowest id
//      on ties; NaN never wins unless all are NaN, then the last id).
//   3. Otherwise the k candidates (k resolved on the host: top_k, 256 when 0, at most 256, then
//      at most vocab here) with the largest (logit, -id) under Rust's f32::total_cmp, sorted so.
//   4. q_i = expf(l_i * (1/T) - l_0 * (1/T)) with glibc's expf algorithm ported exactly (see
//      libm_expf in libm_expf.cuh): CUDA's expf (up to 2 ulp) differs from glibc's in the last bits, which
//      would move cumulative sums and, rarely, the drawn id.
//   5. The CPU's sequential f32 sums, in candidate order: min-p on q (q_0 = 1), top-p on the
//      prefix sums, the draw u * total with u = uniform(seed, P) (SplitMix64, 64-bit integer math).
//   The chosen id goes to out[0] (the program's next_token buffer); the tokens of this invocation
//   are recorded in history[pos .. pos + n_tokens).
//
// dtypes:  logits f32 [rows, vocab]; fed i32 [n_tokens]; history i32 [max_seq]; params: struct
//          SampleParams below (40 bytes, written by the host with one copy per set_sampling);
//          out i32 [1]. Scratch: pl f32 [vocab]; hist u32 [4096] and ctrl u32 [8] (zero between
//          launches: the last block of each kernel resets what it used); part_v f32 / part_i i32
//          [gridDim.x]; list_a i32 [256]; list_b i32 [vocab].
// launch:  two kernels, same grid (G blocks of 256, G >= ceil(vocab / 4096), host-chosen ~2 per
//          SM), block b owning the contiguous ids [b * chunk, min(vocab, (b + 1) * chunk)).
//   sample_prep  -- every block: penalties on its chunk, `pl`, and (T > 0) a 4096-bin histogram
//                   of the top 12 bits of each value's order key, or (T == 0) its local argmax.
//                   The last block (atomic ticket): records the fed tokens into `history`; T == 0:
//                   reduces the argmaxes into out[0]; T > 0: finds the bin b* holding the k-th
//                   largest key and the count above it.
//   sample_pick  -- (T > 0 only) every block appends its ids with bin > b* to list_a (< k of
//                   them in all) and with bin == b* to list_b. The last block selects the
//                   remaining k - |list_a| from list_b by radix narrowing on the 64-bit key
//                   (order key << 32 | ~id), 8 bits per pass, sorts the k candidates by rank,
//                   computes q, the prefix sums and the draw.
// Why: the LM-head row is 600 KB (vocab 151936): one block would read it at one SM's bandwidth
// per pass, so the full-row passes are spread over the grid; the serial part (one block) only
// sees the few candidates near the k-th key. Two launches because the bin b* must be known by
// every block before the candidates are gathered (a grid-wide dependency).
#include "argmax.cuh"
#include "common.cuh"
#include "libm_expf.cuh"

namespace qa_sample {
constexpr int THREADS = SAMPLE_THREADS;                  // 256 (generated_constants.cuh)
constexpr int MAX_CHUNK = SAMPLE_MAX_CHUNK;              // 4096 ids per block (host: grid >= vocab / 4096)
constexpr int PER_THREAD = MAX_CHUNK / THREADS;  // 16
constexpr int MAX_CAND = SAMPLE_MAX_CANDIDATES;          // 256: sampler::MAX_CANDIDATES
constexpr int HIST_SHIFT = SAMPLE_HIST_SHIFT;            // 20: histogram on the top 12 bits of the order key
constexpr int HIST_BINS = 1 << (32 - HIST_SHIFT);
constexpr int BINS_PER_THREAD = HIST_BINS / THREADS;  // 16
constexpr unsigned FULL = 0xffffffffu;

// ctrl words
constexpr int TICKET_PREP = 0, TICKET_PICK = 1, COUNT_A = 2, COUNT_B = 3, BIN = 4;

// Must match runtime/src/cuda/sample.rs `device_params`.
struct SampleParams {
    float temperature;
    int k;            // candidates (1..=256)
    float top_p;
    float min_p;
    float repeat_penalty;
    float presence_penalty;
    int window;       // penalty_window
    int penalties;    // 1 when repeat_penalty != 1 or presence_penalty != 0
    unsigned long long seed;
};

// Order key: unsigned comparison of keys == f32::total_cmp of the values.
QA_DEVICE unsigned order_key(float v) {
    const unsigned b = __float_as_uint(v);
    return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}
QA_DEVICE float key_value(unsigned k) { return __uint_as_float((k & 0x80000000u) ? (k & 0x7fffffffu) : ~k); }
// Candidate key: larger = earlier (higher logit, then lower id). Distinct for distinct ids.
QA_DEVICE unsigned long long cand_key(float v, int id) {
    return ((unsigned long long)order_key(v) << 32) | (unsigned long long)(0xffffffffu - (unsigned)id);
}

QA_DEVICE float penalise(float l, const SampleParams& p) {
    const float t = l > 0.0f ? __fdiv_rn(l, p.repeat_penalty) : __fmul_rn(l, p.repeat_penalty);
    return __fsub_rn(t, p.presence_penalty);
}

// sampler::uniform: SplitMix64 of seed + (pos + 1) * golden gamma; 24 bits, exact in f32.
QA_DEVICE float uniform01(unsigned long long seed, unsigned long long pos) {
    unsigned long long z = seed + (pos + 1ull) * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (float)(z >> 40) / 16777216.0f;
}

// Inclusive suffix sum over the block's threads: the sum of v over threads >= threadIdx.x.
QA_DEVICE unsigned block_suffix_sum(unsigned v) {
    __shared__ unsigned warp_total[THREADS / 32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
    for (int off = 1; off < 32; off <<= 1) {
        const unsigned o = __shfl_down_sync(FULL, v, off);
        if (lane + off < 32) v += o;
    }
    if (lane == 0) warp_total[warp] = v;
    __syncthreads();
    unsigned later = 0;
    for (int w = warp + 1; w < THREADS / 32; ++w) later += warp_total[w];
    __syncthreads();
    return v + later;
}

// Appends `value` to list[*count ...] where pred holds; one atomic per warp. Every lane of the
// warp must call it.
QA_DEVICE void warp_append(int* list, unsigned* count, bool pred, int value) {
    const unsigned mask = __ballot_sync(FULL, pred);
    if (mask == 0) return;
    const int lane = threadIdx.x & 31, leader = __ffs(mask) - 1;
    unsigned base = 0;
    if (lane == leader) base = atomicAdd(count, (unsigned)__popc(mask));
    base = __shfl_sync(FULL, base, leader);
    if (pred) list[base + __popc(mask & ((1u << lane) - 1u))] = value;
}

// Publishes this block's global writes and takes a ticket; true in every thread of the last block.
QA_DEVICE bool last_block(unsigned* ticket) {
    __shared__ bool is_last;
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) is_last = atomicAdd(ticket, 1u) == gridDim.x - 1;
    __syncthreads();
    if (is_last) __threadfence();
    return is_last;
}
}  // namespace qa_sample

extern "C" __global__ void __launch_bounds__(qa_sample::THREADS) sample_prep(
    const int* __restrict__ state,
    const float* __restrict__ logits,    // [rows, vocab]
    const int* __restrict__ fed,         // [n_tokens]
    int* __restrict__ history,           // [max_seq]
    const qa_sample::SampleParams* __restrict__ params,
    float* __restrict__ pl,              // [vocab]
    unsigned* __restrict__ hist,         // [4096]
    float* __restrict__ part_v,          // [gridDim.x]
    int* __restrict__ part_i,            // [gridDim.x]
    unsigned* __restrict__ ctrl,         // [8]
    int* __restrict__ out,               // [1]
    int vocab, int chunk) {
    using namespace qa_sample;
    __shared__ unsigned s_hist[HIST_BINS];
    __shared__ unsigned char s_mark[MAX_CHUNK];
    pdl_prologue();
    const SampleParams p = *params;
    const int pos = state_pos(state), n = state_n_tokens(state);
    const float* row = logits + (size_t)(n - 1) * vocab;
    const int lo = blockIdx.x * chunk, hi = min(vocab, lo + chunk);
    const bool greedy = p.temperature == 0.0f;
    const int tid = threadIdx.x;

    float v[PER_THREAD];
#pragma unroll
    for (int i = 0; i < PER_THREAD; ++i) {
        const int j = lo + tid + i * THREADS;
        v[i] = j < hi ? row[j] : 0.0f;
    }
    if (p.penalties) {
        for (int j = tid; j < chunk; j += THREADS) s_mark[j] = 0;
        __syncthreads();
        const int end = pos + n, start = max(0, end - p.window);
        for (int t = start + tid; t < end; t += THREADS) {
            const int id = t < pos ? history[t] : fed[t - pos];
            if (id >= lo && id < hi) s_mark[id - lo] = 1;  // idempotent: each id once
        }
        __syncthreads();
#pragma unroll
        for (int i = 0; i < PER_THREAD; ++i) {
            const int j = lo + tid + i * THREADS;
            if (j < hi && s_mark[j - lo]) v[i] = penalise(v[i], p);
        }
    }
    if (greedy) {
        float bv = NAN;
        int bi = -1;
#pragma unroll
        for (int i = 0; i < PER_THREAD; ++i) {
            const int j = lo + tid + i * THREADS;
            if (j < hi && argmax_better(v[i], j, bv, bi)) { bv = v[i]; bi = j; }
        }
        argmax_block<THREADS>(bv, bi);
        if (tid == 0) { part_v[blockIdx.x] = bv; part_i[blockIdx.x] = bi; }
    } else {
        for (int b = tid; b < HIST_BINS; b += THREADS) s_hist[b] = 0;
        __syncthreads();
#pragma unroll
        for (int i = 0; i < PER_THREAD; ++i) {
            const int j = lo + tid + i * THREADS;
            if (j < hi) {
                pl[j] = v[i];
                atomicAdd(&s_hist[order_key(v[i]) >> HIST_SHIFT], 1u);
            }
        }
        __syncthreads();
        for (int b = tid; b < HIST_BINS; b += THREADS) {
            if (s_hist[b] != 0) atomicAdd(&hist[b], s_hist[b]);
        }
    }
    if (!last_block(&ctrl[TICKET_PREP])) return;

    // ---- last block ----
    for (int t = tid; t < n; t += THREADS) history[pos + t] = fed[t];
    if (greedy) {
        float bv = NAN;
        int bi = -1;
        for (int b = tid; b < (int)gridDim.x; b += THREADS) {
            const float ov = __ldcg(part_v + b);
            const int oi = __ldcg(part_i + b);
            if (argmax_better(ov, oi, bv, bi)) { bv = ov; bi = oi; }
        }
        argmax_block<THREADS>(bv, bi);
        if (tid == 0) out[0] = bi;
    } else {
        // Thread t owns bins [16t, 16t + 16); b* = the highest bin whose suffix count reaches k.
        const unsigned k = (unsigned)min(p.k, vocab);
        unsigned c[BINS_PER_THREAD];
        unsigned sum = 0;
#pragma unroll
        for (int i = 0; i < BINS_PER_THREAD; ++i) {
            c[i] = __ldcg(hist + tid * BINS_PER_THREAD + i);
            sum += c[i];
        }
        const unsigned incl = block_suffix_sum(sum);
        const unsigned above = incl - sum;
        if (above < k && incl >= k) {
            unsigned acc = above;
            for (int i = BINS_PER_THREAD - 1; i >= 0; --i) {
                if (acc + c[i] >= k) {
                    ctrl[BIN] = tid * BINS_PER_THREAD + i;
                    break;
                }
                acc += c[i];
            }
        }
#pragma unroll
        for (int i = 0; i < BINS_PER_THREAD; ++i) hist[tid * BINS_PER_THREAD + i] = 0;
    }
    if (tid == 0) ctrl[TICKET_PREP] = 0;  // ready for the next launch (graph replay)
}

extern "C" __global__ void __launch_bounds__(qa_sample::THREADS) sample_pick(
    const int* __restrict__ state,
    const qa_sample::SampleParams* __restrict__ params,
    const float* __restrict__ pl,        // [vocab], from sample_prep
    int* __restrict__ list_a,            // [256]
    int* __restrict__ list_b,            // [vocab]
    unsigned* __restrict__ ctrl,         // [8]
    int* __restrict__ out,               // [1]
    int vocab, int chunk) {
    using namespace qa_sample;
    __shared__ unsigned long long f_key[MAX_CAND];
    __shared__ int f_id[MAX_CAND];
    __shared__ int c_id[MAX_CAND];
    __shared__ float c_v[MAX_CAND];
    __shared__ float c_cum[MAX_CAND];
    __shared__ unsigned s_cnt[256];
    __shared__ unsigned s_nf, s_digit, s_above;
    __shared__ bool s_all;
    __shared__ int s_first[3];
    pdl_prologue();
    const SampleParams p = *params;
    if (p.temperature == 0.0f) return;  // sample_prep chose the token
    const int tid = threadIdx.x;
    const unsigned bstar = __ldcg(ctrl + BIN);
    const int lo = blockIdx.x * chunk, hi = min(vocab, lo + chunk);
    for (int base = lo; base < hi; base += THREADS) {  // block-uniform trip count
        const int j = base + tid;
        const unsigned bin = j < hi ? order_key(pl[j]) >> HIST_SHIFT : 0u;
        warp_append(list_a, &ctrl[COUNT_A], j < hi && bin > bstar, j);
        warp_append(list_b, &ctrl[COUNT_B], j < hi && bin == bstar, j);
    }
    if (!last_block(&ctrl[TICKET_PICK])) return;

    // ---- last block: the k candidates ----
    const int pos = state_pos(state), n = state_n_tokens(state);
    const unsigned k = (unsigned)min(p.k, vocab);
    const unsigned na = __ldcg(ctrl + COUNT_A), nb = __ldcg(ctrl + COUNT_B);
    for (unsigned i = tid; i < na; i += THREADS) {
        const int id = __ldcg(list_a + i);
        f_id[i] = id;
        f_key[i] = cand_key(pl[id], id);
    }
    if (tid == 0) s_nf = na;
    // Radix narrowing over list_b: keys there share their top 12 bits (bin b*); take the r
    // largest, fixing 8 more bits per pass. Terminates: keys are distinct, so once all 64 bits
    // are fixed the matching set is one key and it is taken whole.
    unsigned r = k - na;  // >= 1 by the choice of b*
    unsigned long long prefix = (unsigned long long)bstar << 52;
    int fixed = 52;  // bits [fixed, 64) of a key must equal prefix's
    for (;;) {
        const int width = min(8, fixed), shift = fixed - width;
        const unsigned long long fmask = ~0ull << fixed;
        const unsigned dmask = (1u << width) - 1u;
        s_cnt[tid] = 0;
        __syncthreads();
        for (unsigned i = tid; i < nb; i += THREADS) {
            const int id = __ldcg(list_b + i);
            const unsigned long long key = cand_key(pl[id], id);
            if ((key & fmask) == prefix) atomicAdd(&s_cnt[(unsigned)(key >> shift) & dmask], 1u);
        }
        __syncthreads();
        // Thread d holds digit d (digits above 2^width are empty).
        const unsigned cnt = s_cnt[tid];
        const unsigned incl = block_suffix_sum(cnt);
        if (incl - cnt < r && incl >= r) {
            s_digit = tid;
            s_above = incl - cnt;
            s_all = incl == r;
        }
        __syncthreads();
        const unsigned d = s_digit;
        const bool all = s_all;
        for (unsigned i = tid; i < nb; i += THREADS) {
            const int id = __ldcg(list_b + i);
            const unsigned long long key = cand_key(pl[id], id);
            if ((key & fmask) != prefix) continue;
            const unsigned dig = (unsigned)(key >> shift) & dmask;
            if (dig > d || (all && dig == d)) {
                const unsigned slot = atomicAdd(&s_nf, 1u);
                f_id[slot] = id;
                f_key[slot] = key;
            }
        }
        r -= s_above;
        prefix |= (unsigned long long)d << shift;
        fixed = shift;
        __syncthreads();
        if (all || fixed == 0) break;  // fixed == 0 cannot happen without `all` (distinct keys)
    }

    // Sort the k candidates (distinct keys) by rank: descending key.
    if ((unsigned)tid < k) {
        const unsigned long long key = f_key[tid];
        unsigned rank = 0;
        for (unsigned j = 0; j < k; ++j) rank += f_key[j] > key;
        c_id[rank] = f_id[tid];
        c_v[rank] = key_value((unsigned)(key >> 32));
    }
    __syncthreads();
    // Weights, exactly as the CPU: exp(l * inv_t - top), each op rounded alone.
    const float inv_t = __fdiv_rn(1.0f, p.temperature);
    const float top = __fmul_rn(c_v[0], inv_t);
    float q = 0.0f;
    if ((unsigned)tid < k) q = libm_expf(__fsub_rn(__fmul_rn(c_v[tid], inv_t), top));
    __syncthreads();
    if ((unsigned)tid < k) c_cum[tid] = q;
    if (tid < 3) s_first[tid] = (int)k;
    __syncthreads();
    if (tid == 0) {  // the CPU's running sums, in candidate order (one f32 add at a time)
        float acc = 0.0f;
        for (unsigned i = 0; i < k; ++i) {
            acc = __fadd_rn(acc, c_cum[i]);
            c_cum[i] = acc;
        }
    }
    // min-p: the prefix of candidates with q >= min_p (at least one).
    if ((unsigned)tid < k && !(q >= p.min_p)) atomicMin(&s_first[0], tid);
    __syncthreads();
    const int n_minp = max(s_first[0], 1);
    const float sum = c_cum[k - 1];
    // top-p: the first prefix whose mass reaches top_p of the whole.
    if (tid < n_minp && c_cum[tid] >= __fmul_rn(p.top_p, sum)) atomicMin(&s_first[1], tid);
    __syncthreads();
    const int n_keep = s_first[1] < n_minp ? s_first[1] + 1 : n_minp;
    const float u = uniform01(p.seed, (unsigned long long)pos + (unsigned long long)n);
    const float target = __fmul_rn(u, c_cum[n_keep - 1]);
    if (tid < n_keep && c_cum[tid] > target) atomicMin(&s_first[2], tid);
    __syncthreads();
    if (tid == 0) {
        const int pick = s_first[2] < n_keep ? s_first[2] : n_keep - 1;
        out[0] = c_id[pick];
        ctrl[COUNT_A] = 0;
        ctrl[COUNT_B] = 0;
        ctrl[TICKET_PICK] = 0;
    }
}
