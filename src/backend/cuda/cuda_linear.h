/* cuda_linear.h — CUDA launchers of the linear layers of the official numerics (spec §3.3, §3.6), the GPU
 * twins of backend/cpu/quant.h (act_quant) and backend/cpu/linear.h: y[M, N] = x[M, K] · Wᵀ, W stored
 * [N, K] row-major. All pointers are device pointers; every launch is enqueued on ctx->stream and returns
 * without waiting. Activations on the device are BF16 (uint16_t bit patterns), not the CPU's float arrays.
 *
 * Agreement with the CPU reference (docs/NUMERICS.md, "CUDA linear"): act_quant is bit-identical; the
 * linears compute the same products and the same per-block promotion, but the FP32 summation order inside
 * a block (tensor-core order) and across split-K pieces differs, so outputs agree within the tolerance
 * written there, not bitwise. Results are deterministic run to run (fixed-order split-K reduction).
 *
 * Requirements of every linear: N % 128 == 0, K % 128 == 0, 16-byte aligned pointers, M >= 1. They use
 * ctx->ws (split-K partials) and ctx->counters; DSV4_ERR_CAPACITY if the workspace is too small. */
#ifndef DSV4_BACKEND_CUDA_CUDA_LINEAR_H
#define DSV4_BACKEND_CUDA_CUDA_LINEAR_H

#include <stdint.h>

#include "core/out_round.h" /* dsv4_out_round */
#include "backend/cuda/cuda_ctx.h"

#ifdef __cplusplus
extern "C" {
#endif

/* act_quant, GEMM mode (spec §3.3), bit-identical to dsv4_cpu_act_quant_fp8 with block 128:
 * x [M, K] bf16 -> q [M, K] e4m3, s [M, K/128] e8m0 (the exponent byte log2(s)+127). K % 128 == 0. */
dsv4_status dsv4_cuda_act_quant_fp8(dsv4_cuda_ctx *ctx, const uint16_t *x, int M, int K, uint8_t *q, uint8_t *s,
                                    dsv4_err *err);

/* FP8 block-scaled linear (spec §3.6 fp8_gemm) on an already quantized activation:
 * xq [M, K] e4m3, xs [M, K/128] e8m0, w [N, K] e4m3, ws [N/128, K/128] e8m0 -> y [M, N] bf16.
 * Per 128-K block: P = Σ q_x·q_w in FP32 (tensor cores), C += P · s_x · s_w in FP32; y = bf16(C).
 * M <= 16 uses the decode GEMV (gemv.h); above, ctx->fp8_gemm picks: DSV4_CUDA_FP8_GEMM_MMA (default) the 16-row
 * tile decode kernel for M <= 64 and the prefill kernel above, DSV4_CUDA_FP8_GEMM_CUBLASLT dsv4_cuda_linear_fp8_lt. */
dsv4_status dsv4_cuda_linear_fp8(dsv4_cuda_ctx *ctx, const uint8_t *xq, const uint8_t *xs, int M, int K,
                                 const uint8_t *w, const uint8_t *ws, int N, uint16_t *y, dsv4_err *err);

/* The FP8 linear through cuBLASLt's block-scaled FP8 GEMM (CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F weight
 * scales, VEC128_32F activation scales; linear_lt.cu): same arguments and contract as dsv4_cuda_linear_fp8,
 * any M >= 1. Per 128-K block cuBLASLt forms P on the tensor cores and promotes it into an FP32 accumulator
 * with s_x·s_w, the reference's scheme in another summation order (docs/NUMERICS.md "CUDA linear"). The
 * e8m0 scales are converted to FP32 into ctx->ws by one small launch per call (activation scales; the weight
 * scales too unless prepared). DSV4_ERR_UNSUPPORTED when cuBLASLt has no algorithm for the shape. */
dsv4_status dsv4_cuda_linear_fp8_lt(dsv4_cuda_ctx *ctx, const uint8_t *xq, const uint8_t *xs, int M, int K,
                                    const uint8_t *w, const uint8_t *ws, int N, uint16_t *y, dsv4_err *err);

/* At load: converts the weight scales ws [N/128, K/128] e8m0 once into a device FP32 table in the layout
 * cuBLASLt wants, kept in the context (keyed by the ws pointer, freed with the context); later
 * dsv4_cuda_linear_fp8_lt calls with this ws skip that conversion. Allocates device memory: not inside a
 * step. Idempotent for the same (ws, N, K). */
dsv4_status dsv4_cuda_linear_fp8_lt_prepare(dsv4_cuda_ctx *ctx, const uint8_t *ws, int N, int K, dsv4_err *err);
/* Forgets the table prepared for ws (call before freeing ws, so that a later buffer at the same address is
 * not taken for it); waits for the stream. Unknown ws: nothing happens. */
void dsv4_cuda_linear_fp8_lt_release(dsv4_cuda_ctx *ctx, const uint8_t *ws);

/* cuBLASLt plan-cache counters (tests check that the heuristic runs once per shape). */
typedef struct dsv4_cuda_lt_stats {
    int plans;              /* plans held */
    long heuristic_queries; /* cublasLtMatmulAlgoGetHeuristic calls made so far */
    long plan_hits;         /* calls that reused a cached plan */
    int prepared_weights;   /* FP8 weight-scale tables prepared */
} dsv4_cuda_lt_stats;
void dsv4_cuda_lt_stats_get(const dsv4_cuda_ctx *ctx, dsv4_cuda_lt_stats *s);
void dsv4_cuda_lt_cache_destroy(dsv4_cuda_ctx *ctx); /* by dsv4_cuda_ctx_destroy; NULL cache is fine */

/* FP4-weight linear (spec §3.6 fp4_gemm): w [N, K/2] packed e2m1 (low nibble = even k), ws [N, K/32] e8m0.
 * FP4 codes are expanded exactly to e4m3 in registers; per 32-K block P in FP32,
 * C += P · s_x[k/128] · s_w[n][k/32]; y = bf16(C). */
dsv4_status dsv4_cuda_linear_fp4(dsv4_cuda_ctx *ctx, const uint8_t *xq, const uint8_t *xs, int M, int K,
                                 const uint8_t *w, const uint8_t *ws, int N, uint16_t *y, dsv4_err *err);

/* BF16 linear through cuBLASLt (FP32 accumulation): x [M, K] bf16, w [N, K] bf16 -> y [M, N], bf16 when
 * out_round == DSV4_OUT_BF16, float otherwise. Any M, N, K >= 1 with K, N even. The algorithm is chosen once
 * per (M, N, K, output type) and cached in the context (linear_lt.cu). */
dsv4_status dsv4_cuda_linear_bf16(dsv4_cuda_ctx *ctx, const uint16_t *x, int M, int K, const uint16_t *w, int N,
                                  void *y, dsv4_out_round out_round, dsv4_err *err);

/* Which kernel and split a linear of this shape uses (for logs and benches). */
typedef struct dsv4_cuda_linear_plan {
    int kernel;     /* 0 = decode tiles (16-row token tiles, weight streaming), 1 = prefill (128x128 tiles),
                       2 = GEMV (M <= 16, gemv.h), 3 = cuBLASLt block-scaled FP8 (bm, bn, splits: 0) */
    int bm, bn;     /* CTA tile: tokens x weight rows (GEMV: 8 or 16 token slots x weight rows per CTA) */
    int splits;     /* split-K pieces (1 = none) */
    int ctas;       /* total CTAs launched */
} dsv4_cuda_linear_plan;
void dsv4_cuda_linear_plan_get(const dsv4_cuda_ctx *ctx, int M, int K, int N, int fp4, dsv4_cuda_linear_plan *plan);

/* The FP8 (fp4 = 0) / FP4 linear with the kernel forced (for tests and benches comparing kernels):
 * kernel -1 = automatic (what dsv4_cuda_linear_fp8/_fp4 do), 0 = decode tiles (any M), 1 = prefill tiles,
 * 2 = GEMV (M <= 16), 3 = cuBLASLt block-scaled (FP8 only: dsv4_cuda_linear_fp8_lt). */
dsv4_status dsv4_cuda_linear_q_kernel(dsv4_cuda_ctx *ctx, int fp4, int kernel, const uint8_t *xq, const uint8_t *xs,
                                      int M, int K, const uint8_t *w, const uint8_t *ws, int N, uint16_t *y,
                                      dsv4_err *err);

#ifdef __cplusplus
}
#endif
#endif
