// The pieces of the int8 tensor-core dot shared by qmma.cu and q8_direct.cu: x as three int8
// digits per group of 32 (the MMAs' B operand), and the MMAs themselves. With amax = max |x'| over the group, s = amax / 127 and u = x' * (127 / amax):
// d0 = rint(u), d1 = rint((u - d0) * 254), d2 = rint(((u - d0) * 254 - d1) * 254), so that
// x' = s (d0 + d1 / 254 + d2 / 254^2) within amax * 6.1e-8 (qmma.cu's header says why three).
#pragma once

#include "common.cuh"

// rint(v) and its low byte, with one add: 1.5 * 2^23 + v rounds v to an integer (half to even,
// as rintf) for |v| < 2^22, and that integer's two's-complement bits are the sum's low mantissa bits.
constexpr float RINT_MAGIC = 12582912.0f;

QA_DEVICE float rint_byte(float v, uint32_t& byte) {
    const float t = __fadd_rn(v, RINT_MAGIC);
    byte = __float_as_uint(t) & 0xFFu;
    return __fsub_rn(t, RINT_MAGIC);
}

// Element e's three digit bytes (u = e * inv, inv = 127 / amax) packed into byte i of dw.
QA_DEVICE void pack_digits(float e, float inv, int i, uint32_t (&dw)[3]) {
    uint32_t b0, b1, b2;
    const float u = __fmul_rn(e, inv);
    const float d0 = rint_byte(u, b0);
    const float r1 = __fmul_rn(__fsub_rn(u, d0), 254.0f);
    const float d1 = rint_byte(r1, b1);
    rint_byte(__fmul_rn(__fsub_rn(r1, d1), 254.0f), b2);
    dw[0] |= b0 << (8 * i);
    dw[1] |= b1 << (8 * i);
    dw[2] |= b2 << (8 * i);
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

