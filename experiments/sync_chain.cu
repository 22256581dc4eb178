// What one dependency link between two decode steps costs, by the way the link is made.
//
// A decode step is a chain of ~120 latency-bound ops (5 per layer): every op needs the whole
// vector the op before it wrote. This program times a chain of LINKS such ops, each of which
// reads the previous op's 896-float vector through L2, reduces it per warp and writes one float
// per warp (the next op's vector), in five forms:
//   plain       one kernel per op, in a CUDA graph
//   pdl         one kernel per op, programmatic dependent launch, griddepcontrol.wait at the top
//               (what the runtime does today)
//   flag        one kernel per op, PDL launch triggered at the top, then the op spins on a global
//               counter that every block of the op before increments after its stores
//   persistent  one kernel for the whole chain, a counter barrier between ops
//   pdl_mixed   pdl, every other op a kernel with 40 KB of static shared memory (as the attention
//               kernel between the GEMVs): does a change of the SM's L1/shared split between
//               neighbours cost a drain?
// then pdl and pdl_mixed again with every kernel's preferred carveout set to 100 % shared.
// Prints microseconds per link (median of REPS graph replays, CUDA events).
// Build: nvcc -O3 -arch=sm_90 -o sync_chain experiments/sync_chain.cu   Run: ./sync_chain [blocks]
#include "chain_common.cuh"

constexpr int K = CHAIN_K;
constexpr int LINKS = 120;  // 24 layers x 5 ops
constexpr int THREADS = CHAIN_THREADS;
constexpr int REPS = 30;

// The counter links: relaxed polls (ld_relaxed_u32), one acquire fence, a release reduction to
// signal.

// One op: every warp reads the whole input vector and writes one output element.
__device__ __forceinline__ void op_body(const float* in, float* out, int link) { write_vector(out, read_vector(in), link); }

__device__ __forceinline__ void wait_count(const unsigned* c, unsigned target) {
    if (threadIdx.x == 0) {
        while (ld_relaxed_u32(c) < target) __nanosleep(32);
        asm volatile("fence.acq_rel.gpu;" ::: "memory");
    }
    __syncthreads();
}

__device__ __forceinline__ void signal_count(unsigned* c) {
    __syncthreads();
    if (threadIdx.x == 0) asm volatile("red.release.gpu.global.add.u32 [%0], 1;" ::"l"(c) : "memory");
}

__global__ void op_plain(const float* in, float* out, int link) { op_body(in, out, link); }

__global__ void op_pdl(const float* in, float* out, int link) {
    pdl_wait();
    pdl_trigger();
    op_body(in, out, link);
}

// The same op with 40 KB of static shared memory in use (one store and one load, so it is kept).
__global__ void op_pdl_smem(const float* in, float* out, int link) {
    __shared__ float pad[10240];
    pdl_wait();
    pdl_trigger();
    pad[threadIdx.x * 40] = (float)link;
    __syncthreads();
    op_body(in, out, link + (int)(pad[((threadIdx.x + 1) % blockDim.x) * 40] - (float)link));
}

__global__ void op_flag(const float* in, float* out, int link, unsigned* counters) {
    pdl_trigger();
    if (link > 0) wait_count(counters + link - 1, gridDim.x);
    op_body(in, out, link);
    signal_count(counters + link);
}

__global__ void chain_persistent(float* a, float* b, unsigned* counters) {
    for (int link = 0; link < LINKS; ++link) {
        if (link > 0) wait_count(counters + link - 1, gridDim.x);
        op_body(link % 2 ? b : a, link % 2 ? a : b, link);
        signal_count(counters + link);
    }
}

enum Mode { PLAIN, PDL, FLAG, PERSISTENT, PDL_MIXED };

static void launch(Mode m, int link, int blocks, float* a, float* b, unsigned* counters, cudaStream_t s) {
    float* in = link % 2 ? b : a;
    float* out = link % 2 ? a : b;
    cudaLaunchAttribute attr;
    cudaLaunchConfig_t cfg = chain_config(blocks, s, m != PLAIN, &attr);
    if (m == PLAIN) CHECK(cudaLaunchKernelEx(&cfg, op_plain, (const float*)in, out, link));
    if (m == PDL || (m == PDL_MIXED && link % 2 == 0)) CHECK(cudaLaunchKernelEx(&cfg, op_pdl, (const float*)in, out, link));
    if (m == PDL_MIXED && link % 2 == 1) CHECK(cudaLaunchKernelEx(&cfg, op_pdl_smem, (const float*)in, out, link));
    if (m == FLAG) CHECK(cudaLaunchKernelEx(&cfg, op_flag, (const float*)in, out, link, counters));
}

static double time_mode(Mode m, int blocks, float* a, float* b, unsigned* counters, cudaStream_t s) {
    CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
    CHECK(cudaMemsetAsync(counters, 0, sizeof(unsigned) * LINKS, s));
    if (m == PERSISTENT) {
        chain_persistent<<<blocks, THREADS, 0, s>>>(a, b, counters);
        CHECK(cudaGetLastError());
    } else {
        for (int l = 0; l < LINKS; ++l) launch(m, l, blocks, a, b, counters, s);
    }
    return replay_median_ms(s, REPS, 3, [](int) {}) * 1000.0 / LINKS;
}

// The chain's final vector, to check that every form computed the same thing.
static float checksum(float* a, float* b) {
    std::vector<float> h(K);
    CHECK(cudaMemcpy(h.data(), LINKS % 2 ? b : a, sizeof(float) * K, cudaMemcpyDeviceToHost));
    double s = 0;
    for (float v : h) s += v;
    return (float)s;
}

int main(int argc, char** argv) {
    const int blocks = argc > 1 ? std::atoi(argv[1]) : 132;
    if (blocks * (THREADS / 32) < K) {
        std::fprintf(stderr, "need at least %d blocks\n", K / (THREADS / 32));
        return 1;
    }
    float *a, *b;
    unsigned* counters;
    CHECK(cudaMalloc(&a, sizeof(float) * K * 2));
    CHECK(cudaMalloc(&b, sizeof(float) * K * 2));
    CHECK(cudaMalloc(&counters, sizeof(unsigned) * LINKS));
    cudaStream_t s;
    CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    const char* names[] = {"plain", "pdl", "flag", "persistent", "pdl_mixed"};
    auto run = [&](int m, const char* suffix) {
        CHECK(cudaMemset(a, 0, sizeof(float) * K * 2));
        const double us = time_mode((Mode)m, blocks, a, b, counters, s);
        CHECK(cudaMemset(a, 0, sizeof(float) * K * 2));
        time_mode((Mode)m, blocks, a, b, counters, s);  // fresh input, then one more run for the checksum
        std::printf("%-11s%-9s blocks %4d: %6.2f us per link, checksum %.3f\n", names[m], suffix, blocks, us, checksum(a, b));
    };
    for (int m = PLAIN; m <= PDL_MIXED; ++m) run(m, "");
    CHECK(cudaFuncSetAttribute(op_pdl, cudaFuncAttributePreferredSharedMemoryCarveout, 100));
    CHECK(cudaFuncSetAttribute(op_pdl_smem, cudaFuncAttributePreferredSharedMemoryCarveout, 100));
    run(PDL, " carve100");
    run(PDL_MIXED, " carve100");
    return 0;
}
