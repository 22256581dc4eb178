// What the dependency-chain microbenchmarks (sync_chain.cu, stream_chain.cu, ring_chain.cu,
// mega_chain.cu) share: error checking, relaxed loads and stores for the links, the timer for
// stamps, the link's data dependency (read the previous op's vector), PDL launch configuration
// and timing a captured chain by graph replays.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <vector>

constexpr int CHAIN_K = 896;        // vector length (the default model's hidden size)
constexpr int CHAIN_THREADS = 256;  // 8 warps per block

#define CHECK(call)                                                                           \
    do {                                                                                      \
        cudaError_t e_ = (call);                                                              \
        if (e_ != cudaSuccess) {                                                              \
            std::fprintf(stderr, "%s:%d %s\n", __FILE__, __LINE__, cudaGetErrorString(e_)); \
            std::exit(1);                                                                     \
        }                                                                                     \
    } while (0)

// Relaxed GPU-scope accesses: the counter and flag-in-data links poll and publish with these.
__device__ __forceinline__ unsigned ld_relaxed_u32(const unsigned* p) {
    unsigned v;
    asm volatile("ld.relaxed.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
    return v;
}
__device__ __forceinline__ unsigned long long ld_relaxed_u64(const unsigned long long* p) {
    unsigned long long v;
    asm volatile("ld.relaxed.gpu.global.u64 %0, [%1];" : "=l"(v) : "l"(p) : "memory");
    return v;
}
__device__ __forceinline__ void st_relaxed_u64(unsigned long long* p, unsigned long long v) {
    asm volatile("st.relaxed.gpu.global.u64 [%0], %1;" ::"l"(p), "l"(v) : "memory");
}

// %globaltimer in nanoseconds (the stamped runs).
__device__ __forceinline__ unsigned long long now_ns() {
    unsigned long long t;
    asm volatile("mov.u64 %0, %globaltimer;" : "=l"(t));
    return t;
}

__device__ __forceinline__ void pdl_wait() { asm volatile("griddepcontrol.wait;" ::: "memory"); }
__device__ __forceinline__ void pdl_trigger() { asm volatile("griddepcontrol.launch_dependents;" ::: "memory"); }

// Every warp reads the whole input vector from L2 (ld.cg: other SMs wrote it after this kernel
// may have started) and sums it; every lane gets the sum.
__device__ __forceinline__ float read_vector(const float* in) {
    const int lane = threadIdx.x & 31;
    float s = 0.0f;
    for (int i = lane * 4; i < CHAIN_K; i += 128) {
        const float4 v = __ldcg(reinterpret_cast<const float4*>(in + i));
        s += v.x + v.y + v.z + v.w;
    }
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) s += __shfl_xor_sync(0xffffffffu, s, off);
    return s;
}

// The next op's vector: one element per warp, `s * (1/K) + link`.
__device__ __forceinline__ void write_vector(float* out, float s, int link) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int j = blockIdx.x * (CHAIN_THREADS / 32) + warp;
    if (lane == 0 && j < CHAIN_K) out[j] = s * (1.0f / CHAIN_K) + (float)link;
}

// The same plus `extra` (an op folds its weights' checksum in, so that no load is dead).
__device__ __forceinline__ void write_vector(float* out, float s, int link, float extra) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int j = blockIdx.x * (CHAIN_THREADS / 32) + warp;
    if (lane == 0 && j < CHAIN_K) out[j] = s * (1.0f / CHAIN_K) + (float)link + extra;
}

// A launch of `blocks` x CHAIN_THREADS on `s`, with programmatic stream serialization when `pdl`
// (`attr` must outlive the launch).
inline cudaLaunchConfig_t chain_config(int blocks, cudaStream_t s, bool pdl, cudaLaunchAttribute* attr) {
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = dim3(blocks);
    cfg.blockDim = dim3(CHAIN_THREADS);
    cfg.stream = s;
    attr->id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr->val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = attr;
    cfg.numAttrs = pdl ? 1 : 0;
    return cfg;
}

// Ends the capture the caller began on `s` (after recording the chain's launches), replays the graph `warm + reps` times (`before(r)` runs before replay
// r) and returns the median of the last `reps` replays in milliseconds (CUDA events).
template <class Before>
double replay_median_ms(cudaStream_t s, int reps, int warm, Before before) {
    cudaGraph_t graph;
    CHECK(cudaStreamEndCapture(s, &graph));
    cudaGraphExec_t exec;
    CHECK(cudaGraphInstantiate(&exec, graph, 0));
    cudaEvent_t t0, t1;
    CHECK(cudaEventCreate(&t0));
    CHECK(cudaEventCreate(&t1));
    std::vector<float> ms;
    for (int r = 0; r < reps + warm; ++r) {
        before(r);
        CHECK(cudaEventRecord(t0, s));
        CHECK(cudaGraphLaunch(exec, s));
        CHECK(cudaEventRecord(t1, s));
        CHECK(cudaEventSynchronize(t1));
        float v;
        CHECK(cudaEventElapsedTime(&v, t0, t1));
        if (r >= warm) ms.push_back(v);
    }
    std::sort(ms.begin(), ms.end());
    CHECK(cudaEventDestroy(t0));
    CHECK(cudaEventDestroy(t1));
    CHECK(cudaGraphExecDestroy(exec));
    CHECK(cudaGraphDestroy(graph));
    return ms[ms.size() / 2];
}
