// glibc's expf, bit for bit, on the device: the sampler's q_i (sample.cu) must be the CPU
// sampler's, which calls Rust's f32::exp. In its own header so that the test-only probe
// (kernels/test/sample_expf.cu) checks the very code sample.cu runs without being compiled into
// the production image.
#pragma once

#include "common.cuh"

namespace qa_sample {
// glibc's expf (sysdeps/ieee754/flt-32/e_expf.c, ARM optimized-routines, EXP2F_TABLE_BITS 5),
// which Rust's f32::exp calls on Linux: exp(x) = 2^(k/32) * 2^(r/32), k = round(x * 32 / ln2),
// a cubic in double precision, one final rounding to f32. Written as glibc's x86-64 FMA build
// (the one an FMA-capable host runs) contracts it: the range reduction and the polynomial use
// fused multiply-adds. Measured against f32::exp on every f32 in [-104.5, 88.7] (2.24e9 values,
// a Rust twin of this code, x86-64 glibc 2.36): 0 differences (without the FMAs: 2).
__constant__ unsigned long long EXP2F_TAB[32] = {
    0x3ff0000000000000ull, 0x3fefd9b0d3158574ull, 0x3fefb5586cf9890full, 0x3fef9301d0125b51ull,
    0x3fef72b83c7d517bull, 0x3fef54873168b9aaull, 0x3fef387a6e756238ull, 0x3fef1e9df51fdee1ull,
    0x3fef06fe0a31b715ull, 0x3feef1a7373aa9cbull, 0x3feedea64c123422ull, 0x3feece086061892dull,
    0x3feebfdad5362a27ull, 0x3feeb42b569d4f82ull, 0x3feeab07dd485429ull, 0x3feea47eb03a5585ull,
    0x3feea09e667f3bcdull, 0x3fee9f75e8ec5f74ull, 0x3feea11473eb0187ull, 0x3feea589994cce13ull,
    0x3feeace5422aa0dbull, 0x3feeb737b0cdc5e5ull, 0x3feec49182a3f090ull, 0x3feed503b23e255dull,
    0x3feee89f995ad3adull, 0x3feeff76f2fb5e47ull, 0x3fef199bdd85529cull, 0x3fef3720dcef9069ull,
    0x3fef5818dcfba487ull, 0x3fef7c97337b9b5full, 0x3fefa4afa2a490daull, 0x3fefd0765b6e4540ull,
};

QA_DEVICE float libm_expf(float x) {
    const unsigned ux = __float_as_uint(x);
    const unsigned abstop = (ux >> 20) & 0x7ffu;
    if (abstop >= 0x42bu) {                              // |x| >= 88 or NaN
        if (ux == 0xff800000u) return 0.0f;              // -inf
        if (abstop >= 0x7f8u) return x + x;              // NaN, +inf
        if (x > __uint_as_float(0x42b17217u)) return INFINITY;  // > log(0x1p128)
        if (x < __uint_as_float(0xc2cff1b4u)) return 0.0f;      // < log(0x1p-150)
    }
    const double inv_ln2_n = 0x1.71547652b82fep+5;       // 32 / ln 2
    const double shift = 0x1.8p+52;
    const double c0 = 0x1.c6af84b912394p-20, c1 = 0x1.ebfce50fac4f3p-13, c2 = 0x1.62e42ff0c52d6p-6;
    const double xd = (double)x;
    const double kd_shifted = __fma_rn(inv_ln2_n, xd, shift);   // z + shift, z = x * 32 / ln2
    const unsigned long long ki = (unsigned long long)__double_as_longlong(kd_shifted);
    const double kd = __dsub_rn(kd_shifted, shift);
    const double r = __fma_rn(inv_ln2_n, xd, -kd);              // z - kd
    const unsigned long long t = EXP2F_TAB[ki % 32] + (ki << 47);
    const double s = __longlong_as_double((long long)t);
    const double zz = __fma_rn(c0, r, c1);
    const double r2 = __dmul_rn(r, r);
    double y = __fma_rn(c2, r, 1.0);
    y = __fma_rn(zz, r2, y);
    y = __dmul_rn(y, s);
    return __double2float_rn(y);
}
}  // namespace qa_sample
