/* attention.c — CPU reference of sparse attention with a per-head sink (spec §3.8): gathered K = V rows,
 * FP32 scores and exponentials, un-normalised probabilities rounded to BF16 before the P·V product,
 * denominator (with the sink) from the unrounded FP32 exponentials. No state, no allocation.
 *
 * The official tilelang kernel runs an online softmax over blocks of 64 indices, so its BF16 rounding
 * of exp(s − m) happens against the running maximum of the blocks seen so far and is later rescaled.
 * This reference uses the final maximum (the spec's formula; equal to the kernel whenever the maximum
 * lies in the first block, which the window-first index order makes the common case). The two differ by
 * at most one BF16 rounding per probability. */
#include "backend/cpu/ops.h"

#include <math.h>

#include "core/numfmt.h"
#include "core/status.h"

#define DSV4_ATTN_MAX_HD 512

/* Per head h: s_j = fl32(q_h·kv_j) · scale; m = max s_j; e_j = expf(s_j − m);
 * Z = Σ e_j + expf(sink_h − m); out_h = bf16( (Σ_j bf16(e_j)·kv_j) / Z ).
 * Dot products and both sums accumulate in fp64, rounded once to FP32. A head with no valid row gets
 * zeros (what the official kernel produces: 0 / exp(+inf)). */
void dsv4_cpu_sparse_attn(const float *q, int H, int hd, const float *const *rows, int K, const float *sink,
                          float scale, float *out) {
    DSV4_ASSERT(hd > 0 && hd <= DSV4_ATTN_MAX_HD);
    for (int h = 0; h < H; h++) {
        const float *qh = q + (size_t)h * hd;
        float *oh = out + (size_t)h * hd;
        float m = -INFINITY;
        int n_valid = 0;
        for (int j = 0; j < K; j++) {
            if (!rows[j]) continue;
            n_valid++;
            double acc = 0.0;
            for (int d = 0; d < hd; d++) acc += (double)qh[d] * (double)rows[j][d];
            float s = (float)acc * scale;
            if (s > m) m = s;
        }
        if (n_valid == 0) {
            for (int d = 0; d < hd; d++) oh[d] = 0.0f;
            continue;
        }
        /* Second pass: recompute the scores (cheaper than a K-sized buffer; bitwise the same values). */
        double Z = 0.0, o[DSV4_ATTN_MAX_HD];
        for (int d = 0; d < hd; d++) o[d] = 0.0;
        for (int j = 0; j < K; j++) {
            if (!rows[j]) continue;
            double acc = 0.0;
            for (int d = 0; d < hd; d++) acc += (double)qh[d] * (double)rows[j][d];
            float s = (float)acc * scale;
            float e = expf(s - m);
            Z += e;
            float p = dsv4_bf16_round(e);
            for (int d = 0; d < hd; d++) o[d] += (double)p * (double)rows[j][d];
        }
        float z = (float)(Z + (double)expf(sink[h] - m));
        for (int d = 0; d < hd; d++) oh[d] = dsv4_bf16_round((float)o[d] / z);
    }
}
