/* test_quant.c — the CPU activation quantizers and the Hadamard rotation (quant.h; spec §3.3–§3.5) against
 * their definitions computed in fp64 (no shared code with quant.c beyond the number-format decoders, which
 * test_numfmt.c covers exhaustively): act_quant FP8 codes and ue8m0 scales, including the scale edge at
 * amax = 448·2^k and the 1e-4 amax floor; fake-quant FP8 (block 64) and FP4 (block 32, ties to even);
 * the 128-point Hadamard against the Sylvester matrix, and its orthonormality. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu/quant.h"
#include "core/numfmt.h"
#include "test_util.h"

/* ---- fp64 definitions -------------------------------------------------------------------------- */

static double e4m3_val(int c) { /* c in 0..126, positive */
    int e = (c >> 3) & 15, m = c & 7;
    return e == 0 ? m * ldexp(1, -9) : (1 + m / 8.0) * ldexp(1, e - 7);
}

/* Nearest e4m3 code to v (|v| <= 448), ties to the even code; by search over all positive codes. */
static int e4m3_nearest(double v) {
    double a = fabs(v);
    int best = 0;
    for (int c = 1; c <= 0x7e; c++) {
        double d = fabs(e4m3_val(c) - a), db = fabs(e4m3_val(best) - a);
        if (d < db || (d == db && (c & 1) == 0)) best = c;
    }
    return (v < 0 ? 0x80 : 0) | best;
}

static const double e2m1_mag[8] = {0, 0.5, 1, 1.5, 2, 3, 4, 6};

static double e2m1_nearest(double v) { /* |v| <= 6, ties to even code */
    double a = fabs(v);
    int best = 0;
    for (int c = 1; c < 8; c++) {
        double d = fabs(e2m1_mag[c] - a), db = fabs(e2m1_mag[best] - a);
        if (d < db || (d == db && (c & 1) == 0)) best = c;
    }
    return v < 0 ? -e2m1_mag[best] : e2m1_mag[best];
}

/* Scale exponent per spec: t = fl32(max(amax, floor) · fl32(1/max)); e = ceil(log2 t), exact in fp64. */
static int scale_exp_def(double amax, float floor_amax, float max_val) {
    if (amax < floor_amax) amax = floor_amax;
    float t = (float)amax * (1.0f / max_val);
    int ex;
    double fr = frexp((double)t, &ex); /* t = fr·2^ex, fr in [0.5, 1) */
    return fr == 0.5 ? ex - 1 : ex;
}

static double clampd(double v, double m) { return v < -m ? -m : (v > m ? m : v); }

/* Checks act_quant on x[n] (block b) against the definition; returns the number of mismatches. */
static int check_act_quant(const float *x, int n, int block) {
    uint8_t *q = malloc((size_t)n), *s = malloc((size_t)n / block);
    dsv4_cpu_act_quant_fp8(x, (size_t)n, block, q, s);
    int bad = 0;
    for (int b = 0; b < n / block; b++) {
        double amax = 0;
        for (int i = 0; i < block; i++) amax = fmax(amax, fabs(x[b * block + i]));
        int e = scale_exp_def(amax, DSV4_FP8_AMAX_FLOOR, 448.0f);
        if (s[b] != e + 127) bad++;
        for (int i = 0; i < block; i++) {
            int want = e4m3_nearest(clampd(ldexp(x[b * block + i], -e), 448));
            if (q[b * block + i] != want && !((want & 0x7f) == 0 && (q[b * block + i] & 0x7f) == 0)) bad++;
        }
    }
    free(q), free(s);
    return bad;
}

/* ---- act_quant FP8 ----------------------------------------------------------------------------- */

static void test_act_quant_random(void) {
    test_rng r;
    test_rng_seed(&r, 1);
    static const double sig[] = {1e-6, 1e-3, 0.05, 1, 30, 3000, 1e5};
    float x[1024];
    for (size_t i = 0; i < sizeof sig / sizeof sig[0]; i++) {
        test_fill_bf16(&r, x, 1024, sig[i]);
        CHECK(check_act_quant(x, 1024, 128) == 0, "sigma %g block 128", sig[i]);
        CHECK(check_act_quant(x, 1024, 64) == 0, "sigma %g block 64", sig[i]);
    }
}

static void test_act_quant_scale_edges(void) {
    test_rng r;
    test_rng_seed(&r, 2);
    float x[128];
    uint8_t q[128], s[1];
    for (int k = -12; k <= 12; k++) {
        /* amax exactly 448·2^k: scale 2^k, the max element encodes to 448 (0x7e) */
        test_fill_bf16(&r, x, 128, ldexp(50, k));
        for (int i = 0; i < 128; i++) x[i] = dsv4_bf16_round(clampd(x[i], ldexp(400, k)));
        x[17] = ldexpf(-448.0f, k);
        dsv4_cpu_act_quant_fp8(x, 128, 128, q, s);
        CHECK(s[0] == 127 + k, "448*2^%d: scale byte %d", k, s[0]);
        CHECK(q[17] == 0xfe, "448*2^%d: code %02x", k, q[17]);
        CHECK(check_act_quant(x, 128, 128) == 0, "448*2^%d vs def", k);
        /* one FP32 ulp above, and one BF16 ulp above (the next input an activation can hold): scale 2^(k+1) */
        x[17] = nextafterf(ldexpf(-448.0f, k), -INFINITY);
        dsv4_cpu_act_quant_fp8(x, 128, 128, q, s);
        CHECK(s[0] == 128 + k, "448*2^%d + f32 ulp: scale byte %d", k, s[0]);
        CHECK(check_act_quant(x, 128, 128) == 0, "448*2^%d + f32 ulp vs def", k);
        x[17] = ldexpf(-450.0f, k);
        dsv4_cpu_act_quant_fp8(x, 128, 128, q, s);
        CHECK(s[0] == 128 + k && q[17] == 0xf6, "448*2^%d + bf16 ulp: scale %d code %02x (-225 -> -224)", k, s[0], q[17]);
    }
}

static void test_act_quant_floor(void) {
    /* All-zero block and blocks far below 1e-4: the floor sets the scale 2^ceil(log2(1e-4/448)) = 2^-22. */
    float x[256];
    uint8_t q[256], s[2];
    for (int i = 0; i < 128; i++) x[i] = 0.0f;
    test_rng r;
    test_rng_seed(&r, 3);
    test_fill_bf16(&r, x + 128, 128, 1e-7);
    dsv4_cpu_act_quant_fp8(x, 256, 128, q, s);
    int e_floor = scale_exp_def(0, DSV4_FP8_AMAX_FLOOR, 448.0f);
    CHECK(e_floor == -22, "floor exponent %d", e_floor);
    CHECK(s[0] == 127 - 22 && s[1] == 127 - 22, "floor scale bytes %d %d", s[0], s[1]);
    int nz = 0;
    for (int i = 0; i < 128; i++) nz += q[i] != 0;
    CHECK(nz == 0, "zero block codes");
    CHECK(check_act_quant(x, 256, 128) == 0, "small block vs def");
    /* Just above the floor: amax = 2e-4 -> its own scale. */
    for (int i = 0; i < 128; i++) x[i] = dsv4_bf16_round(i == 3 ? 2e-4f : 1e-5f);
    CHECK(check_act_quant(x, 128, 128) == 0, "amax 2e-4 vs def");
}

/* ---- fake-quant -------------------------------------------------------------------------------- */

static void test_fake_quant_fp8_block64(void) {
    test_rng r;
    test_rng_seed(&r, 4);
    float x[512], y[512];
    static const double sig[] = {1e-7, 0.01, 1, 500};
    for (size_t t = 0; t < 4; t++) {
        test_fill_bf16(&r, x, 512, sig[t]);
        memcpy(y, x, sizeof x);
        dsv4_cpu_fake_quant_fp8(y, 512, 64);
        int bad = 0;
        for (int b = 0; b < 8; b++) {
            double amax = 0;
            for (int i = 0; i < 64; i++) amax = fmax(amax, fabs(x[b * 64 + i]));
            int e = scale_exp_def(amax, DSV4_FP8_AMAX_FLOOR, 448.0f);
            for (int i = 0; i < 64; i++) {
                int c = e4m3_nearest(clampd(ldexp(x[b * 64 + i], -e), 448));
                double want = ldexp((c & 0x80) ? -e4m3_val(c & 0x7f) : e4m3_val(c & 0x7f), e);
                if ((double)y[b * 64 + i] != want) bad++;
                if (dsv4_bf16_round((float)want) != (float)want) bad++; /* exactly representable (spec §3.3) */
            }
        }
        CHECK(bad == 0, "sigma %g: %d mismatches", sig[t], bad);
    }
}

static void test_fake_quant_fp4_ties_and_random(void) {
    /* Block with amax 6·2^k (scale 2^k) holding every e2m1 tie point and its neighbours. */
    static const double ties[][2] = {{0.25, 0}, {0.75, 1}, {1.25, 1}, {1.75, 2}, {2.5, 2}, {3.5, 4}, {5.0, 4}};
    for (int k = -5; k <= 5; k++) {
        float x[32];
        for (int i = 0; i < 32; i++) x[i] = ldexpf(0.5f, k);
        x[0] = ldexpf(6.0f, k);
        for (int t = 0; t < 7; t++) {
            x[1 + t] = (float)ldexp(ties[t][0], k);
            x[8 + t] = (float)ldexp(-ties[t][0], k);
            x[15 + t] = dsv4_bf16_to_f32((uint16_t)(dsv4_f32_to_bf16((float)ldexp(ties[t][0], k)) + 1)); /* next bf16 up */
        }
        float y[32];
        memcpy(y, x, sizeof x);
        dsv4_cpu_fake_quant_fp4(y, 32);
        for (int t = 0; t < 7; t++) {
            CHECK(y[1 + t] == (float)ldexp(ties[t][1], k), "k=%d tie %g -> %g (want %g)", k, ties[t][0], ldexp(y[1 + t], -k), ties[t][1]);
            CHECK(y[8 + t] == (float)ldexp(-ties[t][1], k), "k=%d tie -%g", k, ties[t][0]);
            CHECK(y[15 + t] == (float)ldexp(e2m1_nearest(ldexp(x[15 + t], -k)), k), "k=%d above tie %g", k, ties[t][0]);
        }
    }
    test_rng r;
    test_rng_seed(&r, 5);
    float x[1024], y[1024];
    static const double sig[] = {1e-30, 1e-3, 1, 1e4};
    for (size_t t = 0; t < 4; t++) {
        test_fill_bf16(&r, x, 1024, sig[t]);
        memcpy(y, x, sizeof x);
        dsv4_cpu_fake_quant_fp4(y, 1024);
        int bad = 0;
        for (int b = 0; b < 32; b++) {
            double amax = 0;
            for (int i = 0; i < 32; i++) amax = fmax(amax, fabs(x[b * 32 + i]));
            int e = scale_exp_def(amax, DSV4_FP4_AMAX_FLOOR, 6.0f);
            for (int i = 0; i < 32; i++) {
                double want = ldexp(e2m1_nearest(clampd(ldexp(x[b * 32 + i], -e), 6)), e);
                if ((double)y[b * 32 + i] != want) bad++;
            }
        }
        CHECK(bad == 0, "sigma %g: %d mismatches", sig[t], bad);
    }
}

/* ---- Hadamard ------------------------------------------------------------------------------------ */

static int popcount(unsigned v) {
    int c = 0;
    for (; v; v &= v - 1) c++;
    return c;
}

/* got must be RNE_bf16 of a value within e of the fp64 definition (FP32 butterflies: 7 rounded add levels
 * plus the rounded scale multiply, so e = 8·2^-24·128^-1/2·Σ|x|, ×1.001). */
static void test_hadamard_vs_matrix(void) {
    test_rng r;
    test_rng_seed(&r, 6);
    int outside = 0, exact = 0;
    for (int t = 0; t < 200; t++) {
        float x[128], y[128];
        test_fill_bf16(&r, x, 128, t % 2 ? 1.0 : 1e-3);
        memcpy(y, x, sizeof x);
        dsv4_cpu_hadamard128(y);
        double sa = 0;
        for (int j = 0; j < 128; j++) sa += fabs(x[j]);
        double e = 8 * 0x1p-24 * sa / sqrt(128.0) * 1.001;
        for (int i = 0; i < 128; i++) {
            double ref = 0;
            for (int j = 0; j < 128; j++) ref += (popcount((unsigned)(i & j)) & 1) ? -x[j] : x[j];
            ref /= sqrt(128.0);
            float lo = dsv4_bf16_round(nextafterf((float)(ref - e), -INFINITY));
            float hi = dsv4_bf16_round(nextafterf((float)(ref + e), INFINITY));
            outside += !(y[i] >= lo && y[i] <= hi);
            exact += y[i] == dsv4_bf16_round((float)ref);
        }
    }
    printf("    hadamard: %d of 25600 outside the bracket, %.2f%% equal bf16(fp64 ref)\n", outside, exact / 256.0);
    CHECK(outside == 0, "%d outputs outside bracket", outside);
}

static void test_hadamard_orthonormal(void) {
    /* Columns H·e_j: entries ±bf16(128^-1/2); distinct columns exactly orthogonal, norm² = 128·c². */
    static float col[128][128];
    for (int j = 0; j < 128; j++) {
        for (int i = 0; i < 128; i++) col[j][i] = i == j ? 1.0f : 0.0f;
        dsv4_cpu_hadamard128(col[j]);
    }
    double c = dsv4_bf16_round(0.08838834764831845f);
    int bad = 0;
    for (int a = 0; a < 128; a++)
        for (int b = 0; b < 128; b++) {
            double d = 0;
            for (int i = 0; i < 128; i++) d += (double)col[a][i] * col[b][i];
            if (d != (a == b ? 128 * c * c : 0.0)) bad++;
        }
    CHECK(bad == 0, "%d non-orthonormal pairs", bad);
    CHECK(fabs(128 * c * c - 1) < 0x1p-7, "norm² %.6f", 128 * c * c);
    /* symmetric: H[i][j] == H[j][i] */
    int asym = 0;
    for (int a = 0; a < 128; a++)
        for (int b = 0; b < 128; b++) asym += col[a][b] != col[b][a];
    CHECK(asym == 0, "not symmetric");
    /* involution up to rounding: H(H(x)) ≈ x, relative L2 below a few bf16 half-ulps */
    test_rng r;
    test_rng_seed(&r, 7);
    float x[128], y[128];
    test_fill_bf16(&r, x, 128, 1.0);
    memcpy(y, x, sizeof x);
    dsv4_cpu_hadamard128(y);
    dsv4_cpu_hadamard128(y);
    double xd[128];
    for (int i = 0; i < 128; i++) xd[i] = x[i];
    double rel = test_rel_l2(y, xd, 128);
    CHECK(rel < 3 * 0x1p-9, "H(H(x)) rel err %.3g", rel);
}

int main(void) {
    RUN(test_act_quant_random);
    RUN(test_act_quant_scale_edges);
    RUN(test_act_quant_floor);
    RUN(test_fake_quant_fp8_block64);
    RUN(test_fake_quant_fp4_ties_and_random);
    RUN(test_hadamard_vs_matrix);
    RUN(test_hadamard_orthonormal);
    return test_finish();
}
