// The pieces of the int8 tensor-core dot shared by qmma.cu and q8_direct.cu: x as three int8
// digits per group of 32 (the MMAs' B operand), and the MMAs themselves.
//
// Digits. With amax = max |x'| over the group (or its super-block), each element becomes one
// integer v = rint(x' * X_DIGIT_RANGE / amax), |v| <= DIGIT_RANGE < 2^22, written in balanced base
// 256: v = 65536 d0 + 256 d1 + d2, d1 and d2 in [-128, 127], d0 in [-64, 63]. So
// x' = s (d0 + d1 / 256 + d2 / 65536) with s = amax * DIGIT_UNIT, within amax * 0.5 / DIGIT_RANGE
// = amax * 1.2e-7 (four f32 ulps of the group's largest element; qmma.cu's header says why three
// digits). One FFMA makes all three: t = x' * inv + DIGIT_MAGIC lies in [2^23, 2^24), where an f32
// counts in units of 1, so its mantissa is w = v + 0x408080 exactly (rounded half to even, as
// rintf), and w's bytes are d2 + 128, d1 + 128 and d0 + 64 (w < 2^23: each digit is its byte
// less its offset, the offsets being the base-256 digits of 0x408080). Byte permutes gather
// four elements' bytes into one word per digit and two logic ops per word take the offsets off.
// (The earlier base-254 digits took three rint steps per element, about 13 instructions; the
// 1.5B down_proj's blocks spent about 1.4 us a layer making them: experiments/LOG.md, 41st
// session.)
#pragma once

#include "common.cuh"

constexpr float DIGIT_RANGE = (float)X_DIGIT_RANGE;  // < 0x800000 - 0x408080: w stays below 2^23
constexpr float DIGIT_MAGIC = 12615808.0f;           // 2^23 + 0x408080
constexpr float DIGIT_UNIT = 65536.0f / DIGIT_RANGE;  // s per unit of amax
// What digits d1 and d2 weigh next to d0 (the consume paths' C-column weights).
constexpr float DIGIT_W1 = 1.0f / 256.0f, DIGIT_W2 = 1.0f / 65536.0f;
// Below this amax a group's digits are zero: DIGIT_RANGE / amax would overflow (the group's
// elements are then at most 2^-100, far below any other group's f32 rounding).
constexpr float DIGIT_MIN_AMAX = 0x1p-100f;

// A group's digit scale s and the factor inv its elements are multiplied by (zero below
// DIGIT_MIN_AMAX: zero digits).
QA_DEVICE void digit_scale(float amax, float& s, float& inv) {
    const bool some = amax >= DIGIT_MIN_AMAX;
    s = some ? amax * DIGIT_UNIT : 0.0f;
    inv = some ? DIGIT_RANGE / amax : 0.0f;
}

// Four consecutive elements' digits (inv from digit_scale): word d of dw holds digit d of
// element i in byte i (d0 the most significant).
QA_DEVICE void pack_digits4(float4 e, float inv, uint32_t (&dw)[3]) {
    const uint32_t t0 = __float_as_uint(__fmaf_rn(e.x, inv, DIGIT_MAGIC));
    const uint32_t t1 = __float_as_uint(__fmaf_rn(e.y, inv, DIGIT_MAGIC));
    const uint32_t t2 = __float_as_uint(__fmaf_rn(e.z, inv, DIGIT_MAGIC));
    const uint32_t t3 = __float_as_uint(__fmaf_rn(e.w, inv, DIGIT_MAGIC));
    // Bytes 0 and 1 of each element, interleaved: (t0.b0, t1.b0, t0.b1, t1.b1), (t2.., t3..).
    const uint32_t lo01 = __byte_perm(t0, t1, 0x5140), lo23 = __byte_perm(t2, t3, 0x5140);
    const uint32_t hi01 = __byte_perm(t0, t1, 0x7362), hi23 = __byte_perm(t2, t3, 0x7362);  // byte 2 of each
    const uint32_t top = __byte_perm(hi01, hi23, 0x5410);  // d0 + 64, each below 128
    dw[2] = __byte_perm(lo01, lo23, 0x5410) ^ 0x80808080u;
    dw[1] = __byte_perm(lo01, lo23, 0x7632) ^ 0x80808080u;
    // b - 64 as a byte, for b < 128: flip bits 6 and 7, then bit 7 once more where bit 6 was set
    // (b >= 64) -- (top << 1) carries each byte's bit 6 into its bit 7 and nothing across bytes
    // that the mask keeps.
    dw[0] = (top ^ 0xC0C0C0C0u) ^ ((top << 1) & 0x80808080u);
}

// D += A B on the tensor cores, exactly in int32 (A 16 x 32 and B 32 x 8 int8, or k = 16).
QA_DEVICE void mma_k32(const uint32_t (&a)[4], uint32_t b0, uint32_t b1, int (&c)[4]) {
    asm volatile(
        "mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
        : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

QA_DEVICE void mma_k16(uint32_t a0, uint32_t a1, uint32_t b0, int (&c)[4]) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5}, {%6}, {%0,%1,%2,%3};"
                 : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
                 : "r"(a0), "r"(a1), "r"(b0));
}

