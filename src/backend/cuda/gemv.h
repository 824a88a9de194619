/* gemv.h — the decode (M <= 16) path of the FP8 / FP4 block-scaled linears (spec §3.3, §3.6): a weight-
 * streaming GEMV that reads every weight byte exactly once with 16-byte loads straight into registers, and
 * its grouped form for MoE decode (several experts' GEMVs in one launch). Plain C; device pointers.
 *
 * Numerics: the contract of cuda_linear.h — per 128-K block (FP8) or 32-K block (FP4) a fresh FP32 partial
 * P = Σ q_x·q_w (tensor cores, mma.sync e4m3), then C = fma(P, s_x·s_w, C) in FP32; y = bf16(C). The K
 * ranges of one output are summed in a fixed order (inside the CTA through shared memory, across CTAs
 * through ctx->ws with a ticket: the last CTA adds the pieces z = 0, 1, ...), so results are deterministic
 * run to run and launches can be captured in a CUDA graph.
 *
 * dsv4_cuda_linear_fp8 / _fp4 (cuda_linear.h) call dsv4_cuda_gemv automatically for M <= 16. */
#ifndef DSV4_BACKEND_CUDA_GEMV_H
#define DSV4_BACKEND_CUDA_GEMV_H

#include <stdint.h>

#include "backend/cuda/cuda_ctx.h"

#ifdef __cplusplus
extern "C" {
#endif

#define DSV4_CUDA_GEMV_MAX_M 16

/* One GEMV of a group: y[m, N] = x[m, K] · Wᵀ with the group's N and K.
 * FP8: w [N, K] e4m3, ws [N/128, K/128] e8m0.  FP4: w [N, K/2] packed e2m1 (low nibble = even k),
 * ws [N, K/32] e8m0. xq [m, K] e4m3 and xs [m, K/128] e8m0 (act_quant output), y [m, N] bf16; rows contiguous.
 * w, xq 16-byte aligned; ws (FP4) 4-byte aligned; y 4-byte aligned. 1 <= m <= DSV4_CUDA_GEMV_MAX_M. */
typedef struct dsv4_cuda_gemv_desc {
    const uint8_t *w;
    const uint8_t *ws;
    const uint8_t *xq;
    const uint8_t *xs;
    uint16_t *y;
    int m;
    int reserved; /* 0 */
} dsv4_cuda_gemv_desc;

/* How a GEMV launch is cut (for logs and benches): 16 weight rows per warp; `ks` warps of a CTA split one
 * row tile's K range, so a CTA (8 warps) covers 16·8/ks rows; `splits` CTAs split K further (fixed-order
 * reduction through ctx->ws); every warp streams `kpw` 128-K blocks. */
typedef struct dsv4_cuda_gemv_plan {
    int nt;       /* 8-token MMA tiles: 1 (m <= 8) or 2 (m <= 16) */
    int ks;       /* warps per row tile inside a CTA (1, 2, 4, 8) */
    int rows;     /* weight rows per CTA (16·8/ks) */
    int splits;   /* K pieces across CTAs */
    int kpw;      /* 128-K blocks per warp */
    int ctas;     /* CTAs launched */
} dsv4_cuda_gemv_plan;

void dsv4_cuda_gemv_plan_get(const dsv4_cuda_ctx *ctx, int count, int max_m, int K, int N, int fp4,
                             dsv4_cuda_gemv_plan *plan);

/* Single GEMV (M <= 16 rows of x). Same arguments and requirements as dsv4_cuda_linear_fp8/_fp4. */
dsv4_status dsv4_cuda_gemv(dsv4_cuda_ctx *ctx, int fp4, const uint8_t *xq, const uint8_t *xs, int M, int K,
                           const uint8_t *w, const uint8_t *ws, int N, uint16_t *y, dsv4_err *err);

/* Grouped GEMV: `count` descriptors in DEVICE memory (so that a graph-captured decode step can fill them on
 * the device from the router's output), all with the same N, K and kind, each m <= max_m <= 16. One launch;
 * the split-K workspace needed is count·splits·max_m·N floats of ctx->ws (DSV4_ERR_CAPACITY if too small;
 * the plan drops to no split first). N % 128 == 0, K % 128 == 0. */
dsv4_status dsv4_cuda_gemv_grouped(dsv4_cuda_ctx *ctx, int fp4, const dsv4_cuda_gemv_desc *descs, int count,
                                   int max_m, int K, int N, dsv4_err *err);

#ifdef __cplusplus
}
#endif
#endif
