/* cuda_moe_pairs.h — the routed experts of the CUDA forward computed per (row, expert slot) pair (the default
 * path; the grouped one is cuda_moe.h, DSV4_CUDA_MOE=grouped) and the per-row combine both paths share:
 * Σ routed (ascending expert id) + shared in FP32, whole or split at the tensor-parallel all-reduce point
 * (docs/MULTI_GPU.md). Plain C header; the kernels are in kernels/moe_pairs.cu.
 *
 * CPU twins: the expert linear is dsv4_cpu_linear_fp8 / dsv4_cpu_linear_fp4 (backend/cpu/linear.h) on the
 * act-quantized row, the block-scaled product of spec §3.6 (only the FP32 order of the per-block sums
 * differs: tolerance in docs/NUMERICS.md); the combine is the end of forward_cpu.c moe_layer (EXACT: the same
 * FP32 additions in the same order). Tests: tests/unit/test_cuda_glue.c. */
#ifndef DSV4_BACKEND_CUDA_CUDA_MOE_PAIRS_H
#define DSV4_BACKEND_CUDA_CUDA_MOE_PAIRS_H

#include <stddef.h>
#include <stdint.h>

#include "backend/cuda/cuda_ctx.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Routed expert linear for (row, slot) pairs chosen on the device: y[p] = W_{experts[p]-e0} · x[p / in_div]
 * for the ne experts [e0, e0+ne) held here (a rank's expert slice; e0 = 0, ne = E on one GPU); pairs whose
 * expert is elsewhere get y[p] = 0,
 * x act-quantized (xq [*, K] e4m3, xs [*, K/128] e8m0). Weights stacked per expert: w + e·w_stride,
 * s + e·s_stride; fp4: [N, K/2] e2m1 with [N, K/32] e8m0; else FP8 [N, K] with [N/128, K/128]. y [pairs, N]
 * bf16, the block-scaled product of spec §3.6 (FP32 per block, FP32 accumulation). K % 128 == 0. */
dsv4_status dsv4_glue_moe_expert(dsv4_cuda_ctx *ctx, const uint8_t *xq, const uint8_t *xs, int K, int in_div,
                                 const int32_t *experts, int e0, int ne, int n_pairs, const uint8_t *w,
                                 const uint8_t *s, size_t w_stride, size_t s_stride, int fp4, int N, uint16_t *y,
                                 dsv4_err *err);
/* out[r] = bf16(Σ_j ey[r·k + j] (ascending expert id) + sy[r]), FP32 sum, as the CPU. */
dsv4_status dsv4_glue_moe_combine(dsv4_cuda_ctx *ctx, const uint16_t *ey, const int32_t *experts, int rows, int k,
                                  int D, const uint16_t *sy, uint16_t *out, dsv4_err *err);

/* ---- tensor/expert parallelism (docs/MULTI_GPU.md): the halves around the official collective points ---- */
/* part[r] = Σ_j ey[r·k + j] (ascending expert id) over the experts in [e0, e0+ne) only, FP32 — the additions of
 * moe_combine before its shared-expert add; then (after the FP32 all-reduce of part) moe_finish:
 * out[i] = bf16(part[i] + sy[i]). With e0 = 0, ne = E the pair equals moe_combine bit for bit. */
dsv4_status dsv4_glue_moe_partial(dsv4_cuda_ctx *ctx, const uint16_t *ey, const int32_t *experts, int rows, int k,
                                  int D, int e0, int ne, float *part, dsv4_err *err);
dsv4_status dsv4_glue_moe_finish(dsv4_cuda_ctx *ctx, const float *part, const uint16_t *sy, long n, uint16_t *out,
                                 dsv4_err *err);

#ifdef __cplusplus
}
#endif
#endif
