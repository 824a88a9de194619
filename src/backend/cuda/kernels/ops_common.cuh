/* ops_common.cuh — device helpers shared by the non-GEMM kernels (ops_cuda.h): BF16 conversions, the
 * power-of-two scale exponent, FP8/FP4 fake-quant of one value, transcendentals rounded from fp64, RoPE of
 * one pair, the total order of top-k, block reductions. Device code only; included by the .cu files beside it.
 *
 * Why fp64 transcendentals: glibc's expf/sinf/cosf/log1pf (the CPU oracle) are within ~0.5 ulp, CUDA's
 * single-precision ones within 1–2 ulp; evaluating in fp64 and rounding once to FP32 lands on the correctly
 * rounded value, which is what glibc returns in all but very rare cases. Costs nothing measurable here:
 * these ops are memory bound and the exponentials per byte are few. */
#ifndef DSV4_BACKEND_CUDA_KERNELS_OPS_COMMON_CUH
#define DSV4_BACKEND_CUDA_KERNELS_OPS_COMMON_CUH

#include <cuda_bf16.h>
#include <cuda_fp8.h>
#include <math.h>
#include <stdint.h>

#include "backend/cuda/ops_cuda.h"

#define OPS_LAUNCH_CHECK(err) DSV4_CUDA_CHECK_LAUNCH(err)

__device__ __forceinline__ float bf2f(uint16_t h) { return __uint_as_float((uint32_t)h << 16); }
__device__ __forceinline__ uint16_t f2bf(float f) {
    __nv_bfloat16 b = __float2bfloat16_rn(f);
    return *reinterpret_cast<uint16_t *>(&b);
}
__device__ __forceinline__ float bfr(float f) { return bf2f(f2bf(f)); }

__device__ __forceinline__ float exp_f(float x) { return (float)exp((double)x); }
__device__ __forceinline__ float log1p_f(float x) { return (float)log1p((double)x); }
__device__ __forceinline__ float sigmoid_f(float z) { return __fdiv_rn(1.0f, __fadd_rn(1.0f, exp_f(-z))); }

/* The clamped SwiGLU of one element with the routing weight (dsv4_cpu_swiglu): g, u already BF16 values;
 * up = clamp(u, ±lim), gate = min(g, lim) when lim > 0; h = bf16(wt · (gate / (1 + exp(−gate)) · up)).
 * Shared by the SwiGLU op (moe.cu) and the grouped MoE epilogue (moe_grouped.cu). */
__device__ __forceinline__ uint16_t swiglu_one(float g, float u, float limit, float wt) {
    if (limit > 0.0f) {
        u = u < -limit ? -limit : (u > limit ? limit : u);
        g = g > limit ? limit : g;
    }
    float v = __fmul_rn(__fdiv_rn(g, __fadd_rn(1.0f, exp_f(-g))), u);
    return f2bf(__fmul_rn(wt, v));
}

/* ceil(log2(max(amax, floor) · inv_max)) on the FP32 bit pattern (numfmt.h dsv4_pow2_scale_exp). */
__device__ __forceinline__ int pow2_scale_exp(float amax, float floor_amax, float inv_max) {
    if (!(amax >= floor_amax)) amax = floor_amax;
    uint32_t u = __float_as_uint(__fmul_rn(amax, inv_max));
    int e = (int)((u >> 23) & 0xffu) - 127;
    return e + ((u & 0x7fffffu) != 0);
}

/* bf16(e4m3_RNE(clamp(x·2^-e, ±448)) · 2^e). */
__device__ __forceinline__ float fq_fp8(float x, int e) {
    float v = ldexpf(x, -e);
    v = fminf(fmaxf(v, -448.0f), 448.0f);
    __nv_fp8_storage_t c = __nv_cvt_float_to_fp8(v, __NV_SATFINITE, __NV_E4M3);
    __half_raw hr = __nv_cvt_fp8_to_halfraw(c, __NV_E4M3);
    float q = __half2float(__half(hr));
    return bfr(ldexpf(q, e));
}

/* e2m1 RNE (ties to the even code) of a value already in [−6, 6], returned as its value. */
__device__ __forceinline__ float e2m1_rne(float v) {
    float a = fabsf(v), q;
    if (a <= 0.25f) q = 0.0f;
    else if (a < 0.75f) q = 0.5f;
    else if (a <= 1.25f) q = 1.0f;
    else if (a < 1.75f) q = 1.5f;
    else if (a <= 2.5f) q = 2.0f;
    else if (a < 3.5f) q = 3.0f;
    else if (a <= 5.0f) q = 4.0f;
    else q = 6.0f;
    return copysignf(q, v);
}
__device__ __forceinline__ float fq_fp4(float x, int e) {
    float v = ldexpf(x, -e);
    v = fminf(fmaxf(v, -6.0f), 6.0f);
    return bfr(ldexpf(e2m1_rne(v), e));
}

/* One RoPE pair at `pos` with frequency w (FP32 angle, fp64 sin/cos rounded to FP32, no FMA). */
__device__ __forceinline__ void rope_pair(float &a, float &b, int32_t pos, float w, int inverse) {
    float ang = __fmul_rn((float)pos, w);
    float c = (float)cos((double)ang), s = (float)sin((double)ang);
    if (inverse) s = -s;
    float a2 = __fsub_rn(__fmul_rn(a, c), __fmul_rn(b, s));
    float b2 = __fadd_rn(__fmul_rn(a, s), __fmul_rn(b, c));
    a = bfr(a2);
    b = bfr(b2);
}

/* Order-preserving 32-bit key of a score: larger score -> larger key; −0 == +0; every NaN -> 0 (below
 * −inf, whose key is 0x007fffff). */
__device__ __forceinline__ uint32_t score_key(float x) {
    if (x != x) return 0u;
    if (x == 0.0f) x = 0.0f;
    uint32_t u = __float_as_uint(x);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

/* "a ranks before b" of dsv4_cpu_topk: larger score, NaN last, then lower index. */
__device__ __forceinline__ bool ranks_before(float x, int ia, float y, int ib) {
    bool xn = x != x, yn = y != y;
    if (xn != yn) return yn;
    if (!xn && x != y) return x > y;
    return ia < ib;
}

__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}
__device__ __forceinline__ double warp_sum_d(double v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

/* Block-wide fp64 sum (blockDim.x a multiple of 32, ≤ 1024); every thread gets the result. `sh` holds
 * ≥ 33 doubles. Fixed order: deterministic. */
__device__ __forceinline__ double block_sum_d(double v, double *sh) {
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_sum_d(v);
    __syncthreads();
    if (lane == 0) sh[w] = v;
    __syncthreads();
    if (w == 0) {
        double t = lane < nw ? sh[lane] : 0.0;
        t = warp_sum_d(t);
        if (lane == 0) sh[32] = t;
    }
    __syncthreads();
    return sh[32];
}

/* One warp per 128-vector, lane l holds t[4l .. 4l+3]. The butterflies are those of dsv4_cpu_hadamard128
 * (stage h: t[j] = a + b, t[j+h] = a − b with a = t[j], b = t[j+h]), so every intermediate is bitwise the
 * CPU's. Stages h = 1, 2 are inside a lane, h = 4 .. 64 across lanes l ^ (h/4). Then ·128^-1/2 → bf16 and
 * FP4 fake-quant per 32-block (8 lanes). */
__device__ __forceinline__ void hadamard_fp4_warp(float (&t)[4], int lane) {
    float a, b;
    a = t[0]; b = t[1]; t[0] = __fadd_rn(a, b); t[1] = __fsub_rn(a, b);
    a = t[2]; b = t[3]; t[2] = __fadd_rn(a, b); t[3] = __fsub_rn(a, b);
    a = t[0]; b = t[2]; t[0] = __fadd_rn(a, b); t[2] = __fsub_rn(a, b);
    a = t[1]; b = t[3]; t[1] = __fadd_rn(a, b); t[3] = __fsub_rn(a, b);
#pragma unroll
    for (int m = 1; m < 32; m <<= 1) {
        bool lower = (lane & m) == 0;
#pragma unroll
        for (int j = 0; j < 4; j++) {
            float o = __shfl_xor_sync(0xffffffffu, t[j], m);
            t[j] = lower ? __fadd_rn(t[j], o) : __fsub_rn(o, t[j]);
        }
    }
    const float s = 0.08838834764831845f;
    float amax = 0.0f;
#pragma unroll
    for (int j = 0; j < 4; j++) {
        t[j] = bfr(__fmul_rn(t[j], s));
        amax = fmaxf(amax, fabsf(t[j]));
    }
    amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, 1));
    amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, 2));
    amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, 4));
    int e = pow2_scale_exp(amax, 6.0f * 0x1p-126f, 1.0f / 6.0f);
#pragma unroll
    for (int j = 0; j < 4; j++) t[j] = fq_fp4(t[j], e);
}

static inline dsv4_status ops_bad(dsv4_err *err, const char *fn, const char *what) {
    return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "%s: %s", fn, what);
}

#endif
