/* hc.c — CPU reference of the hyper-connection ops (spec §3.9, §4.2, §4.9): the Sinkhorn split of the
 * mixing logits, hc_pre (collapse hc streams to one), hc_post (expand back) and hc_head (final collapse).
 * FP32 element-wise math as the official tilelang kernel / torch code; long dot products (the 24 × hc·D
 * mix projection and the sum of squares) accumulated in fp64 and rounded once (see norm_rope.c).
 * No state, no allocation; hc ≤ DSV4_HC_MAX. */
#include "backend/cpu/ops.h"

#include <math.h>

#include "core/numfmt.h"
#include "core/status.h"

#define DSV4_HC_MAX 8

static float sigmoidf(float z) { return 1.0f / (1.0f + expf(-z)); }

/* ================================================================================================== */
/* Sinkhorn split                                                                                      */
/* ================================================================================================== */

/* Order of the official kernel: row softmax + eps, column normalisation, then (iters − 1) × (row, column)
 * normalisations, each dividing by (sum + eps). Sums over hc ≤ 8 entries are sequential FP32. */
void dsv4_cpu_hc_sinkhorn(const float *mix, const float *scale, const float *base, int hc, int iters,
                          float eps, float *pre, float *post, float *comb) {
    DSV4_ASSERT(hc > 0 && hc <= DSV4_HC_MAX && iters >= 1);
    for (int j = 0; j < hc; j++) pre[j] = sigmoidf(mix[j] * scale[0] + base[j]) + eps;
    for (int j = 0; j < hc; j++) post[j] = 2.0f * sigmoidf(mix[hc + j] * scale[1] + base[hc + j]);
    float *C = comb;
    for (int j = 0; j < hc * hc; j++) C[j] = mix[2 * hc + j] * scale[2] + base[2 * hc + j];
    float sum[DSV4_HC_MAX];
    for (int j = 0; j < hc; j++) {
        float m = C[j * hc];
        for (int k = 1; k < hc; k++) m = C[j * hc + k] > m ? C[j * hc + k] : m;
        float s = 0.0f;
        for (int k = 0; k < hc; k++) {
            C[j * hc + k] = expf(C[j * hc + k] - m);
            s += C[j * hc + k];
        }
        for (int k = 0; k < hc; k++) C[j * hc + k] = C[j * hc + k] / s + eps;
    }
    for (int it = 0; it < iters; it++) {
        if (it > 0) { /* row normalisation (the first one is the softmax above) */
            for (int j = 0; j < hc; j++) {
                float s = 0.0f;
                for (int k = 0; k < hc; k++) s += C[j * hc + k];
                for (int k = 0; k < hc; k++) C[j * hc + k] = C[j * hc + k] / (s + eps);
            }
        }
        for (int k = 0; k < hc; k++) {
            sum[k] = 0.0f;
            for (int j = 0; j < hc; j++) sum[k] += C[j * hc + k];
        }
        for (int j = 0; j < hc; j++)
            for (int k = 0; k < hc; k++) C[j * hc + k] = C[j * hc + k] / (sum[k] + eps);
    }
}

/* ================================================================================================== */
/* hc_pre / hc_post / hc_head                                                                          */
/* ================================================================================================== */

/* mix[m] = (fn[m] · v) · rsqrt(mean(v²) + norm_eps) over the flattened v = X (length hc·D). */
static void hc_mix(const float *X, int n, const float *fn, int n_mix, float norm_eps, float *mix) {
    double ss = 0.0;
    for (int i = 0; i < n; i++) ss += (double)X[i] * (double)X[i];
    float r = 1.0f / sqrtf((float)(ss / n) + norm_eps);
    for (int m = 0; m < n_mix; m++) {
        const float *f = fn + (size_t)m * n;
        double acc = 0.0;
        for (int i = 0; i < n; i++) acc += (double)f[i] * (double)X[i];
        mix[m] = (float)acc * r;
    }
}

/* y[d] = bf16(Σ_h pre[h]·X[h][d]), FP32 products summed in stream order. */
static void hc_collapse(const float *X, const float *pre, int hc, int D, float *y) {
    for (int d = 0; d < D; d++) {
        float s = 0.0f;
        for (int h = 0; h < hc; h++) s += pre[h] * X[(size_t)h * D + d];
        y[d] = dsv4_bf16_round(s);
    }
}

void dsv4_cpu_hc_pre(const float *X, int hc, int D, const float *fn, const float *base, const float *scale,
                     int iters, float hc_eps, float norm_eps, float *x, float *post, float *comb) {
    DSV4_ASSERT(hc > 0 && hc <= DSV4_HC_MAX);
    float mix[(2 + DSV4_HC_MAX) * DSV4_HC_MAX], pre[DSV4_HC_MAX];
    hc_mix(X, hc * D, fn, (2 + hc) * hc, norm_eps, mix);
    dsv4_cpu_hc_sinkhorn(mix, scale, base, hc, iters, hc_eps, pre, post, comb);
    hc_collapse(X, pre, hc, D, x);
}

/* Official: post[k]·a + Σ_j comb[j][k]·residual[j] — the j-sum first (FP32, stream order), then the add. */
void dsv4_cpu_hc_post(const float *a, const float *residual, const float *post, const float *comb, int hc,
                      int D, float *X_out) {
    for (int k = 0; k < hc; k++)
        for (int d = 0; d < D; d++) {
            float s = 0.0f;
            for (int j = 0; j < hc; j++) s += comb[j * hc + k] * residual[(size_t)j * D + d];
            X_out[(size_t)k * D + d] = dsv4_bf16_round(post[k] * a[d] + s);
        }
}

void dsv4_cpu_hc_head(const float *X, int hc, int D, const float *fn, const float *base, const float *scale,
                      float hc_eps, float norm_eps, float *y) {
    DSV4_ASSERT(hc > 0 && hc <= DSV4_HC_MAX);
    float mix[DSV4_HC_MAX], pre[DSV4_HC_MAX];
    hc_mix(X, hc * D, fn, hc, norm_eps, mix);
    for (int h = 0; h < hc; h++) pre[h] = sigmoidf(mix[h] * scale[0] + base[h]) + hc_eps;
    hc_collapse(X, pre, hc, D, y);
}
