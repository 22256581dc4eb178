// Can a persistent kernel hide the links behind the bytes, where PDL chains cannot?
//
// experiments/stream_chain.cu showed a chain of PDL kernels costs its links (≈ 2.2 µs each) PLUS its
// weights' bytes, even when every op requests its weights before its wait: the next op's copies
// queue behind (and in front of) the running op's critical path, and an op cannot fetch ahead
// further than the one kernel that is resident beside it. This program runs the same synthetic
// decode (24 layers x 5 ops with the decode's weight sizes, every op reading the previous op's
// 896-float vector and writing the next) as ONE persistent kernel, one block per SM:
//   - a producer warp streams the block's slices of every op's weights, in op order, into a ring
//     of shared-memory slots with TMA bulk copies, as far ahead as free slots allow: it never
//     waits on a dependency, only on the ring;
//   - eight consumer warps wait for the previous op's vector, read it into shared memory, consume
//     the op's chunks from the ring (freeing each slot) and write one element per warp.
// Two ways to carry a link between ops:
//   counter  every block adds 1 to the op's counter after its stores (release); thread 0 of every
//            block polls it to the block count (acquire), then the block reads the vector (two
//            dependent L2 round trips after the last store: the poll, then the data)
//   ll       the NCCL "low-latency" protocol: every element is stored as one 64-bit word, value
//            and the op's epoch together, so polling the data IS the wait (one round trip);
//            every link has its own buffer (a block that only reads could otherwise still be
//            polling a buffer the next-but-one op overwrites)
// each with and without weights, and the ring at several depths; the ring alone (no links: its
// own bandwidth, against a plain streaming read of the same bytes); and the weights in registers
// instead of a ring (chain_regs: each op's loads issued just before its poll; chain_regs_ahead:
// the big ops' loads issued two or three links ahead, optionally in the order the ops need them,
// and optionally with each op's weights summed before its poll instead of after).
// Prints microseconds per layer (median of REPS graph replays, CUDA events); compare with
// stream_chain's `links` and `stream` lines from the same machine. Results: experiments/LOG.md,
// "Seventh session". The synthetic ops only sum their weights; experiments/mega_chain.cu does the
// GEMVs for real.
// Build: nvcc -O3 -arch=sm_90 -o ring_chain experiments/ring_chain.cu   Run: ./ring_chain [quick]
// (quick: the read bandwidth, the register forms, the ring alone and one ll chain with weights)
#include <cuda_fp16.h>

#include <cstdint>
#include <cstring>

#include "chain_common.cuh"

constexpr int K = CHAIN_K;
constexpr int LAYERS = 24;
constexpr int OPS = 5;
constexpr int LINKS = LAYERS * OPS;
#ifndef CONSUMER_WARPS
#define CONSUMER_WARPS 8  // how many warps consume the ring (a build knob: 16 and 24 were slower)
#endif
constexpr int CONSUMERS = CONSUMER_WARPS * 32;
constexpr int THREADS = CONSUMERS + 32;  // + the producer warp
#ifndef CHUNK_KB
#define CHUNK_KB 32  // bytes per ring slot, in KB (a build knob: 8 and 16 were slower)
#endif
constexpr int CHUNK = CHUNK_KB * 1024;
constexpr int MAX_SLOTS = 192 / CHUNK_KB;  // 192 KB of ring
constexpr int REPS = 20;
constexpr size_t OP_BYTES[OPS] = {2064384, 0, 1605632, 17432576, 8716288};

struct Params {
    size_t op_bytes[OPS];   // OP_BYTES (device code cannot read the host constant)
    size_t op_offset[OPS];  // byte offset of each op's weights inside one layer
    size_t layer_bytes;
    int slots;              // ring depth (slots of CHUNK bytes)
    int with_weights;
    int ll;                 // 1: flag-in-data links, 0: counter links
    int links;              // 0: no links at all (each block streams its slices alone: the ring's bandwidth)
    int stamp;              // 1: record g_stamps
    int sleep_ns;           // back-off between two polls (0: spin)
};

// Per op, in %globaltimer ns over all blocks: [0] earliest and [1] latest time a block had the
// previous op's vector, [2] latest time a block had consumed the op's chunks, [3] latest store of
// the op's element, [4] latest time the producer issued the op's last chunk.
__device__ unsigned long long g_stamps[LINKS][5];

// The weights read once by plain 16-byte loads, four in flight per thread: the read bandwidth a
// streaming kernel gets on this machine (what the ring's `none` line is to be compared with).
__global__ void read_all(const uint4* w, size_t n16, float* sink) {
    float acc = 0.0f;
    const size_t stride = (size_t)gridDim.x * blockDim.x;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n16; i += 4 * stride) {
        uint4 v[4];
#pragma unroll
        for (int u = 0; u < 4; ++u) v[u] = i + u * stride < n16 ? __ldcs(w + i + u * stride) : make_uint4(0, 0, 0, 0);
#pragma unroll
        for (int u = 0; u < 4; ++u) acc += __uint_as_float(v[u].x ^ v[u].y ^ v[u].z ^ v[u].w);
    }
    if (acc == 1.2345e30f) *sink = acc;
}

__device__ __forceinline__ void consumers_sync() { asm volatile("bar.sync 1, %0;" ::"n"(CONSUMERS) : "memory"); }

__device__ __forceinline__ unsigned smem_addr(const void* p) { return static_cast<unsigned>(__cvta_generic_to_shared(p)); }
__device__ __forceinline__ void mbar_wait(unsigned long long* bar, unsigned parity) {
    unsigned done = 0;
    while (!done) {
        asm volatile("{ .reg .pred p; mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2; selp.u32 %0, 1, 0, p; }"
                     : "=r"(done) : "r"(smem_addr(bar)), "r"(parity) : "memory");
    }
}

// A tree, not a chain: the consumers' latency per chunk is on the critical path.
__device__ __forceinline__ float sum_half8(uint4 v) {
    const __half2* h = reinterpret_cast<const __half2*>(&v);
    const float2 a = __half22float2(h[0]), b = __half22float2(h[1]), c = __half22float2(h[2]), d = __half22float2(h[3]);
    return ((a.x + a.y) + (b.x + b.y)) + ((c.x + c.y) + (d.x + d.y));
}

// Bytes of op `link`'s weights this block consumes (its slice, whole 16-byte words).
__device__ __forceinline__ int slice_bytes(const Params& p, int link, int blocks) {
    return p.with_weights ? (int)(p.op_bytes[link % OPS] / blocks / 16 * 16) : 0;
}

// ll: vectors are K 64-bit words, (epoch << 32) | float bits; counter: K floats (in `vec` too,
// one float per word's low half, so both modes share the buffers).
__global__ void __launch_bounds__(THREADS, 1)
chain(const char* weights, unsigned long long* vec, unsigned* counters, Params p) {
    extern __shared__ __align__(128) char ring[];
    __shared__ __align__(8) unsigned long long full[MAX_SLOTS], empty[MAX_SLOTS];
    __shared__ float xs[2][K];  // double-buffered: a slow warp may still sum the last vector
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    if (threadIdx.x == 0) {
        for (int s = 0; s < p.slots; ++s) {
            asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;" ::"r"(smem_addr(&full[s])));
            asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(smem_addr(&empty[s])), "r"(CONSUMER_WARPS));
        }
        asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
        asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
    }
    __syncthreads();

    if (warp == CONSUMER_WARPS) {  // the producer: every op's slice, in op order, into the ring
        if (lane != 0) return;
        unsigned seq = 0;
        for (int link = 0; link < LINKS; ++link) {
            const int bytes = slice_bytes(p, link, gridDim.x);
            const char* src = weights + (size_t)(link / OPS) * p.layer_bytes + p.op_offset[link % OPS] + (size_t)blockIdx.x * bytes;
            for (int c = 0; c * CHUNK < bytes; ++c, ++seq) {
                const int slot = seq % p.slots;
                if (seq >= (unsigned)p.slots) mbar_wait(&empty[slot], (seq / p.slots - 1) & 1);
                const int n = min(CHUNK, bytes - c * CHUNK);
                asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(smem_addr(&full[slot])), "r"(n) : "memory");
                asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];"
                             ::"r"(smem_addr(ring + slot * CHUNK)), "l"(src + (size_t)c * CHUNK), "r"(n), "r"(smem_addr(&full[slot]))
                             : "memory");
            }
            if (p.stamp) atomicMax(&g_stamps[link][4], now_ns());
        }
        return;
    }

    unsigned seq = 0;
    for (int link = 0; link < LINKS; ++link) {
        const unsigned long long* in = vec + (size_t)link * K;  // one buffer per link: no reuse
        float* x = xs[link % 2];
        unsigned long long* out = vec + (size_t)(link + 1) * K;
        // 1. The link: the previous op's vector, into shared memory.
        if (!p.links) {
            for (int i = threadIdx.x; i < K; i += CONSUMERS) x[i] = 0.0f;
        } else if (p.ll) {
            for (int i = threadIdx.x; i < K; i += CONSUMERS) {
                unsigned long long w;
                while ((unsigned)((w = ld_relaxed_u64(in + i)) >> 32) != (unsigned)link)
                    if (p.sleep_ns) __nanosleep(p.sleep_ns);
                x[i] = __uint_as_float((unsigned)w);
            }
        } else {
            if (link > 0 && threadIdx.x == 0) {
                while (ld_relaxed_u32(counters + link - 1) < gridDim.x)
                    if (p.sleep_ns) __nanosleep(p.sleep_ns);
                asm volatile("fence.acq_rel.gpu;" ::: "memory");
            }
            consumers_sync();
            for (int i = threadIdx.x; i < K; i += CONSUMERS) x[i] = __uint_as_float((unsigned)__ldcg(in + i));
        }
        consumers_sync();
        if (p.stamp && threadIdx.x == 0) {
            const unsigned long long t = now_ns();
            atomicMin(&g_stamps[link][0], t);
            atomicMax(&g_stamps[link][1], t);
        }
        float s = 0.0f;
        for (int i = lane; i < K; i += 32) s += x[i];
#pragma unroll
        for (int off = 16; off > 0; off >>= 1) s += __shfl_xor_sync(0xffffffffu, s, off);
        // 2. The op's weights, from the ring.
        const int bytes = slice_bytes(p, link, gridDim.x);
        float wsum = 0.0f;
        for (int c = 0; c * CHUNK < bytes; ++c, ++seq) {
            const int slot = seq % p.slots;
            mbar_wait(&full[slot], (seq / p.slots) & 1);
            const uint4* t = reinterpret_cast<const uint4*>(ring + slot * CHUNK);
            const int n16 = min(CHUNK, bytes - c * CHUNK) / 16;
            float w0 = 0.0f, w1 = 0.0f;  // two independent sums: loads in flight together
            for (int i = threadIdx.x; i < n16; i += 2 * CONSUMERS) {
                w0 += sum_half8(t[i]);
                if (i + CONSUMERS < n16) w1 += sum_half8(t[i + CONSUMERS]);
            }
            wsum += w0 + w1;
            __syncwarp();
            if (lane == 0) asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(smem_addr(&empty[slot])) : "memory");
        }
        if (p.stamp && lane == 0) atomicMax(&g_stamps[link][2], now_ns());
        // 3. This op's element (one per warp), as stream_chain computes it.
        const int j = blockIdx.x * CONSUMER_WARPS + warp;
        const float v = s * (1.0f / K) + (float)link + (wsum == 1.2345e30f ? 1.0f : 0.0f);
        if (lane == 0 && j < K) {
            if (p.ll) st_relaxed_u64(out + j, ((unsigned long long)(link + 1) << 32) | __float_as_uint(v));
            else out[j] = __float_as_uint(v);
            if (p.stamp) atomicMax(&g_stamps[link][3], now_ns());
        }
        if (p.links && !p.ll) {
            consumers_sync();
            if (threadIdx.x == 0) asm volatile("red.release.gpu.global.add.u32 [%0], 1;" ::"l"(counters + link) : "memory");
        }
    }
}

// The same chain with the weights in registers instead of a ring: every thread of a block issues
// its loads of op k's slice (REG_LOADS 16-byte loads, 512 threads) right after storing op k-1's
// element, then polls op k's input (ll), so the loads are in flight across the link.
constexpr int REG_THREADS = 512;
constexpr int REG_LOADS = 17;  // 132 KB of gate|up slice / (512 x 16 B), rounded up
constexpr int REG_G = 17, REG_D = 9, REG_S = 2;  // the same for gate|up, down, qkv/o_proj (chain_regs_ahead)

template <int R>
__device__ __forceinline__ void issue_loads(uint4 (&v)[R], const Params& p, const char* weights, int link) {
    const int bytes = slice_bytes(p, link, gridDim.x);
    const int n16 = bytes / 16;
    const uint4* src = reinterpret_cast<const uint4*>(weights + (size_t)(link / OPS) * p.layer_bytes + p.op_offset[link % OPS] +
                                                      (size_t)blockIdx.x * bytes);
#pragma unroll
    for (int r = 0; r < R; ++r) {
        const int i = threadIdx.x + r * REG_THREADS;
        v[r] = i < n16 ? __ldcs(src + i) : make_uint4(0, 0, 0, 0);
    }
}
template <int R>
__device__ __forceinline__ float sum_loads(const uint4 (&v)[R]) {
    float w = 0.0f;
#pragma unroll
    for (int r = 0; r < R; ++r) w += sum_half8(v[r]);
    return w;
}
// Polls op `link`'s input vector (ll), sums it, stores op `link`'s element with the weights'
// checksum (`weights_sum()`, evaluated after the poll, so the poll is not held up by the loads).
template <class F>
__device__ __forceinline__ void ll_link(unsigned long long* vec, float (&xs)[2][K], int link, F weights_sum) {
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const unsigned long long* in = vec + (size_t)link * K;  // one buffer per link: no reuse
    unsigned long long* out = vec + (size_t)(link + 1) * K;
    float* x = xs[link % 2];
    for (int i = threadIdx.x; i < K; i += REG_THREADS) {
        unsigned long long w;
        while ((unsigned)((w = ld_relaxed_u64(in + i)) >> 32) != (unsigned)link) {}
        x[i] = __uint_as_float((unsigned)w);
    }
    __syncthreads();
    float sx = 0.0f;
    for (int i = lane; i < K; i += 32) sx += x[i];
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) sx += __shfl_xor_sync(0xffffffffu, sx, off);
    const float wsum = weights_sum();
    // One element per warp (blocks whose warps would pass K store nothing).
    const int j = blockIdx.x * (REG_THREADS / 32) + warp;
    const float val = sx * (1.0f / K) + (float)link + (wsum == 1.2345e30f ? 1.0f : 0.0f);
    if (lane == 0 && j < K) st_relaxed_u64(out + j, ((unsigned long long)(link + 1) << 32) | __float_as_uint(val));
}

__global__ void __launch_bounds__(REG_THREADS, 1)
chain_regs(const char* weights, unsigned long long* vec, Params p) {
    __shared__ float xs[2][K];
    for (int link = 0; link < LINKS; ++link) {
        uint4 v[REG_LOADS];
        issue_loads(v, p, weights, link);
        ll_link(vec, xs, link, [&] { return sum_loads(v); });
    }
}

// chain_regs with the loads issued further ahead, into their own registers: gate|up's after the
// qkv op's store (in flight across the attention, o_proj and gate|up links), down's after
// o_proj's (across the gate|up and down links), o_proj's after the qkv op's (NEED_ORDER) or the
// attention op's, the next layer's qkv after gate|up's store (across two links).
// NEED_ORDER: every op's loads are issued in the order the ops need them (o_proj's before
// gate|up's), so a small op's bytes never queue behind a big op's. SUM_FIRST: the block sums
// (waits for) the op's own weights BEFORE it polls the op's input (later ops' loads issued
// earlier may still be in flight; the sum's arithmetic also moves ahead of the poll).
template <bool NEED_ORDER, bool SUM_FIRST>
__global__ void __launch_bounds__(REG_THREADS, 1)
chain_regs_ahead(const char* weights, unsigned long long* vec, Params p) {
    __shared__ float xs[2][K];
    uint4 vg[REG_G], vd[REG_D], vs[REG_S];
    issue_loads(vs, p, weights, 0);
    for (int layer = 0; layer < LAYERS; ++layer) {
        const int l0 = layer * OPS;
        // qkv: its loads were issued before (after the previous layer's down store)
        if (SUM_FIRST) {
            const float w = sum_loads(vs);
            ll_link(vec, xs, l0, [w] { return w; });
        } else {
            ll_link(vec, xs, l0, [&] { return sum_loads(vs); });
        }
        if (NEED_ORDER) issue_loads(vs, p, weights, l0 + 2);
        issue_loads(vg, p, weights, l0 + 3);
        ll_link(vec, xs, l0 + 1, [] { return 0.0f; });  // attention: no weights
        if (!NEED_ORDER) issue_loads(vs, p, weights, l0 + 2);
        if (SUM_FIRST) {
            const float w = sum_loads(vs);
            ll_link(vec, xs, l0 + 2, [w] { return w; });
        } else {
            ll_link(vec, xs, l0 + 2, [&] { return sum_loads(vs); });
        }
        issue_loads(vd, p, weights, l0 + 4);
        if (SUM_FIRST) {
            const float w = sum_loads(vg);
            ll_link(vec, xs, l0 + 3, [w] { return w; });
        } else {
            ll_link(vec, xs, l0 + 3, [&] { return sum_loads(vg); });
        }
        if (layer + 1 < LAYERS) issue_loads(vs, p, weights, l0 + OPS);
        if (SUM_FIRST) {
            const float w = sum_loads(vd);
            ll_link(vec, xs, l0 + 4, [w] { return w; });
        } else {
            ll_link(vec, xs, l0 + 4, [&] { return sum_loads(vd); });
        }
    }
}

int main(int argc, char** argv) {
    const bool quick = argc > 1;  // see the header
    int sms = 0;
    CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
    if (sms * CONSUMER_WARPS < K) {
        std::fprintf(stderr, "need at least %d SMs\n", (K + CONSUMER_WARPS - 1) / CONSUMER_WARPS);
        return 1;
    }
    // The register forms hold a block's slice of each op in REG_* loads per thread (sized for 132 SMs).
    for (int o = 0; o < OPS; ++o) {
        const size_t loads = OP_BYTES[o] / sms / 16;
        const size_t cap = (size_t)(o == 3 ? REG_G : o == 4 ? REG_D : REG_S) * REG_THREADS;
        if (loads > cap || loads > (size_t)REG_LOADS * REG_THREADS) {
            std::fprintf(stderr, "%d SMs: op %d's slice does not fit the register forms\n", sms, o);
            return 1;
        }
    }
    Params base = {};
    for (int o = 0; o < OPS; ++o) {
        base.op_bytes[o] = OP_BYTES[o];
        base.op_offset[o] = base.layer_bytes;
        base.layer_bytes += OP_BYTES[o];
    }
    const size_t total = base.layer_bytes * LAYERS;
    char* weights;
    unsigned long long* vec;
    unsigned* counters;
    CHECK(cudaMalloc(&weights, total + 4096));
    CHECK(cudaMemset(weights, 0x11, total + 4096));
    const size_t vec_bytes = sizeof(unsigned long long) * K * (LINKS + 1);  // one buffer per link
    CHECK(cudaMalloc(&vec, vec_bytes));
    CHECK(cudaMalloc(&counters, sizeof(unsigned) * LINKS));
    const int smem = MAX_SLOTS * CHUNK;
    CHECK(cudaFuncSetAttribute(chain, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    cudaStream_t s;
    CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    std::printf("%d blocks (one per SM), %d consumer warps, weights per layer %.1f MB\n", sms, CONSUMER_WARPS, base.layer_bytes / 1e6);

    double expected = -1.0;  // the final vector's checksum, the same in every form with links
    auto verify = [&](double sum) {
        if (expected < 0.0) expected = sum;
        return std::fabs(sum - expected) <= 1e-6 * std::fabs(expected) ? "" : "  CHECKSUM MISMATCH";
    };
    auto final_sum = [&]() {
        std::vector<unsigned long long> h(K);
        CHECK(cudaMemcpy(h.data(), vec + (size_t)LINKS * K, sizeof(unsigned long long) * K, cudaMemcpyDeviceToHost));
        double sum = 0;
        for (auto w : h) {
            float f;
            const unsigned bits = (unsigned)w;
            std::memcpy(&f, &bits, 4);
            sum += f;
        }
        return sum;
    };
    auto run = [&](int ll, int with_weights, int slots, int links = 1, int stamp = 0, int sleep_ns = 0) {
        Params p = base;
        p.ll = ll, p.with_weights = with_weights, p.slots = slots, p.links = links, p.stamp = stamp;
        p.sleep_ns = sleep_ns;
        if (stamp) {
            std::vector<unsigned long long> st(LINKS * 5, 0);
            for (int i = 0; i < LINKS; ++i) st[5 * i] = ~0ull;
            CHECK(cudaMemcpyToSymbol(g_stamps, st.data(), st.size() * 8));
        }
        CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
        CHECK(cudaMemsetAsync(vec, 0, vec_bytes, s));
        CHECK(cudaMemsetAsync(counters, 0, sizeof(unsigned) * LINKS, s));
        chain<<<sms, THREADS, smem, s>>>(weights, vec, counters, p);
        CHECK(cudaGetLastError());
        const double us = replay_median_ms(s, stamp ? 1 : REPS, stamp ? 0 : 3, [](int) {}) * 1000.0 / LAYERS;
        const double sum = final_sum();  // the last op wrote buffer LINKS
        std::printf("%-8s weights %-3s slots %2d sleep %4d ns%s%s: %7.2f us per layer, checksum %.3f%s\n",
                    links ? (ll ? "ll" : "counter") : "none", with_weights ? "yes" : "no", slots, sleep_ns,
                    stamp ? " stamped" : "", links ? "" : " (no links: the ring alone)", us, sum, links ? verify(sum) : "");
        if (!stamp) return;
        std::vector<unsigned long long> st(LINKS * 5);
        CHECK(cudaMemcpyFromSymbol(st.data(), g_stamps, st.size() * 8));
        std::printf("  op kind: release after prev store (first..last block) | chunks consumed after last release | store after consumed | producer issued last chunk, before (-) or after release (us, medians over layers)\n");
        for (int o = 0; o < OPS; ++o) {
            std::vector<double> r0, r1, c, w, pr;
            for (int l = 1; l < LAYERS; ++l) {
                const unsigned long long* a = &st[5 * (l * OPS + o)];
                const unsigned long long* b = &st[5 * (l * OPS + o - 1)];
                r0.push_back(((double)a[0] - (double)b[3]) / 1e3);
                r1.push_back(((double)a[1] - (double)b[3]) / 1e3);
                c.push_back(((double)a[2] - (double)a[1]) / 1e3);
                w.push_back(((double)a[3] - (double)a[2]) / 1e3);
                pr.push_back(((double)a[4] - (double)a[1]) / 1e3);
            }
            for (auto* v : {&r0, &r1, &c, &w, &pr}) std::sort(v->begin(), v->end());
            const size_t m = r0.size() / 2;
            std::printf("  op %d (%8zu B): %6.2f..%6.2f | %6.2f | %6.2f | %6.2f\n", o, OP_BYTES[o], r0[m], r1[m], c[m], w[m], pr[m]);
        }
    };
    {
        const size_t n16 = total / 16;
        cudaEvent_t t0, t1;
        CHECK(cudaEventCreate(&t0));
        CHECK(cudaEventCreate(&t1));
        std::vector<float> ms;
        for (int r = 0; r < 7; ++r) {
            CHECK(cudaEventRecord(t0, s));
            read_all<<<sms * 4, 256, 0, s>>>(reinterpret_cast<const uint4*>(weights), n16, reinterpret_cast<float*>(counters));
            CHECK(cudaEventRecord(t1, s));
            CHECK(cudaEventSynchronize(t1));
            float v;
            CHECK(cudaEventElapsedTime(&v, t0, t1));
            ms.push_back(v);
        }
        std::sort(ms.begin(), ms.end());
        std::printf("plain streaming read: %.0f GB/s -> %.2f us per layer (chunk %d KB, %d slots)\n", total / (ms[3] / 1e3) / 1e9,
                    ms[3] * 1e3 / LAYERS, CHUNK_KB, MAX_SLOTS);
    }
    // The register forms: `kernel` 0 chain_regs, 1 chain_regs_ahead, 2 the same in need order,
    // 3 and 4 the same two summing each op's weights before its poll.
    auto run_regs = [&](int kernel, int with_weights) {
        Params p = base;
        p.with_weights = with_weights;
        CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
        CHECK(cudaMemsetAsync(vec, 0, vec_bytes, s));
        if (kernel == 0) chain_regs<<<sms, REG_THREADS, 0, s>>>(weights, vec, p);
        if (kernel == 1) chain_regs_ahead<false, false><<<sms, REG_THREADS, 0, s>>>(weights, vec, p);
        if (kernel == 2) chain_regs_ahead<true, false><<<sms, REG_THREADS, 0, s>>>(weights, vec, p);
        if (kernel == 3) chain_regs_ahead<false, true><<<sms, REG_THREADS, 0, s>>>(weights, vec, p);
        if (kernel == 4) chain_regs_ahead<true, true><<<sms, REG_THREADS, 0, s>>>(weights, vec, p);
        CHECK(cudaGetLastError());
        const double us = replay_median_ms(s, REPS, 3, [](int) {}) * 1000.0 / LAYERS;
        const char* names[] = {"regs (ll, loads before the poll)", "regs ahead (gate|up 3 links ahead, down 2)",
                               "regs ahead (gate|up 3 links ahead, down 2, in need order)",
                               "regs ahead, weights summed before each poll", "regs ahead, in need order, summed before each poll"};
        const double sum = final_sum();
        std::printf("%s weights %-3s: %7.2f us per layer, checksum %.3f%s\n", names[kernel], with_weights ? "yes" : "no", us, sum, verify(sum));
    };
    run_regs(0, 0);
    run_regs(0, 1);
    run_regs(1, 0);
    run_regs(1, 1);
    run_regs(2, 1);
    run_regs(3, 0);
    run_regs(3, 1);
    run_regs(4, 1);
    run(0, 1, MAX_SLOTS, 0);  // the ring's own bandwidth, no links
    run(0, 1, std::max(1, MAX_SLOTS / 2), 0);
    if (quick) {
        run(1, 1, MAX_SLOTS);
        return 0;
    }
    for (int ll = 0; ll <= 1; ++ll) {
        run(ll, 0, MAX_SLOTS);
        for (int slots : {std::max(1, MAX_SLOTS / 3), std::max(1, 2 * MAX_SLOTS / 3)}) run(ll, 1, slots);
        for (int sleep_ns : {0, 100, 400}) run(ll, 1, MAX_SLOTS, 1, 0, sleep_ns);
    }
    run(1, 1, MAX_SLOTS, 1, 1);
    return 0;
}
