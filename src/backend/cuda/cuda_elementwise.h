/* cuda_elementwise.h — the element-wise and row-movement kernels the CUDA forward pass needs beyond the op
 * library (ops_cuda.h): word fill, the load-time wo_a dequant to BF16, the embedding broadcast to the hc
 * streams, a BF16 scale, the grouped output projection's regroup, the vocab-split embedding and logits of
 * tensor parallelism, BF16 <-> FP32 conversions, and the head's row gather. Plain C header; the kernels are
 * in kernels/elementwise.cu. Each is EXACT against its CPU twin (data movement, or one correctly rounded
 * operation per element); tests in tests/unit/test_cuda_glue.c. */
#ifndef DSV4_BACKEND_CUDA_CUDA_ELEMENTWISE_H
#define DSV4_BACKEND_CUDA_CUDA_ELEMENTWISE_H

#include <stddef.h>
#include <stdint.h>

#include "backend/cuda/cuda_ctx.h"

#ifdef __cplusplus
extern "C" {
#endif

dsv4_status dsv4_glue_fill32(dsv4_cuda_ctx *ctx, void *dst, uint32_t pattern, size_t n_words, dsv4_err *err);
/* y [out, in] bf16 = e4m3 w [out, in] · 2^(scale[o/128][c/128] - 127) (the CPU model's wo_a dequant). */
dsv4_status dsv4_glue_dequant_fp8_bf16(dsv4_cuda_ctx *ctx, const uint8_t *w, const uint8_t *scale, int out, int in,
                                       uint16_t *y, dsv4_err *err);
/* X[r][h] = x[r] for h < hc (embedding expanded to the hc streams). */
dsv4_status dsv4_glue_broadcast_hc(dsv4_cuda_ctx *ctx, const uint16_t *x, int rows, int hc, int D, uint16_t *X,
                                   dsv4_err *err);
/* x[i] = bf16(x[i] · s), n elements, in place. */
dsv4_status dsv4_glue_scale_bf16(dsv4_cuda_ctx *ctx, uint16_t *x, long n, float s, dsv4_err *err);
/* split = 1: dst[g][r][c] = src[r][g·cols + c]; split = 0: the inverse. bf16, G groups. */
dsv4_status dsv4_glue_regroup(dsv4_cuda_ctx *ctx, const uint16_t *src, uint16_t *dst, int rows, int G, int cols,
                              int split, dsv4_err *err);
/* Vocab-split embedding: out[r] = the FP32 row tokens[r] - v0 of table [nv, D] bf16 when this rank owns it,
 * else -0.0 (the identity of IEEE addition: the all-reduce over ranks reproduces the row bit for bit). */
dsv4_status dsv4_glue_embed_part(dsv4_cuda_ctx *ctx, const uint16_t *table, int v0, int nv, int D,
                                 const int32_t *tokens, int rows, float *out, dsv4_err *err);
/* Element-wise conversions (bf16 -> f32 exact; f32 -> bf16 round to nearest even). */
dsv4_status dsv4_glue_bf16_to_f32(dsv4_cuda_ctx *ctx, const uint16_t *x, long n, float *y, dsv4_err *err);
dsv4_status dsv4_glue_f32_to_bf16(dsv4_cuda_ctx *ctx, const float *x, long n, uint16_t *y, dsv4_err *err);
/* After the head's all-gather: all [world][n][nv] (rank-major slices) -> out [n][world·nv] in vocab order. */
dsv4_status dsv4_glue_vocab_interleave(dsv4_cuda_ctx *ctx, const float *all, int world, int n, int nv, float *out,
                                       dsv4_err *err);
/* dst[i] = src[idx[i]], rows of `elems` bf16. */
dsv4_status dsv4_glue_gather_rows(dsv4_cuda_ctx *ctx, const uint16_t *src, int elems, const int32_t *idx, int n,
                                  uint16_t *dst, dsv4_err *err);

#ifdef __cplusplus
}
#endif
#endif
