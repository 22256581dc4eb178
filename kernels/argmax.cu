// Greedy sampling on the device: out[0] = argmax_j logits[n_tokens - 1, j], lowest index on ties,
// NaN never wins (if every value is NaN the last index wins, exactly like the CPU twin's scan).
//
// dtypes:  logits f32 [rows, vocab]; out i32 [1]; partial (f32 value, i32 index) pairs [gridDim.x];
//          counter u32 [1], zero between launches (the last block resets it).
// launch:  grid (n_blocks <= 1024, host-chosen ~ 2 per SM), block 256. One launch, two phases:
//          every block reduces a strided slice of the row into `partial`, then the last block to
//          finish (atomic ticket after a __threadfence) reduces the partials and writes out[0].
//          A single-block kernel would read the 600 KB LM-head row at one SM's bandwidth; a second
//          launch would cost a graph node. The order and the block reduction are argmax.cuh's
//          (shared with sample.cu).
#include "argmax.cuh"
#include "common.cuh"

extern "C" __global__ void __launch_bounds__(ARGMAX_THREADS) argmax_f32(
    const int* __restrict__ state,
    const float* __restrict__ logits,  // [rows, vocab]
    int* __restrict__ out,             // [1]
    float* __restrict__ part_v,        // [gridDim.x]
    int* __restrict__ part_i,          // [gridDim.x]
    unsigned int* __restrict__ counter,
    int vocab) {
    __shared__ bool is_last;
    // The run state is written by the host before the launch (common.cuh): read before the wait.
    const float* row = logits + (size_t)(state_n_tokens(state) - 1) * vocab;
    pdl_prologue();
    float v = NAN;
    int i = -1;  // worse than any element
    for (int j = blockIdx.x * blockDim.x + threadIdx.x; j < vocab; j += gridDim.x * blockDim.x) {
        const float x = row[j];
        if (argmax_better(x, j, v, i)) { v = x; i = j; }
    }
    argmax_block<ARGMAX_THREADS>(v, i);
    if (threadIdx.x == 0) {
        part_v[blockIdx.x] = v;
        part_i[blockIdx.x] = i;
        __threadfence();
        is_last = atomicAdd(counter, 1u) == gridDim.x - 1;
    }
    __syncthreads();
    if (!is_last) return;
    __threadfence();
    v = NAN;
    i = -1;
    for (int b = threadIdx.x; b < gridDim.x; b += blockDim.x) {
        const float bv = __ldcg(part_v + b);
        const int bi = __ldcg(part_i + b);
        if (argmax_better(bv, bi, v, i)) { v = bv; i = bi; }
    }
    argmax_block<ARGMAX_THREADS>(v, i);
    if (threadIdx.x == 0) {
        out[0] = i;
        *counter = 0;  // ready for the next launch (graph replay)
    }
}
