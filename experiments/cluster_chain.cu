// What one dependency link costs when it stays inside a thread-block cluster.
//
// sync_chain.cu measured a grid-wide link at ~2.2 us (H200) however it is carried (kernel
// boundary with PDL, counters, flags, a persistent kernel's barrier). A fused decode op that keeps
// a whole head's work inside one cluster (qkv rows, attention, the head's o_proj columns) would
// replace some grid-wide links with cluster-wide ones: distributed shared memory (DSMEM) for the
// data and barrier.cluster for the order. This program times a chain of LINKS ops, each of which
// needs the whole 896-float vector the op before it wrote (every warp reads it and sums it), in
// two forms (and three diagnostic variants of the second: ops_cluster's `kind`):
//   pdl          one kernel per op over `blocks` blocks, the vector through L2 (sync_chain's pdl)
//   cluster C/M  kernels of M ops each, launched with PDL; a kernel is NC clusters of C blocks;
//                inside it, each block computes K / C of the next vector and stores it into every
//                block of its cluster (st.shared::cluster), then one cluster barrier (arrive.release,
//                wait.acquire) per op; the first op reads the vector from global memory, the last
//                writes it there (cluster 0).
// Prints microseconds per link (median of REPS graph replays, CUDA events) and a checksum: every
// form computes the same chain (each element of op l's vector is sum(vector of op l - 1) / K + l),
// so the checksums must agree.
// Build: nvcc -O3 -arch=sm_90 -o cluster_chain experiments/cluster_chain.cu   Run: ./cluster_chain
#include <cooperative_groups.h>

#include "chain_common.cuh"

namespace cg = cooperative_groups;

constexpr int K = CHAIN_K;
constexpr int LINKS = 120;  // 24 layers x 5 ops
constexpr int THREADS = CHAIN_THREADS;
constexpr int WARPS = THREADS / 32;
constexpr int REPS = 30;

__global__ void op_pdl(const float* in, float* out, int link) {
    pdl_wait();
    pdl_trigger();
    write_vector(out, read_vector(in), link);
}

// Every lane gets the sum of the K-float vector whose float4 at element i is `at(i)` (i a multiple
// of 4): from this block's shared memory, or from the cluster's blocks' (DSMEM loads).
template <class At>
__device__ __forceinline__ float warp_sum_vector(At at) {
    const int lane = threadIdx.x & 31;
    float s = 0.0f;
    for (int i = lane * 4; i < K; i += 128) {
        const float4 x = at(i);
        s += x.x + x.y + x.z + x.w;
    }
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) s += __shfl_xor_sync(0xffffffffu, s, off);
    return s;
}

// Ops link0 .. link0 + m - 1 of the chain inside one kernel; every cluster computes the same chain.
// The ops of one kernel alternate between two shared buffers, so one barrier per op suffices: a
// block stores op m's slice only after the barrier of op m - 1, which every block reaches after it
// has read op m - 2's vector from the same buffer.
// kind 0: the chain as described above; 1: the cluster barriers alone (no DSMEM stores, no sums:
// the vector stays the first op's, so the checksum differs); 2: the DSMEM stores and barriers
// without the sums (each warp stores its elements with one lane per destination, as kind 0); 3:
// the chain with the data pulled instead of pushed: each block stores its slice into its own
// shared memory, and after the barrier every warp reads the whole vector, the other blocks'
// slices through DSMEM loads (ld.shared::cluster).
__global__ void ops_cluster(const float* in, float* out, int link0, int m, int kind) {
    __shared__ __align__(16) float vec[2][K];
    cg::cluster_group cluster = cg::this_cluster();
    const int c = (int)cluster.num_blocks(), rank = (int)cluster.block_rank();
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    pdl_wait();
    pdl_trigger();
    // The first op's input from global memory (every block reads it whole).
    float s = read_vector(in);
    const int per = K / c;  // elements this block produces per op
    for (int op = 0; op < m; ++op) {
        const int link = link0 + op;
        float* nxt = vec[(op + 1) & 1];
        const float value = s * (1.0f / K) + (float)link;
        if (kind == 3) {
            for (int e = rank * per + threadIdx.x; e < (rank + 1) * per; e += THREADS) nxt[e] = value;
            cluster.sync();  // every block's slice is in its own shared memory
            // A float4 never straddles two blocks' slices: per % 4 == 0.
            s = warp_sum_vector([&](int i) {
                return *reinterpret_cast<const float4*>(cluster.map_shared_rank(nxt, i / per) + i);
            });
            continue;
        }
        // Warp w writes elements rank * per + w, + WARPS, ... into every block of the cluster.
        for (int e = rank * per + warp; kind != 1 && e < (rank + 1) * per; e += WARPS) {
            if (lane < c) {
                float* dst = cluster.map_shared_rank(nxt, lane);
                dst[e] = value;
            }
        }
        cluster.sync();  // every block's slice of nxt is in every block
        if (kind == 0) s = warp_sum_vector([&](int i) { return *reinterpret_cast<const float4*>(nxt + i); });
    }
    // The last op's vector to global memory: cluster 0's blocks, their own slices (from shared).
    if (blockIdx.x < (unsigned)c) {
        const float* last = vec[m & 1];
        for (int e = rank * per + threadIdx.x; e < (rank + 1) * per; e += THREADS) out[e] = last[e];
    }
    cluster.sync();  // no block leaves while another may still store into its shared memory
}

static double time_pdl(int blocks, float* a, float* b, cudaStream_t s) {
    CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
    for (int l = 0; l < LINKS; ++l) {
        cudaLaunchAttribute attr;
        cudaLaunchConfig_t cfg = chain_config(blocks, s, true, &attr);
        CHECK(cudaLaunchKernelEx(&cfg, op_pdl, (const float*)(l % 2 ? b : a), l % 2 ? a : b, l));
    }
    return replay_median_ms(s, REPS, 3, [](int) {}) * 1000.0 / LINKS;
}

// Kernels of m ops (LINKS / m kernels), nc clusters of c blocks each. The chain's op l reads the
// vector op l - 1 wrote: a kernel's first op reads global memory, so within a kernel the first
// op's link is the kernel boundary (PDL) and the others are cluster barriers.
static double time_cluster(int c, int nc, int m, int kind, float* a, float* b, cudaStream_t s) {
    CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
    for (int k = 0; k < LINKS / m; ++k) {
        cudaLaunchAttribute attrs[2];
        cudaLaunchConfig_t cfg = chain_config(c * nc, s, true, &attrs[0]);
        attrs[1].id = cudaLaunchAttributeClusterDimension;
        attrs[1].val.clusterDim.x = c;
        attrs[1].val.clusterDim.y = 1;
        attrs[1].val.clusterDim.z = 1;
        cfg.attrs = attrs;
        cfg.numAttrs = 2;
        CHECK(cudaLaunchKernelEx(&cfg, ops_cluster, (const float*)(k % 2 ? b : a), k % 2 ? a : b, k * m, m, kind));
    }
    return replay_median_ms(s, REPS, 3, [](int) {}) * 1000.0 / LINKS;
}

// The chain's final vector (which buffer holds it depends on the number of kernels).
static float checksum(const float* last) {
    std::vector<float> h(K);
    CHECK(cudaMemcpy(h.data(), last, sizeof(float) * K, cudaMemcpyDeviceToHost));
    double sum = 0;
    for (float v : h) sum += v;
    return (float)sum;
}

int main() {
    float *a, *b;
    CHECK(cudaMalloc(&a, sizeof(float) * K * 2));
    CHECK(cudaMalloc(&b, sizeof(float) * K * 2));
    cudaStream_t s;
    CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    CHECK(cudaFuncSetAttribute(ops_cluster, cudaFuncAttributeNonPortableClusterSizeAllowed, 1));
    for (int blocks : {132, 264}) {
        CHECK(cudaMemset(a, 0, sizeof(float) * K * 2));
        const double us = time_pdl(blocks, a, b, s);
        std::printf("pdl            blocks %4d:             %6.2f us per link, checksum %.3f\n", blocks, us,
                    checksum(LINKS % 2 ? b : a));
    }
    const char* kinds[] = {"ops", "barriers only", "stores+barriers", "ops, pulled"};
    for (int kind : {0, 1, 2, 3}) {
        for (int c : {2, 4, 8, 16}) {
            for (int m : {1, 10}) {
                CHECK(cudaMemset(a, 0, sizeof(float) * K * 2));
                CHECK(cudaMemset(b, 0, sizeof(float) * K * 2));
                const double us = time_cluster(c, 2, m, kind, a, b, s);
                const int kernels = LINKS / m;
                std::printf("%-16s cluster %2d x 2, %2d ops per kernel: %6.2f us per link, checksum %.3f\n", kinds[kind],
                            c, m, us, checksum(kernels % 2 ? b : a));
            }
        }
    }
    return 0;
}
