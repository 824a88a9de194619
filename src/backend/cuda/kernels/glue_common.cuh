/* glue_common.cuh — what the forward's glue kernels share (kv_codec.cu, compressor_state.cu, index_lists.cu,
 * moe_pairs.cu, elementwise.cu): the launch helpers (stream of a context, grid size, launch check) and the
 * device decode / encode of one e4m3 or e2m1 code. Device code only; included by the .cu files beside it. */
#ifndef DSV4_BACKEND_CUDA_KERNELS_GLUE_COMMON_CUH
#define DSV4_BACKEND_CUDA_KERNELS_GLUE_COMMON_CUH

#include "backend/cuda/cuda_ctx.h"
#include "backend/cuda/kernels/ops_common.cuh"

#define GLUE_CHECK(err) DSV4_CUDA_CHECK_LAUNCH(err)
#define CST(ctx) ((cudaStream_t)(ctx)->stream)

/* Blocks of t threads that cover n items. */
static inline unsigned nblk(long n, int t) { return (unsigned)((n + t - 1) / t); }

/* Value of an e4m3 code (exact in FP32), of an e2m1 code, and the e2m1 code of a value that already is one. */
__device__ __forceinline__ float e4m3_val(uint8_t c) {
    __half_raw hr = __nv_cvt_fp8_to_halfraw((__nv_fp8_storage_t)c, __NV_E4M3);
    return __half2float(__half(hr));
}
__device__ __forceinline__ float e2m1_val(uint8_t c) {
    const float mag[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};
    float v = mag[c & 7];
    return (c & 8) ? -v : v;
}
__device__ __forceinline__ uint8_t e2m1_code(float v) { /* v already an e2m1 value */
    float a = fabsf(v);
    uint8_t c = a < 0.25f ? 0 : a < 0.75f ? 1 : a < 1.25f ? 2 : a < 1.75f ? 3 : a < 2.5f ? 4 : a < 3.5f ? 5
              : a < 5.0f ? 6 : 7;
    return (uint8_t)(c | (signbit(v) ? 8 : 0));
}

#endif
