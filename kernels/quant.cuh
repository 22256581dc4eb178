// Quantized weight formats as the GPU reads them: the canonical group/plane layout of
// plan/src/quant/mod.rs (read its module doc first; this file is its device half).
//
// A weight is up to QA_MAX_PARTS row ranges ("parts"), each in one format; every part is cut into
// groups of 32 elements (`gi = local_row * G + g`, G = k / 32), whose bits live in up to four
// planes (qs: low bits, qh: high bits, sc: group scales, sup: per-256 super-block scales).
//
// Per group a lane loads its planes into a QRaw (registers; 16-byte qs loads for 4-bit formats),
// then turns elements 4c..4c+3 (c = "chunk", 0..7) into four byte codes with one or two shifts and
// masks (q_codes), each code into a float with one byte permute and one add (code_to_float: the
// 0x4B000000 exponent trick, exact for codes < 2^23, and subtracting the format's zero point in
// the same add), and applies the scales of the chunk's half (q_scales). I2F conversions run at a
// quarter of the FP32 rate on Hopper; the trick keeps the dequantisation at full rate.
//
// Numerics: a dot product accumulates sum_i (q_i - z) * x_i per half-group in f32 and scales it
// afterwards: y = sum_h dl_h * acc_h - ml_h * sum_h(x) -- the CPU reference applies dl, ml per
// element; the difference is f32 rounding (check.rs bounds it). q_dequant applies them per element
// with the reference's operation order (no FMA contraction), so it is bit-exact with the reference.
#pragma once

#include <cuda_bf16.h>

#include "common.cuh"

// The format codes (enum QFmt, QF_*: WeightFormat's discriminants) and QA_MAX_PARTS come from
// generated_constants.cuh (build.rs, from runtime/src/kernel_constants.rs).

// A weight's parts, passed by value as one kernel parameter (mirrored by launch::QParts, 120
// bytes). Plane pointers are absolute; row_end[p] is the first row after part p (cumulative).
struct QParts {
    const uint8_t* qs[QA_MAX_PARTS];
    const uint8_t* qh[QA_MAX_PARTS];
    const uint8_t* sc[QA_MAX_PARTS];
    const uint8_t* sup[QA_MAX_PARTS];
    int row_end[QA_MAX_PARTS];
    int fmt[QA_MAX_PARTS];
};

// The part holding row j (parts are few: a linear scan).
QA_DEVICE int part_of(const QParts& P, int j) { return j < P.row_end[0] ? 0 : (j < P.row_end[1] ? 1 : 2); }

// Field p of a part array, selected without indexing: a kernel parameter indexed by a run-time
// value is copied to local memory (stack) first, which would put every load behind it.
template <typename T>
QA_DEVICE T pick(const T (&a)[QA_MAX_PARTS], int p) {
    return p == 0 ? a[0] : (p == 1 ? a[1] : a[2]);
}
QA_DEVICE int part_row0(const QParts& P, int p) { return p == 0 ? 0 : (p == 1 ? P.row_end[0] : P.row_end[1]); }

// ---- per-format constants -------------------------------------------------------------------------
template <int F> struct QTraits;
// QS/QH/SC/SUP: plane bytes per group (SUP per super-block); Z: zero point subtracted from the code;
// MIN: whether a value has a separate min term (ml); HALVES: scales per 16 elements.
#define QTRAITS(F_, QS_, QH_, SC_, SUP_, Z_, MIN_, HALVES_)                                                        \
    template <> struct QTraits<F_> {                                                                               \
        static constexpr int QS = QS_, QH = QH_, SC = SC_, SUP = SUP_, Z = Z_;                                     \
        static constexpr bool MIN = MIN_, HALVES = HALVES_;                                                        \
    };
// Float formats never reach the quantized paths; their traits only let the dispatch compile.
QTRAITS(QF_F32, 16, 0, 2, 0, 0, false, false)
QTRAITS(QF_F16, 16, 0, 2, 0, 0, false, false)
QTRAITS(QF_BF16, 16, 0, 2, 0, 0, false, false)
QTRAITS(QF_Q4_0, 16, 0, 2, 0, 8, false, false)
QTRAITS(QF_Q4_1, 16, 0, 4, 0, 0, true, false)
QTRAITS(QF_Q5_0, 16, 4, 2, 0, 16, false, false)
QTRAITS(QF_Q5_1, 16, 4, 4, 0, 0, true, false)
QTRAITS(QF_Q8_0, 32, 0, 2, 0, 128, false, false)
QTRAITS(QF_Q2_K, 8, 0, 2, 4, 0, true, true)
QTRAITS(QF_Q3_K, 8, 4, 2, 2, 4, false, true)
QTRAITS(QF_Q4_K, 16, 0, 2, 4, 0, true, false)
QTRAITS(QF_Q5_K, 16, 4, 2, 4, 0, true, false)
QTRAITS(QF_Q6_K, 16, 8, 2, 2, 32, false, true)
#undef QTRAITS

// One group's bits in registers.
struct QRaw {
    uint4 q0, q1;  // qs plane: 8, 16 or 32 bytes
    uint2 h;       // qh plane: 4 or 8 bytes
    uint32_t s;    // sc plane: 2 or 4 bytes
    uint32_t u;    // sup plane: 2 or 4 bytes
};

QA_DEVICE uint32_t ld_u16(const uint8_t* p) { return __ldg(reinterpret_cast<const unsigned short*>(p)); }
QA_DEVICE uint32_t ld_u32(const uint8_t* p) { return __ldg(reinterpret_cast<const unsigned int*>(p)); }

// Loads group `gi` (super-block `si`) of part p. The qs plane is streamed (evict-first: read once
// per token); the small planes go through the read-only path (neighbouring lanes share lines).
template <int F>
QA_DEVICE void q_load(const QParts& P, int p, size_t gi, size_t si, QRaw& r) {
    using T = QTraits<F>;
    const uint8_t* qs = pick(P.qs, p) + gi * T::QS;
    if (T::QS == 8) {
        const uint2 v = __ldcs(reinterpret_cast<const uint2*>(qs));
        r.q0 = make_uint4(v.x, v.y, 0, 0);
    } else {
        r.q0 = load_stream16(qs);
        if (T::QS == 32) r.q1 = load_stream16(qs + 16);
    }
    if (T::QH == 4) r.h.x = ld_u32(pick(P.qh, p) + gi * 4);
    if (T::QH == 8) r.h = __ldg(reinterpret_cast<const uint2*>(pick(P.qh, p) + gi * 8));
    r.s = T::SC == 2 ? ld_u16(pick(P.sc, p) + gi * 2) : ld_u32(pick(P.sc, p) + gi * 4);
    if (T::SUP == 2) r.u = ld_u16(pick(P.sup, p) + si * 2);
    if (T::SUP == 4) r.u = ld_u32(pick(P.sup, p) + si * 4);
}

QA_DEVICE uint32_t word4(const uint4& v, int i) { return i == 0 ? v.x : (i == 1 ? v.y : (i == 2 ? v.z : v.w)); }

// The codes of elements 4c..4c+3 as four bytes (c is a compile-time constant after unrolling).
template <int F>
QA_DEVICE uint32_t q_codes(const QRaw& r, int c) {
    if (F == QF_Q8_0) return word4(c < 4 ? r.q0 : r.q1, c & 3) ^ 0x80808080u;  // signed -> code + 128
    if (F == QF_Q2_K || F == QF_Q3_K) {
        uint32_t q = ((c & 1 ? r.q0.y : r.q0.x) >> (2 * (c >> 1))) & 0x03030303u;
        if (F == QF_Q3_K) q |= ((r.h.x >> c) & 0x01010101u) << 2;
        return q;
    }
    const uint32_t w = word4(r.q0, c & 3);
    uint32_t q = (c < 4 ? w : w >> 4) & 0x0F0F0F0Fu;
    if (F == QF_Q5_0 || F == QF_Q5_1 || F == QF_Q5_K) q |= ((r.h.x >> c) & 0x01010101u) << 4;
    if (F == QF_Q6_K) q |= (((c < 4 ? r.h.x : r.h.y) >> (2 * (c & 3))) & 0x03030303u) << 4;
    return q;
}

// Byte i of w minus the zero point z, as a float: 0x4B0000bb is 2^23 + bb exactly.
QA_DEVICE float code_to_float(uint32_t w, int i, float z) {
    return __int_as_float(__byte_perm(w, 0x4B000000u, 0x7440u | i)) - (8388608.0f + z);
}

QA_DEVICE float half_lo(uint32_t v) { return __half2float(__ushort_as_half((unsigned short)(v & 0xFFFFu))); }
QA_DEVICE float half_hi(uint32_t v) { return __half2float(__ushort_as_half((unsigned short)(v >> 16))); }

// Scale (dl) and min (ml) of half h (0: elements 0..15, 1: 16..31): value = dl * (q - Z) - ml,
// each product as the CPU reference computes it (plan/src/quant/reference.rs).
template <int F>
QA_DEVICE void q_scales(const QRaw& r, int h, float& dl, float& ml) {
    ml = 0.0f;
    if (F == QF_Q4_0 || F == QF_Q5_0 || F == QF_Q8_0) {
        dl = half_lo(r.s);
    } else if (F == QF_Q4_1 || F == QF_Q5_1) {
        dl = half_lo(r.s);
        ml = -half_hi(r.s);
    } else if (F == QF_Q2_K) {
        const uint32_t b = (r.s >> (8 * h)) & 0xFFu;
        dl = __fmul_rn(half_lo(r.u), (float)(b & 15u));
        ml = __fmul_rn(half_hi(r.u), (float)(b >> 4));
    } else if (F == QF_Q3_K) {
        dl = __fmul_rn(half_lo(r.u), (float)((int)((r.s >> (8 * h)) & 0xFFu) - 32));
    } else if (F == QF_Q4_K || F == QF_Q5_K) {
        dl = __fmul_rn(half_lo(r.u), (float)(r.s & 0xFFu));
        ml = __fmul_rn(half_hi(r.u), (float)((r.s >> 8) & 0xFFu));
    } else {  // Q6_K
        dl = __fmul_rn(half_lo(r.u), (float)(signed char)((r.s >> (8 * h)) & 0xFFu));
    }
}

// A group's product from its per-half sums: y = sum_h dl_h * acc_h - ml_h * sx_h (sx: the sums of
// x over each half, used by formats with a min).
template <int F>
QA_DEVICE float q_scaled(const QRaw& r, const float (&acc)[2], const float (&sx)[2]) {
    using T = QTraits<F>;
    float dl0, ml0, dl1, ml1;
    q_scales<F>(r, 0, dl0, ml0);
    if (T::HALVES) {
        q_scales<F>(r, 1, dl1, ml1);
    } else {
        dl1 = dl0;
        ml1 = ml0;
    }
    float y = fmaf(dl0, acc[0], dl1 * acc[1]);
    if (T::MIN) y -= fmaf(ml0, sx[0], ml1 * sx[1]);
    return y;
}

// sum_e w_e * x_e over the group, x given as 8 float4 chunks (xc[c] = x[4c..4c+3]).
template <int F, typename XAt>
QA_DEVICE float q_dot(const QRaw& r, XAt xc) {
    using T = QTraits<F>;
    constexpr float z = (float)T::Z;
    float acc[2] = {0.0f, 0.0f}, sx[2] = {0.0f, 0.0f};
#pragma unroll
    for (int c = 0; c < 8; ++c) {
        const uint32_t q = q_codes<F>(r, c);
        const float4 x = xc(c);
        const int h = c >> 2;  // elements 16..31 are chunks 4..7
        float a = acc[h];
        a = fmaf(code_to_float(q, 0, z), x.x, a);
        a = fmaf(code_to_float(q, 1, z), x.y, a);
        a = fmaf(code_to_float(q, 2, z), x.z, a);
        a = fmaf(code_to_float(q, 3, z), x.w, a);
        acc[h] = a;
        if (T::MIN) sx[h] += (x.x + x.y) + (x.z + x.w);
    }
    return q_scaled<F>(r, acc, sx);
}

// Elements 4c..4c+3 of the group, bit-exact with the CPU reference (no contraction:
// __fmul_rn/__fsub_rn).
template <int F>
QA_DEVICE void q_dequant_chunk(const QRaw& r, int c, float v[4]) {
    using T = QTraits<F>;
    const uint32_t q = q_codes<F>(r, c);
    float dl, ml;
    q_scales<F>(r, c >> 2, dl, ml);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const float qf = code_to_float(q, i, (float)T::Z);
        v[i] = T::MIN ? __fsub_rn(__fmul_rn(dl, qf), ml) : __fmul_rn(dl, qf);
    }
}

// The group's 32 values, bit-exact with the CPU reference.
template <int F>
QA_DEVICE void q_dequant(const QRaw& r, float v[32]) {
#pragma unroll
    for (int c = 0; c < 8; ++c) q_dequant_chunk<F>(r, c, v + 4 * c);
}

// Float formats, element e of row-major data.
template <int F>
QA_DEVICE float float_at(const uint8_t* base, size_t e) {
    if (F == QF_F32) return __ldg(reinterpret_cast<const float*>(base) + e);
    if (F == QF_F16) return __half2float(__ldg(reinterpret_cast<const __half*>(base) + e));
    return __uint_as_float(((uint32_t)__ldg(reinterpret_cast<const unsigned short*>(base) + e)) << 16);  // BF16
}

// Expands BODY(F) for the run-time format code f as a compile-time constant F (f is warp-uniform).
#define QFMT_DISPATCH(f, BODY)                  \
    switch (f) {                                \
        case QF_F32: { BODY(QF_F32); } break;   \
        case QF_F16: { BODY(QF_F16); } break;   \
        case QF_BF16: { BODY(QF_BF16); } break; \
        case QF_Q4_0: { BODY(QF_Q4_0); } break; \
        case QF_Q4_1: { BODY(QF_Q4_1); } break; \
        case QF_Q5_0: { BODY(QF_Q5_0); } break; \
        case QF_Q5_1: { BODY(QF_Q5_1); } break; \
        case QF_Q8_0: { BODY(QF_Q8_0); } break; \
        case QF_Q2_K: { BODY(QF_Q2_K); } break; \
        case QF_Q3_K: { BODY(QF_Q3_K); } break; \
        case QF_Q4_K: { BODY(QF_Q4_K); } break; \
        case QF_Q5_K: { BODY(QF_Q5_K); } break; \
        default: { BODY(QF_Q6_K); } break;      \
    }

QA_DEVICE float4 mul4q(const float4 a, const float4 b) { return make_float4(a.x * b.x, a.y * b.y, a.z * b.z, a.w * b.w); }

// sum over the group of a float-format row (base: the part's data; e0: first element); xc(c) gives
// x[4c..4c+3].
template <int F, typename XAt>
QA_DEVICE float float_group_dot(const uint8_t* base, size_t e0, XAt xc) {
    float acc = 0.0f;
#pragma unroll
    for (int c = 0; c < 8; ++c) {
        const float4 x = xc(c);
        acc = fmaf(float_at<F>(base, e0 + 4 * c + 0), x.x, acc);
        acc = fmaf(float_at<F>(base, e0 + 4 * c + 1), x.y, acc);
        acc = fmaf(float_at<F>(base, e0 + 4 * c + 2), x.z, acc);
        acc = fmaf(float_at<F>(base, e0 + 4 * c + 3), x.w, acc);
    }
    return acc;
}

// x row r (times the norm weight when norm_w is set) into shared memory, chunk-major (chunk c of
// group g at xs4[c * G + g]: lanes reading consecutive groups read consecutive 16-byte words, no
// bank conflicts), read coalesced (i = 8 g + c); returns the inverse RMS of the row (1 without a
// norm), with rms_norm_impl's arithmetic (norm.cu). Every thread of the block calls it (barriers).
QA_DEVICE float load_x_shared(const float* __restrict__ x, const float* __restrict__ norm_w, float eps, int r, int k,
                              float4* xs4, float* scratch) {
    const int G = k >> 5;
    const bool norm = norm_w != nullptr;
    const float4* x4 = reinterpret_cast<const float4*>(x + (size_t)r * k);
    const float4* w4 = reinterpret_cast<const float4*>(norm_w);
    float ss = 0.0f;
    for (int i = threadIdx.x; i < 8 * G; i += blockDim.x) {
        float4 v = __ldg(x4 + i);
        if (norm) {
            ss = fmaf(v.x, v.x, fmaf(v.y, v.y, fmaf(v.z, v.z, fmaf(v.w, v.w, ss))));
            v = mul4q(v, __ldg(w4 + i));
        }
        xs4[(i & 7) * G + (i >> 3)] = v;
    }
    if (!norm) {
        __syncthreads();
        return 1.0f;
    }
    ss = block_sum(ss, scratch);  // synchronises: xs4 is complete
    return 1.0f / sqrtf(ss / (float)k + eps);
}
