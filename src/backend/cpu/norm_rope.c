/* norm_rope.c — CPU reference of RMSNorm (spec §3.2), the BF16-arithmetic per-head q normalisation
 * (§4.3 step 1), RoPE with YaRN (§3.7) and the embedding lookup (§4.1). Owns no state; never allocates.
 *
 * Accumulation policy of the whole CPU op backend: long reductions (sums of squares, dot products) are
 * accumulated in fp64 and rounded once to FP32. The official code sums in FP32 in a GPU-dependent order;
 * an fp64 sum rounded once is at least as accurate as any FP32 order, so the difference between a GPU
 * kernel and this oracle measures the kernel's own summation error. Element-wise steps (rsqrt, products,
 * cos/sin, rotations) are FP32 exactly as in the official code, and BF16 roundings sit where it has them. */
#include "backend/cpu/ops.h"

#include <math.h>

#include "core/numfmt.h"
#include "core/status.h"

/* ================================================================================================== */
/* RMSNorm                                                                                            */
/* ================================================================================================== */

/* Official: x.float(); var = mean(x²) (FP32); x * rsqrt(var + eps); w * that; .to(bf16).
 * rsqrt is 1/sqrtf here (two FP32 roundings); CUDA's rsqrtf differs by ≤ 2 ulp of FP32. */
void dsv4_cpu_rmsnorm(const float *x, const uint16_t *w, int n, float eps, float *y) {
    double ss = 0.0;
    for (int i = 0; i < n; i++) ss += (double)x[i] * (double)x[i];
    float var = (float)(ss / n);
    float r = 1.0f / sqrtf(var + eps);
    for (int i = 0; i < n; i++) {
        float v = x[i] * r;
        if (w) v = dsv4_bf16_to_f32(w[i]) * v;
        y[i] = dsv4_bf16_round(v);
    }
}

/* Official (model.py, Attention.forward): q *= rsqrt(q.square().mean(-1) + eps) on a BF16 tensor.
 * Each torch op on a BF16 tensor computes in FP32 and rounds its result to BF16, and the mean reduces
 * in FP32; so the rounding points are:
 *   sq_i = bf16(x_i²)          (x_i² is exact in FP32: 8-bit significands)
 *   mean = bf16(Σ sq_i / n)    (sum accumulated wide, one FP32 rounding, then BF16)
 *   t    = bf16(mean + eps)
 *   r    = bf16(1/sqrtf(t))
 *   x_i  = bf16(x_i · r)       (exact in FP32, one BF16 rounding) */
void dsv4_cpu_rmsnorm_bf16_arith(float *x, int n, float eps) {
    double ss = 0.0;
    for (int i = 0; i < n; i++) ss += (double)dsv4_bf16_round(x[i] * x[i]);
    float mean = dsv4_bf16_round((float)(ss / n));
    float t = dsv4_bf16_round(mean + eps);
    float r = dsv4_bf16_round(1.0f / sqrtf(t));
    for (int i = 0; i < n; i++) x[i] = dsv4_bf16_round(x[i] * r);
}

/* ================================================================================================== */
/* RoPE / YaRN (the tables: core/rope.c, shared with the CUDA backend)                                */
/* ================================================================================================== */

/* (a + ib)·(c ± is) in FP32 with each product and sum rounded (no FMA: -ffp-contract=off). */
void dsv4_cpu_rope(float *x, long pos, const dsv4_rope *r, int inverse) {
    float t = (float)pos;
    for (int p = 0; p < r->rope_dim / 2; p++) {
        float ang = t * r->inv_freq[p];
        float c = cosf(ang), s = sinf(ang);
        if (inverse) s = -s;
        float a = x[2 * p], b = x[2 * p + 1];
        x[2 * p] = dsv4_bf16_round(a * c - b * s);
        x[2 * p + 1] = dsv4_bf16_round(a * s + b * c);
    }
}

/* ================================================================================================== */
/* Embedding                                                                                           */
/* ================================================================================================== */

void dsv4_cpu_embed(const uint16_t *table, int D, int token, float *out) {
    const uint16_t *row = table + (size_t)token * D;
    for (int i = 0; i < D; i++) out[i] = dsv4_bf16_to_f32(row[i]);
}
