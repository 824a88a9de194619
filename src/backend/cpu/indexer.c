/* indexer.c — CPU reference of the Lightning Indexer's scoring (spec §4.6 step 4) with the official BF16
 * rounding points, and the top-k selection with the engine's tie rule (equal scores: lower index wins).
 * No state, no allocation. */
#include "backend/cpu/ops.h"

#include <math.h>

#include "core/numfmt.h"

/* ================================================================================================== */
/* Scores                                                                                              */
/* ================================================================================================== */

/* Official: einsum(q, k) as a BF16 matmul (FP32 accumulate, BF16 output), relu_ on BF16 (exact),
 * relu · weights as a BF16 tensor product (FP32 multiply, BF16 result), .sum over heads of a BF16 tensor
 * (FP32 accumulation, one BF16 rounding). So
 *   score[w] = bf16( Σ_h bf16( wI[h] · max(bf16(qI_h · K_w), 0) ) ).
 * Here the dot products and the head sum accumulate in fp64 and are rounded to FP32, then BF16. */
void dsv4_cpu_indexer_scores(const float *qI, const float *wI, int nh, int dh, const float *keys, int n_keys,
                             float *scores) {
    for (int w = 0; w < n_keys; w++) {
        const float *k = keys + (size_t)w * dh;
        double sum = 0.0;
        for (int h = 0; h < nh; h++) {
            const float *q = qI + (size_t)h * dh;
            double acc = 0.0;
            for (int i = 0; i < dh; i++) acc += (double)q[i] * (double)k[i];
            float dot = dsv4_bf16_round((float)acc);
            if (!(dot > 0.0f)) dot = 0.0f; /* ReLU (also maps -0 to +0) */
            sum += dsv4_bf16_round(wI[h] * dot);
        }
        scores[w] = dsv4_bf16_round((float)sum);
    }
}

/* ================================================================================================== */
/* Top-k                                                                                               */
/* ================================================================================================== */

/* Strict total order "a ranks before b": larger score first, NaN after every number, then lower index. */
static int ranks_before(const float *s, int32_t a, int32_t b) {
    float x = s[a], y = s[b];
    int xn = isnan(x), yn = isnan(y);
    if (xn != yn) return yn;
    if (!xn && x != y) return x > y;
    return a < b;
}

/* out[0..n) as a binary heap whose root is the element that ranks last (the current k-th best). */
static void sift_down(const float *s, int32_t *h, int n, int i) {
    for (;;) {
        int l = 2 * i + 1, r = l + 1, worst = i;
        if (l < n && ranks_before(s, h[worst], h[l])) worst = l;
        if (r < n && ranks_before(s, h[worst], h[r])) worst = r;
        if (worst == i) return;
        int32_t t = h[i];
        h[i] = h[worst];
        h[worst] = t;
        i = worst;
    }
}

/* O(n log k) selection with a size-k heap kept in out_idx itself, then an in-place heap sort, so nothing
 * is allocated. The result is independent of the input order except through the index tie-break. */
void dsv4_cpu_topk(const float *scores, int n, int k, int32_t *out_idx) {
    if (k <= 0) return;
    if (k > n) k = n;
    for (int i = 0; i < k; i++) out_idx[i] = i;
    for (int i = k / 2 - 1; i >= 0; i--) sift_down(scores, out_idx, k, i);
    for (int i = k; i < n; i++)
        if (ranks_before(scores, i, out_idx[0])) {
            out_idx[0] = i;
            sift_down(scores, out_idx, k, 0);
        }
    /* Heap sort: repeatedly move the last-ranked element to the end → best-first order. */
    for (int end = k - 1; end > 0; end--) {
        int32_t t = out_idx[0];
        out_idx[0] = out_idx[end];
        out_idx[end] = t;
        sift_down(scores, out_idx, end, 0);
    }
}
