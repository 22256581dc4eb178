// Test-only kernel (see sample_expf.cu): x's int8 digits exactly as the tensor-core GEMVs make
// them (int8_mma.cuh: digit_scale, pack_digits4), so that the check can compare every digit byte
// and scale with the host's own derivation of the same definition.
//
// x_digits_test: per group g of 32 elements, amax = max |x|, (s, inv) = digit_scale(amax), then
// the digits of x[32 g + 4 w .. + 3] into words[g][d][w] (d: digit 0-2, w: 0-7; byte i of a
// word is element 4 w + i) and s into scale[g].
// dtypes:  x f32 [groups * 32]; words u32 [groups * 24]; scale f32 [groups].
// launch:  any grid and block (one thread per group, grid-stride loop).
#include "common.cuh"
#include "int8_mma.cuh"

extern "C" __global__ void x_digits_test(const float* __restrict__ x, uint32_t* __restrict__ words,
                                         float* __restrict__ scale, int groups) {
    pdl_prologue();
    for (int g = blockIdx.x * blockDim.x + threadIdx.x; g < groups; g += gridDim.x * blockDim.x) {
        const float4* xg = reinterpret_cast<const float4*>(x + 32 * (size_t)g);
        float amax = 0.0f;
        for (int w = 0; w < 8; ++w) {
            const float4 a = xg[w];
            amax = fmaxf(amax, fmaxf(fmaxf(fabsf(a.x), fabsf(a.y)), fmaxf(fabsf(a.z), fabsf(a.w))));
        }
        float s, inv;
        digit_scale(amax, s, inv);
        for (int w = 0; w < 8; ++w) {
            uint32_t dw[3];
            pack_digits4(xg[w], inv, dw);
            for (int d = 0; d < 3; ++d) words[24 * (size_t)g + 8 * d + w] = dw[d];
        }
        scale[g] = s;
    }
}
