// A persistent decode-layer chain with real GEMV arithmetic: does the ring_chain.cu result (links
// carried in the data at ≈ 1.4-1.6 µs, weights loaded links ahead: 13.3 µs per layer against the
// PDL chain's 19.5) survive real data movement?
//
// One kernel, one block of 512 threads per SM, runs 24 layers of five ops with the default
// model's shapes:
//   Q  RMSNorm(x) times Wq [1152 x 896]          (the qkv projection; no bias/RoPE here)
//   A  the first 896 of Q's 1152 outputs          (a stand-in for attention at depth 0)
//   O  A's vector times Wo [896 x 896]
//   G  RMSNorm(O's) times Wgu [2 x 4864 x 896], rows (gate, up) interleaved, SwiGLU -> h [4864]
//   D  h times Wd [896 x 4864]
// Block b owns a contiguous run of every matrix's rows. Every op's output element is published as
// one 64-bit word (epoch << 32 | float bits: the NCCL low-latency protocol), and every block polls
// the whole input vector of the op it runs, so observing the data is the synchronisation.
// Weight loads go to registers (flat: thread t loads 16-byte words t, t + 512, ...), issued
//   before   right before the op's own poll (in flight across one link),
//   ahead    in the order the ops need them, as early as registers allow: O's and G's after Q,
//            D's after O, the next layer's Q after G (G's bytes in flight across three links), or
//   late     after the op's input has arrived (nothing in flight across a link).
// Every op's output is checked on the host against the same op computed from the GPU's own input
// vector (so errors do not compound), and the time printed per layer (median of REPS graph
// replays, CUDA events; the replay includes a memset of the link buffers). -DLIGHT builds a
// diagnostic whose GEMVs only sum their weights (what the arithmetic costs; no check).
// Results: experiments/LOG.md, "Seventh session".
// Build: nvcc -O3 -arch=sm_90 -o mega_chain experiments/mega_chain.cu   Run: ./mega_chain
#include <cuda_fp16.h>

#include <cmath>
#include <cstdint>
#include <cstring>

#include "chain_common.cuh"

constexpr int H = 896, QKV = 1152, FFN = 4864, LAYERS = 24, OPS = 5, LINKS = LAYERS * OPS;
constexpr int T = 512;       // threads per block
constexpr int MAXLEN = FFN;  // longest vector between two ops (h)
constexpr int REPS = 20;
constexpr float EPS = 1e-6f;
#ifdef LIGHT
constexpr bool LIGHT_BUILD = true;
#else
constexpr bool LIGHT_BUILD = false;
#endif
enum Op { OQ, OA, OO, OG, OD };
// Per op: matrix rows and columns, input and output vector lengths (functions: device code
// cannot index a host constant array).
__host__ __device__ constexpr int rows_of(int o) { return o == OQ ? QKV : o == OO || o == OD ? H : o == OG ? 2 * FFN : 0; }
__host__ __device__ constexpr int cols_of(int o) { return o == OD ? FFN : o == OA ? 0 : H; }
__host__ __device__ constexpr int in_len(int o) { return o == OA ? QKV : o == OD ? FFN : H; }
__host__ __device__ constexpr int out_len(int o) { return o == OQ ? QKV : o == OG ? FFN : H; }
// 16-byte loads per thread that hold a block's share of each matrix (at >= 132 blocks).
constexpr int R_Q = 2, R_O = 2, R_G = 17, R_D = 9;

struct Params {
    size_t op_offset[OPS];  // halves from a layer's start to each matrix
    size_t layer_halves;
    int with_weights;
};

// One output element as a 64-bit word: epoch 1 (this replay; the buffers are zeroed before it) and the value.
__device__ __forceinline__ void publish(unsigned long long* p, float v) { st_relaxed_u64(p, (1ull << 32) | __float_as_uint(v)); }

// Block b's rows of op o: [first, last). G's are whole (gate, up) pairs.
__host__ __device__ inline void block_rows(int o, int b, int blocks, int* first, int* last) {
    if (o == OG) {
        *first = 2 * (int)((long)b * FFN / blocks);
        *last = 2 * (int)((long)(b + 1) * FFN / blocks);
    } else {
        *first = (int)((long)b * rows_of(o) / blocks);
        *last = (int)((long)(b + 1) * rows_of(o) / blocks);
    }
}

struct Shared {
    float x[MAXLEN];  // the op's input vector
    float rows[80];   // the block's row sums
    float red[T / 32];
};

// Op `link`'s slab for this block, loaded into v (zeros past the slab).
template <int R>
__device__ __forceinline__ void issue(uint4 (&v)[R], const __half* w, const Params& p, int link) {
    const int o = link % OPS;
    int first, last;
    block_rows(o, blockIdx.x, gridDim.x, &first, &last);
    const int n16 = p.with_weights ? (last - first) * cols_of(o) / 8 : 0;
    const uint4* src = reinterpret_cast<const uint4*>(w + (size_t)(link / OPS) * p.layer_halves + p.op_offset[o] + (size_t)first * cols_of(o));
#pragma unroll
    for (int r = 0; r < R; ++r) {
        const int i = threadIdx.x + r * T;
        v[r] = i < n16 ? __ldcs(src + i) : make_uint4(0, 0, 0, 0);
    }
}

__device__ __forceinline__ float block_sum(float v, Shared& sh) {
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
    __syncthreads();
    if ((threadIdx.x & 31) == 0) sh.red[threadIdx.x >> 5] = v;
    __syncthreads();
    float s = 0.0f;
#pragma unroll
    for (int i = 0; i < T / 32; ++i) s += sh.red[i];
    return s;
}

// The op's input into sh.x (spinning on each word until it carries this replay's epoch), then
// RMSNorm (unit weights) for the ops that start with one.
template <int LEN>
__device__ __forceinline__ void take_input(const unsigned long long* in, bool norm, Shared& sh) {
    // Every word this thread needs is requested at once (a spin per word would make them
    // successive round trips: 10 for h), then only the stale ones again.
    constexpr int PER = (LEN + T - 1) / T, len = LEN;
    unsigned long long w[PER];
#pragma unroll
    for (int k = 0; k < PER; ++k) {
        const int i = threadIdx.x + k * T;
        w[k] = i < len ? ld_relaxed_u64(in + i) : (1ull << 32);
    }
    float ss = 0.0f;
#pragma unroll
    for (int k = 0; k < PER; ++k) {
        const int i = threadIdx.x + k * T;
        if (i >= len) break;
        while (w[k] >> 32 != 1ull) w[k] = ld_relaxed_u64(in + i);
        const float f = __uint_as_float((unsigned)w[k]);
        sh.x[i] = f;
        ss += f * f;
    }
    if (threadIdx.x < 80) sh.rows[threadIdx.x] = 0.0f;
    if (norm) {
        const float scale = rsqrtf(block_sum(ss, sh) / len + EPS);
        for (int i = threadIdx.x; i < len; i += T) sh.x[i] *= scale;
    }
    __syncthreads();
}

__device__ __forceinline__ float dot8(uint4 w, const float* x) {
    const __half2* h = reinterpret_cast<const __half2*>(&w);
    const float4 a = *reinterpret_cast<const float4*>(x), b = *reinterpret_cast<const float4*>(x + 4);
    const float2 w0 = __half22float2(h[0]), w1 = __half22float2(h[1]), w2 = __half22float2(h[2]), w3 = __half22float2(h[3]);
    return (w0.x * a.x + w0.y * a.y) + (w1.x * a.z + w1.y * a.w) + ((w2.x * b.x + w2.y * b.y) + (w3.x * b.z + w3.y * b.w));
}

// Row sums of the block's slab times sh.x into sh.rows. A row is >= 32 words long, so a warp's
// 32 consecutive words span at most two rows: two warp sums, two shared atomics.
template <int R>
__device__ __forceinline__ void gemv(const uint4 (&v)[R], int o, int n16, Shared& sh) {
#ifdef LIGHT  // a diagnostic build: the weights summed, no x, one atomic per warp (wrong results)
    float acc = 0.0f;
#pragma unroll
    for (int r = 0; r < R; ++r) {
        const __half2* h = reinterpret_cast<const __half2*>(&v[r]);
        acc += __low2float(h[0]) + __high2float(h[3]);
    }
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, off);
    if ((threadIdx.x & 31) == 0) atomicAdd(&sh.rows[0], acc);
    __syncthreads();
    return;
#endif
    const int k8 = cols_of(o) / 8, lane = threadIdx.x & 31;
#pragma unroll
    for (int r = 0; r < R; ++r) {
        const int i = threadIdx.x + r * T;
        if (r * T + (threadIdx.x & ~31) >= n16) continue;  // the whole warp is past the slab
        const int ic = min(i, n16 - 1);
        const int row = ic / k8;
        const float part = i < n16 ? dot8(v[r], sh.x + (ic % k8) * 8) : 0.0f;
        const int row0 = __shfl_sync(0xffffffffu, row, 0), row31 = __shfl_sync(0xffffffffu, row, 31);
        float a = row == row0 ? part : 0.0f, b = row == row0 ? 0.0f : part;
#pragma unroll
        for (int off = 16; off > 0; off >>= 1) {
            a += __shfl_xor_sync(0xffffffffu, a, off);
            b += __shfl_xor_sync(0xffffffffu, b, off);
        }
        if (lane == 0) atomicAdd(&sh.rows[row0], a);
        if (lane == 31 && row31 != row0) atomicAdd(&sh.rows[row31], b);
    }
    __syncthreads();
}

// Publishes this block's outputs of op o (link `link`) from sh.rows (A: from sh.x).
__device__ __forceinline__ void epilogue(int o, unsigned long long* out, Shared& sh) {
    int first, last;
    block_rows(o == OA ? OO : o, blockIdx.x, gridDim.x, &first, &last);  // A: O's split of 896
    const int n = last - first;
    if (o == OA) {
        for (int j = threadIdx.x; j < n; j += T) publish(out + first + j, sh.x[first + j]);
    } else if (o == OG) {
        for (int u = threadIdx.x; u < n / 2; u += T) {
            const float g = sh.rows[2 * u], up = sh.rows[2 * u + 1];
            publish(out + first / 2 + u, g / (1.0f + __expf(-g)) * up);
        }
    } else {
        for (int j = threadIdx.x; j < n; j += T) publish(out + first + j, sh.rows[j]);
    }
    __syncthreads();  // sh.x and sh.rows are free for the next op
}

// LATE: the op's loads are issued only after its input arrived (nothing in flight across the link).
template <int o, bool LATE, int R>
__device__ __forceinline__ void run_op(uint4 (&v)[R], const __half* w, int link, const unsigned long long* x0, unsigned long long* bufs, Shared& sh,
                                       const Params& p) {
    const unsigned long long* in = link == 0 ? x0 : bufs + (size_t)(link - 1) * MAXLEN;
    take_input<in_len(o)>(in, o == OQ || o == OG, sh);
    if (LATE && o != OA) issue(v, w, p, link);
    if (o != OA) {
        int first, last;
        block_rows(o, blockIdx.x, gridDim.x, &first, &last);
        gemv(v, o, p.with_weights ? (last - first) * cols_of(o) / 8 : 0, sh);
    }
    epilogue(o, bufs + (size_t)link * MAXLEN, sh);
}

// MODE 0: each op's loads right before its poll; 1: ahead, in need order; 2: after its poll.
template <int MODE>
__global__ void __launch_bounds__(T, 1) mega(const __half* w, const unsigned long long* x0, unsigned long long* bufs, Params p) {
    constexpr bool AHEAD = MODE == 1, LATE = MODE == 2;
    __shared__ __align__(16) Shared sh;
    uint4 vq[R_Q], vo[R_O], vg[R_G], vd[R_D];
    uint4 none[1] = {make_uint4(0, 0, 0, 0)};
    if (AHEAD) issue(vq, w, p, 0);
    for (int layer = 0; layer < LAYERS; ++layer) {
        const int l = layer * OPS;
        if (MODE == 0) issue(vq, w, p, l + OQ);
        run_op<OQ, LATE>(vq, w, l + OQ, x0, bufs, sh, p);
        if (AHEAD) {
            issue(vo, w, p, l + OO);
            issue(vg, w, p, l + OG);
        }
        run_op<OA, LATE>(none, w, l + OA, x0, bufs, sh, p);
        if (MODE == 0) issue(vo, w, p, l + OO);
        run_op<OO, LATE>(vo, w, l + OO, x0, bufs, sh, p);
        if (AHEAD) issue(vd, w, p, l + OD);
        if (MODE == 0) issue(vg, w, p, l + OG);
        run_op<OG, LATE>(vg, w, l + OG, x0, bufs, sh, p);
        if (AHEAD && layer + 1 < LAYERS) issue(vq, w, p, l + OPS + OQ);
        if (MODE == 0) issue(vd, w, p, l + OD);
        run_op<OD, LATE>(vd, w, l + OD, x0, bufs, sh, p);
    }
}

// Deterministic weights in [-1, 1) / sqrt(cols), x0 in [-1, 1).
__device__ __host__ inline float hash_unit(uint64_t i) {
    i ^= i >> 33;
    i *= 0xff51afd7ed558ccdull;
    i ^= i >> 33;
    i *= 0xc4ceb9fe1a85ec53ull;
    i ^= i >> 33;
    return (float)(i >> 40) / (float)(1ull << 23) - 1.0f;
}
__global__ void fill(__half* w, size_t n, Params p) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        const size_t in_layer = i % p.layer_halves;
        int o = 0;
        while (o + 1 < OPS && in_layer >= p.op_offset[o + 1]) ++o;
        w[i] = __float2half(hash_unit(i) / sqrtf((float)cols_of(o)));
    }
}

static float half_to_float(uint16_t h) {
    __half_raw r;
    r.x = h;
    return __half2float(__half(r));
}

// Every op's output against the op computed on the host from the GPU's own input vector; the
// largest error relative to the row's sum of |w x| (1 for elementwise ops).
static double check(const std::vector<uint16_t>& w, const std::vector<unsigned long long>& x0, const std::vector<unsigned long long>& bufs,
                    const Params& p, std::vector<float>& lut) {
    auto val = [](unsigned long long word) {
        float f;
        const unsigned bits = (unsigned)word;
        std::memcpy(&f, &bits, 4);
        return f;
    };
    double worst = 0.0;
    std::vector<float> x(MAXLEN);
    for (int link = 0; link < LINKS; ++link) {
        const int o = link % OPS;
        const unsigned long long* in = link == 0 ? x0.data() : bufs.data() + (size_t)(link - 1) * MAXLEN;
        const unsigned long long* out = bufs.data() + (size_t)link * MAXLEN;
        double ss = 0.0;
        for (int i = 0; i < in_len(o); ++i) x[i] = val(in[i]), ss += (double)x[i] * x[i];
        if (o == OQ || o == OG) {
            const float scale = 1.0f / std::sqrt((float)(ss / in_len(o)) + EPS);
            for (int i = 0; i < in_len(o); ++i) x[i] *= scale;
        }
        if (o == OA) {
            for (int j = 0; j < H; ++j) worst = std::max(worst, (double)std::fabs(val(out[j]) - x[j]));
            continue;
        }
        const uint16_t* m = w.data() + (size_t)(link / OPS) * p.layer_halves + p.op_offset[o];
        std::vector<double> row(rows_of(o)), mag(rows_of(o));
        for (int r = 0; r < rows_of(o); ++r) {
            double s = 0.0, a = 0.0;
            for (int c = 0; c < cols_of(o); ++c) {
                const double t = (double)lut[m[(size_t)r * cols_of(o) + c]] * x[c];
                s += t, a += std::fabs(t);
            }
            row[r] = s, mag[r] = a;
        }
        for (int j = 0; j < out_len(o); ++j) {
            double want = row[j], scale = mag[j] + 1e-30;
            if (o == OG) {
                const double g = row[2 * j], u = row[2 * j + 1];
                want = g / (1.0 + std::exp(-g)) * u;
                scale = (mag[2 * j] + 1e-30) * (std::fabs(u) + mag[2 * j + 1]) + 1e-30;
            }
            worst = std::max(worst, std::fabs(val(out[j]) - want) / scale);
        }
    }
    return worst;
}

int main() {
    int sms = 0;
    CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
    const int regs[OPS] = {R_Q, 0, R_O, R_G, R_D};
    for (int o = 0; o < OPS; ++o) {
        for (int b = 0; b < sms && o != OA; ++b) {
            int first, last;
            block_rows(o, b, sms, &first, &last);
            if ((last - first) * cols_of(o) / 8 > regs[o] * T || last - first > 80) {
                std::fprintf(stderr, "%d SMs: op %d's share does not fit the kernel's registers\n", sms, o);
                return 1;
            }
        }
    }
    Params p = {};
    for (int o = 0; o < OPS; ++o) {
        p.op_offset[o] = p.layer_halves;
        p.layer_halves += (size_t)rows_of(o) * cols_of(o);
    }
    const size_t n = p.layer_halves * LAYERS;
    __half* w;
    unsigned long long *x0, *bufs;
    CHECK(cudaMalloc(&w, n * 2));
    CHECK(cudaMalloc(&x0, sizeof(unsigned long long) * H));
    CHECK(cudaMalloc(&bufs, sizeof(unsigned long long) * MAXLEN * LINKS));
    fill<<<sms * 8, 256>>>(w, n, p);
    CHECK(cudaGetLastError());
    std::vector<unsigned long long> hx0(H);
    for (int i = 0; i < H; ++i) {
        const float f = hash_unit(0x5eedull + i);
        unsigned bits;
        std::memcpy(&bits, &f, 4);
        hx0[i] = (1ull << 32) | bits;
    }
    CHECK(cudaMemcpy(x0, hx0.data(), sizeof(unsigned long long) * H, cudaMemcpyHostToDevice));
    std::vector<uint16_t> hw(n);
    CHECK(cudaMemcpy(hw.data(), w, n * 2, cudaMemcpyDeviceToHost));
    std::vector<float> lut(65536);
    for (int i = 0; i < 65536; ++i) lut[i] = half_to_float((uint16_t)i);
    cudaStream_t s;
    CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    std::printf("%d blocks x %d threads, weights per layer %.1f MB\n", sms, T, p.layer_halves * 2 / 1e6);

    const char* modes[] = {"before", "ahead", "late"};
    for (int mode = 0; mode <= 2; ++mode) {
        for (int with_weights = 0; with_weights <= 1; ++with_weights) {
            Params q = p;
            q.with_weights = with_weights;
            CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
            CHECK(cudaMemsetAsync(bufs, 0, sizeof(unsigned long long) * MAXLEN * LINKS, s));
            if (mode == 0) mega<0><<<sms, T, 0, s>>>(w, x0, bufs, q);
            if (mode == 1) mega<1><<<sms, T, 0, s>>>(w, x0, bufs, q);
            if (mode == 2) mega<2><<<sms, T, 0, s>>>(w, x0, bufs, q);
            CHECK(cudaGetLastError());
            const double us = replay_median_ms(s, REPS, 3, [](int) {}) * 1000.0 / LAYERS;
            std::printf("loads %-6s weights %-3s: %7.2f us per layer", modes[mode], with_weights ? "yes" : "no", us);
            if (with_weights && !LIGHT_BUILD) {
                std::vector<unsigned long long> hb((size_t)MAXLEN * LINKS);
                CHECK(cudaMemcpy(hb.data(), bufs, hb.size() * 8, cudaMemcpyDeviceToHost));
                const double err = check(hw, hx0, hb, q, lut);
                std::printf(", every op vs host: max relative error %.2e %s", err, err < 1e-4 ? "PASS" : "FAIL");
            }
            std::printf("\n");
        }
    }
    return 0;
}
