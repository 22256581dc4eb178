// Test-only kernels: built into the test image (build.rs: kernels/test/*.cu), never into the
// production image, and launched only by the verification harness (runtime/src/cuda/
// test_kernels.rs, `qwen-aot check`).
//
// sample_expf_test: out[i] = libm_expf(in[i]), the sampler's expf (libm_expf.cuh), so the check
// can compare it bit for bit with Rust's f32::exp over a sweep of inputs.
// dtypes:  in, out f32 [n].
// launch:  any grid and block (grid-stride loop).
#include "common.cuh"
#include "libm_expf.cuh"

extern "C" __global__ void sample_expf_test(const float* __restrict__ in, float* __restrict__ out, int n) {
    pdl_prologue();
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) out[i] = qa_sample::libm_expf(in[i]);
}
