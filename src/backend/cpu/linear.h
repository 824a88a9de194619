/* linear.h — CPU reference of the linear layers of the official numerics (spec §3.1, §3.6):
 * FP8 block-scaled GEMM, FP4-weight GEMM, BF16 GEMM. y[M, N] = x[M, K] · Wᵀ with W stored [N, K].
 * Activations are float arrays holding BF16-exact values. Deterministic: the result of every output
 * element is independent of the thread count and of M (a row's result does not depend on other rows). */
#ifndef DSV4_BACKEND_CPU_LINEAR_H
#define DSV4_BACKEND_CPU_LINEAR_H

#include <stdint.h>

#include "core/out_round.h"   /* dsv4_out_round */
#include "core/threadpool.h"

#ifdef __cplusplus
extern "C" {
#endif

/* FP8 linear: each row of x is act_quant'ed (1x128 blocks, ue8m0, quant.h); for each 128-wide K block,
 * P = Σ_k q_x·q_w in FP32, then C += P · s_x[kb] · s_w[n/128][kb] in FP32; y = bf16(C).
 * w [N, K] e4m3, w_scale [ceil(N/128), K/128] e8m0. K % 128 == 0. */
void dsv4_cpu_linear_fp8(dsv4_threadpool *pool, const float *x, int M, int K, const uint8_t *w,
                         const uint8_t *w_scale, int N, float *y);

/* FP4-weight linear: x act_quant'ed as above; per 32-wide K block P in FP32,
 * C += P · s_x[kb/4] · s_w[n][kb]; y = bf16(C). w [N, K/2] packed e2m1, w_scale [N, K/32] e8m0. */
void dsv4_cpu_linear_fp4(dsv4_threadpool *pool, const float *x, int M, int K, const uint8_t *w,
                         const uint8_t *w_scale, int N, float *y);

/* BF16-weight linear with FP32 accumulation (also the "FP32 weights up-cast from BF16" case: same math).
 * w [N, K] bf16; out_round selects whether y is rounded to BF16. */
void dsv4_cpu_linear_bf16(dsv4_threadpool *pool, const float *x, int M, int K, const uint16_t *w, int N,
                          float *y, dsv4_out_round out_round);

/* FP32-weight linear (hyper-connection fn), FP32 output. w [N, K] f32. */
void dsv4_cpu_linear_f32(dsv4_threadpool *pool, const float *x, int M, int K, const float *w, int N, float *y);

#ifdef __cplusplus
}
#endif
#endif
