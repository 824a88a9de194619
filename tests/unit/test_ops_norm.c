/* test_ops_norm.c — RMSNorm (weighted / unweighted), the BF16-arithmetic per-head q norm, RoPE/YaRN init
 * (spec §3.7 check values), RoPE apply / inverse, and the embedding lookup, each against an fp64
 * reference written here. Tolerances and their reasons: docs/NUMERICS.md, "CPU ops (non-GEMM)". */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu/ops.h"
#include "core/numfmt.h"
#include "test_util.h"

/* One bf16 ulp at magnitude |v| (normal range). */
static double ulp_bf16(double v) {
    v = fabs(v);
    if (v < 0x1p-126) return 0x1p-133;
    return ldexp(1.0, ilogb(v) - 7);
}
static double bf16d(double v) { return (double)dsv4_bf16_round((float)v); }

/* ---- RMSNorm ----------------------------------------------------------------------------------- */
static void check_rmsnorm(int n, double sigma, int weighted, uint64_t seed) {
    test_rng r;
    test_rng_seed(&r, seed);
    float *x = malloc(sizeof(float) * n), *y = malloc(sizeof(float) * n), *wf = malloc(sizeof(float) * n);
    uint16_t *w = malloc(sizeof(uint16_t) * n);
    test_fill_bf16(&r, x, n, sigma);
    test_fill_bf16(&r, wf, n, 0.5);
    for (int i = 0; i < n; i++) w[i] = dsv4_f32_to_bf16(wf[i] + (float)(1.0));
    dsv4_cpu_rmsnorm(x, weighted ? w : NULL, n, 1e-6f, y);
    double ss = 0;
    for (int i = 0; i < n; i++) ss += (double)x[i] * x[i];
    double rs = 1.0 / sqrt(ss / n + 1e-6), worst = 0;
    for (int i = 0; i < n; i++) {
        double ref = (double)x[i] * rs * (weighted ? (double)dsv4_bf16_to_f32(w[i]) : 1.0);
        CHECK(y[i] == dsv4_bf16_round(y[i]), "output not bf16");
        double e = fabs(y[i] - ref) / ulp_bf16(ref);
        if (e > worst) worst = e;
    }
    /* One final bf16 rounding (0.5 ulp) + FP32 steps (≈4·2^-24 relative ≈ 2^-14 ulp). */
    CHECK(worst <= 0.5 + 1.0 / 64, "n=%d weighted=%d: max err %.4f bf16 ulp", n, weighted, worst);
    printf("  rmsnorm n=%d sigma=%g w=%d: max err %.4f ulp\n", n, sigma, weighted, worst);
    /* Aliasing x == y gives the same result. */
    float *x2 = malloc(sizeof(float) * n);
    memcpy(x2, x, sizeof(float) * n);
    dsv4_cpu_rmsnorm(x2, weighted ? w : NULL, n, 1e-6f, x2);
    CHECK(memcmp(x2, y, sizeof(float) * n) == 0, "in-place differs");
    free(x); free(y); free(wf); free(w); free(x2);
}

static void test_rmsnorm(void) {
    int ns[] = {64, 128, 512, 1024, 4096, 7168};
    for (int i = 0; i < 6; i++) {
        check_rmsnorm(ns[i], 1.0, 1, 10 + i);
        check_rmsnorm(ns[i], 0.02, 0, 20 + i);
        check_rmsnorm(ns[i], 30.0, 1, 30 + i);
    }
}

/* ---- q norm in BF16 arithmetic ----------------------------------------------------------------- */
/* Two references: (a) the official rounding points replicated in fp64 (tight: 1 ulp, counts exact
 * matches); (b) pure fp64 with the bound from the number of bf16 roundings. */
static void test_qnorm_bf16(void) {
    const int H = 64, n = 512;
    test_rng r;
    test_rng_seed(&r, 7);
    float *q = malloc(sizeof(float) * H * n), *x = malloc(sizeof(float) * H * n);
    long exact = 0, total = 0;
    double worst_rep = 0, worst_pure = 0;
    for (int pass = 0; pass < 3; pass++) {
        test_fill_bf16(&r, q, (size_t)H * n, pass == 0 ? 1.0 : pass == 1 ? 0.05 : 8.0);
        memcpy(x, q, sizeof(float) * H * n);
        for (int h = 0; h < H; h++) dsv4_cpu_rmsnorm_bf16_arith(x + h * n, n, 1e-6f);
        for (int h = 0; h < H; h++) {
            const float *qh = q + h * n;
            double ss = 0, ssx = 0;
            for (int i = 0; i < n; i++) {
                ss += bf16d((double)qh[i] * qh[i]);
                ssx += (double)qh[i] * qh[i];
            }
            double rr = bf16d(1.0 / sqrt(bf16d(bf16d(ss / n) + 1e-6)));
            double rp = 1.0 / sqrt(ssx / n + 1e-6);
            for (int i = 0; i < n; i++) {
                double rep = bf16d(qh[i] * rr), pure = qh[i] * rp, got = x[h * n + i];
                total++;
                exact += got == rep;
                double e1 = fabs(got - rep) / ulp_bf16(rep);
                /* Pure bound, with u = 2^-8 the bf16 unit roundoff: squares, mean, +eps roundings give the
                 * mean a relative error ≤ 3u, halved by the square root, + u for the rsqrt rounding = 2.5u;
                 * the product rounding adds u: 3.5u (+ second-order terms and FP32: 3.6u). */
                double e2 = fabs(got - pure) / (fabs(pure) * 3.6 * 0x1p-8);
                if (e1 > worst_rep) worst_rep = e1;
                if (e2 > worst_pure) worst_pure = e2;
            }
        }
    }
    CHECK(worst_rep <= 1.0, "replicated: max err %.3f ulp", worst_rep);
    CHECK(worst_pure <= 1.0, "pure fp64: max err ratio %.3f", worst_pure);
    CHECK(exact >= total * 0.999, "exact matches %ld / %ld", exact, total);
    printf("  qnorm bf16: %ld/%ld exact vs replicated, max %.3f ulp; vs pure fp64 %.3f of bound\n", exact, total,
           worst_rep, worst_pure);
    free(q); free(x);
}

/* ---- RoPE init --------------------------------------------------------------------------------- */
static void check_val(float got, double want, int sig_digits, const char *what) {
    /* want is printed with sig_digits significant digits (from an exact computation): allow half a unit in
     * the last digit plus 2 FP32 ulps (the official table is FP32: e.g. ω'_16 = 0.002265625 exactly in
     * fp64 — printed 0.00226563 — is 0.00226562493 in FP32). */
    double unit = pow(10.0, floor(log10(fabs(want))) - (sig_digits - 1));
    CHECK(fabs(got - want) <= 0.5 * unit + 0x1p-22 * fabs(want), "%s: %.9g vs %.9g", what, got, want);
}

static void test_rope_init_check_values(void) {
    dsv4_rope y, p;
    dsv4_rope_init(&y, 64, 160000.0, 1, 16.0, 65536.0, 32.0, 1.0);
    dsv4_rope_init(&p, 64, 10000.0, 0, 16.0, 65536.0, 32.0, 1.0);
    CHECK(y.rope_dim == 64, "dim");
    CHECK(y.inv_freq[0] == 1.0f, "w0 %g", y.inv_freq[0]);
    check_val(y.inv_freq[1], 0.687656, 6, "yarn w1");
    check_val(y.inv_freq[15], 0.0036355, 5, "yarn w15");
    check_val(y.inv_freq[16], 0.00226563, 6, "yarn w16");
    check_val(y.inv_freq[20], 2.96978e-4, 6, "yarn w20");
    check_val(y.inv_freq[24], 1.95312e-5, 6, "yarn w24");
    check_val(y.inv_freq[25], 5.37231e-6, 6, "yarn w25");
    check_val(y.inv_freq[31], 5.68053e-7, 6, "yarn w31");
    check_val(p.inv_freq[1], 0.749894, 6, "plain w1");
    check_val(p.inv_freq[31], 1.33352e-4, 6, "plain w31");
    /* Structure: p ≤ 15 unchanged, p ≥ 25 divided by exactly 16 (FP32: /16 exact, ·(1−0)=exact). */
    dsv4_rope b;
    dsv4_rope_init(&b, 64, 160000.0, 0, 16.0, 65536.0, 32.0, 1.0);
    for (int i = 0; i <= 15; i++) CHECK(y.inv_freq[i] == b.inv_freq[i], "p=%d unchanged", i);
    for (int i = 25; i < 32; i++) CHECK(y.inv_freq[i] == b.inv_freq[i] / 16.0f, "p=%d /16", i);
    for (int i = 0; i < 32; i++) {
        double w = pow(10000.0, -2.0 * i / 64);
        CHECK(fabs(p.inv_freq[i] - w) <= 4e-7 * w, "plain p=%d %.9g vs %.9g", i, p.inv_freq[i], w);
    }
}

/* ---- RoPE apply -------------------------------------------------------------------------------- */
static void test_rope_apply_and_inverse(void) {
    dsv4_rope ry, rp;
    dsv4_rope_init(&ry, 64, 160000.0, 1, 16.0, 65536.0, 32.0, 1.0);
    dsv4_rope_init(&rp, 64, 10000.0, 0, 16.0, 65536.0, 32.0, 1.0);
    long poss[] = {0, 1, 7, 127, 128, 1000, 65535, 65536, 300001, 1048575};
    test_rng r;
    test_rng_seed(&r, 99);
    double worst = 0, worst_inv = 0;
    float x[64], y[64], z[64];
    for (int t = 0; t < 2; t++) {
        const dsv4_rope *ro = t ? &ry : &rp;
        for (int pi = 0; pi < 10; pi++) {
            for (int head = 0; head < 64; head++) {   /* 64 heads, as q at Flash shape */
                test_fill_bf16(&r, x, 64, head % 2 ? 1.0 : 20.0);
                memcpy(y, x, sizeof x);
                dsv4_cpu_rope(y, poss[pi], ro, 0);
                for (int p = 0; p < 32; p++) {
                    /* The official angle is an FP32 product: replicated. cos/sin/rotation in fp64. */
                    double ang = (double)((float)poss[pi] * ro->inv_freq[p]);
                    double c = cos(ang), s = sin(ang), a = x[2 * p], b = x[2 * p + 1];
                    double ra = a * c - b * s, rb = a * s + b * c;
                    /* 0.5 ulp final rounding; FP32 cos/sin/products ≤ 4·2^-24·(|a|+|b|). */
                    double slack = 4 * 0x1p-24 * (fabs(a) + fabs(b));
                    double e1 = (fabs(y[2 * p] - ra) - slack) / ulp_bf16(ra);
                    double e2 = (fabs(y[2 * p + 1] - rb) - slack) / ulp_bf16(rb);
                    if (e1 > worst) worst = e1;
                    if (e2 > worst) worst = e2;
                }
                memcpy(z, y, sizeof y);
                dsv4_cpu_rope(z, poss[pi], ro, 1);
                for (int p = 0; p < 32; p++) {
                    /* Two bf16 roundings: the rope output error vector has norm ≤ u·ρ (u = 2^-8, each
                     * component ≤ u·|component|), rotated back (orthogonal), then 0.5 ulp of the result. */
                    double rho = hypot(x[2 * p], x[2 * p + 1]);
                    for (int c = 0; c < 2; c++) {
                        double d = fabs(z[2 * p + c] - x[2 * p + c]);
                        double tol = 0x1p-8 * rho + 0.5 * ulp_bf16(x[2 * p + c]) + 8 * 0x1p-24 * rho;
                        if (d / tol > worst_inv) worst_inv = d / tol;
                    }
                }
            }
        }
    }
    CHECK(worst <= 0.5, "rope: max err %.4f ulp beyond the FP32 slack", worst);
    CHECK(worst_inv <= 1.0, "inverse(rope(x)): %.3f of bound", worst_inv);
    printf("  rope: max %.4f ulp; inverse(rope(x)) max %.3f of bound\n", worst, worst_inv);
    /* pos 0 is the identity. */
    test_fill_bf16(&r, x, 64, 1.0);
    memcpy(y, x, sizeof x);
    dsv4_cpu_rope(y, 0, &ry, 0);
    CHECK(memcmp(x, y, sizeof x) == 0, "pos 0 not identity");
}

static void test_embed(void) {
    enum { V = 50, D = 4096 };
    uint16_t *t = malloc(sizeof(uint16_t) * V * D);
    test_rng r;
    test_rng_seed(&r, 3);
    for (int i = 0; i < V * D; i++) t[i] = (uint16_t)test_rng_u64(&r);
    float out[D];
    dsv4_cpu_embed(t, D, 37, out);
    int bad = 0;
    for (int i = 0; i < D; i++) {
        uint32_t u;
        memcpy(&u, &out[i], 4);
        bad += u != ((uint32_t)t[37 * D + i] << 16);
    }
    CHECK(bad == 0, "%d wrong", bad);
    free(t);
}

int main(void) {
    RUN(test_rmsnorm);
    RUN(test_qnorm_bf16);
    RUN(test_rope_init_check_values);
    RUN(test_rope_apply_and_inverse);
    RUN(test_embed);
    return test_finish();
}
