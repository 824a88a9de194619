/* quant.c — CPU reference of act_quant (FP8), fp4_act_quant and the Hadamard rotation (see quant.h). */
#include "backend/cpu/quant.h"

#include <math.h>

#include "core/numfmt.h"

static float clampf(float v, float lo, float hi) { return v < lo ? lo : (v > hi ? hi : v); }

void dsv4_cpu_act_quant_fp8(const float *x, size_t n, int block, uint8_t *q, uint8_t *scale_e8m0) {
    for (size_t b = 0; b * block < n; b++) {
        const float *xb = x + b * block;
        int e = dsv4_pow2_scale_exp(dsv4_block_amax(xb, block), DSV4_FP8_AMAX_FLOOR, 1.0f / 448.0f);
        /* x / s with s a power of two is exact (ldexp), as is the official multiply by 1/s. */
        for (int i = 0; i < block; i++) q[b * block + i] = dsv4_f32_to_e4m3(clampf(ldexpf(xb[i], -e), -448.0f, 448.0f));
        scale_e8m0[b] = (uint8_t)(e + 127);
    }
}

void dsv4_cpu_fake_quant_fp8(float *x, size_t n, int block) {
    for (size_t b = 0; b * block < n; b++) {
        float *xb = x + b * block;
        int e = dsv4_pow2_scale_exp(dsv4_block_amax(xb, block), DSV4_FP8_AMAX_FLOOR, 1.0f / 448.0f);
        for (int i = 0; i < block; i++) {
            float qv = dsv4_e4m3_to_f32(dsv4_f32_to_e4m3(clampf(ldexpf(xb[i], -e), -448.0f, 448.0f)));
            xb[i] = dsv4_bf16_round(ldexpf(qv, e));
        }
    }
}

void dsv4_cpu_fake_quant_fp4(float *x, size_t n) {
    for (size_t b = 0; b * 32 < n; b++) {
        float *xb = x + b * 32;
        int e = dsv4_pow2_scale_exp(dsv4_block_amax(xb, 32), DSV4_FP4_AMAX_FLOOR, 1.0f / 6.0f);
        for (int i = 0; i < 32; i++) {
            /* e2m1 has no NaN or infinity: the code would saturate to ±6 and hide a non-finite input from
             * the forward's checks, so a non-finite value stays NaN (finite inputs are unaffected). */
            if (!isfinite(xb[i])) {
                xb[i] = NAN;
                continue;
            }
            float qv = dsv4_e2m1_to_f32(dsv4_f32_to_e2m1(clampf(ldexpf(xb[i], -e), -6.0f, 6.0f)));
            xb[i] = dsv4_bf16_round(ldexpf(qv, e));
        }
    }
}

void dsv4_cpu_hadamard128(float *x) {
    /* In-place fast Walsh–Hadamard butterflies in FP32, then the 128^-1/2 scale. */
    float t[128];
    for (int i = 0; i < 128; i++) t[i] = x[i];
    for (int h = 1; h < 128; h <<= 1)
        for (int i = 0; i < 128; i += 2 * h)
            for (int j = i; j < i + h; j++) {
                float a = t[j], b = t[j + h];
                t[j] = a + b;
                t[j + h] = a - b;
            }
    const float s = 0.08838834764831845f; /* 128^-1/2 */
    for (int i = 0; i < 128; i++) x[i] = dsv4_bf16_round(t[i] * s);
}
