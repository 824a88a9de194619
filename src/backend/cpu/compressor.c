/* compressor.c — CPU reference of the KV compressor's per-entry math (spec §4.5): the gated softmax
 * pooling over a window's slots (per channel, FP32) and the post-processing of an emitted entry
 * (bf16 round, RMSNorm, RoPE at the window's first position, then FP8 fake-quant of the nope dims for the
 * main compressor or Hadamard + FP4 fake-quant for the indexer's). The window bookkeeping (which slots,
 * the decode-time state, ape) belongs to the caller. No state, no allocation. */
#include "backend/cpu/ops.h"

#include <math.h>

#include "backend/cpu/quant.h"
#include "core/numfmt.h"
#include "core/status.h"

/* ================================================================================================== */
/* Pooling                                                                                             */
/* ================================================================================================== */

/* Per channel c: m = max_s score; e_s = expf(score − m); p_s = e_s / Σ e (FP32, as torch softmax);
 * out = Σ_s p_s·value_s (FP32 products, fp64 sum rounded once). Slots with score −inf are skipped (their
 * value is never read, so stale/uninitialised values are harmless). A channel whose slots are all −inf
 * gets 0 (the official softmax would give NaN; it never happens for an emitted entry). */
void dsv4_cpu_compress_pool(const float *values, const float *scores, int n_slots, int d, int ld, float *out) {
    for (int c = 0; c < d; c++) {
        float m = -INFINITY;
        for (int s = 0; s < n_slots; s++) {
            float v = scores[(size_t)s * ld + c];
            if (v > m) m = v;
        }
        if (m == -INFINITY) {
            out[c] = 0.0f;
            continue;
        }
        double z = 0.0;
        for (int s = 0; s < n_slots; s++) {
            float v = scores[(size_t)s * ld + c];
            if (v != -INFINITY) z += expf(v - m);
        }
        float zf = (float)z;
        double acc = 0.0;
        for (int s = 0; s < n_slots; s++) {
            float v = scores[(size_t)s * ld + c];
            if (v == -INFINITY) continue;
            float p = expf(v - m) / zf;
            acc += p * values[(size_t)s * ld + c];
        }
        out[c] = (float)acc;
    }
}

/* ================================================================================================== */
/* Entry post-processing                                                                               */
/* ================================================================================================== */

void dsv4_cpu_compress_finish(float *e, int d, const uint16_t *norm_w, float eps, long pos, const dsv4_rope *r,
                              int is_indexer) {
    int rd = r->rope_dim;
    DSV4_ASSERT(d > rd && (is_indexer ? d == 128 : (d - rd) % 64 == 0));
    for (int i = 0; i < d; i++) e[i] = dsv4_bf16_round(e[i]);
    dsv4_cpu_rmsnorm(e, norm_w, d, eps, e);
    dsv4_cpu_rope(e + d - rd, pos, r, 0);
    if (is_indexer) {
        dsv4_cpu_hadamard128(e);
        dsv4_cpu_fake_quant_fp4(e, (size_t)d);
    } else {
        dsv4_cpu_fake_quant_fp8(e, (size_t)(d - rd), 64);
    }
}
