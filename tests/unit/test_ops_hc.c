/* test_ops_hc.c — hyper-connection ops (spec §3.9, §4.2, §4.9) against fp64 references written here:
 * the Sinkhorn split, its near doubly-stochastic result, hc_pre, hc_post and hc_head at the Flash shape
 * (hc = 4, D = 4096) and a small one. Tolerances: docs/NUMERICS.md, "CPU ops (non-GEMM)". */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu/ops.h"
#include "core/numfmt.h"
#include "test_util.h"

static double ulp_bf16(double v) {
    v = fabs(v);
    if (v < 0x1p-126) return 0x1p-133;
    return ldexp(1.0, ilogb(v) - 7);
}
static double sigm(double z) { return 1.0 / (1.0 + exp(-z)); }

/* fp64 Sinkhorn, written from the spec text (§3.9). */
static void ref_sinkhorn(const double *mix, const float *scale, const float *base, int hc, int iters, double eps,
                         double *pre, double *post, double *C) {
    for (int j = 0; j < hc; j++) pre[j] = sigm(mix[j] * scale[0] + base[j]) + eps;
    for (int j = 0; j < hc; j++) post[j] = 2 * sigm(mix[hc + j] * scale[1] + base[hc + j]);
    for (int j = 0; j < hc; j++) {
        double m = -INFINITY, z = 0;
        for (int k = 0; k < hc; k++) {
            C[j * hc + k] = mix[2 * hc + j * hc + k] * scale[2] + base[2 * hc + j * hc + k];
            m = fmax(m, C[j * hc + k]);
        }
        for (int k = 0; k < hc; k++) z += exp(C[j * hc + k] - m);
        for (int k = 0; k < hc; k++) C[j * hc + k] = exp(C[j * hc + k] - m) / z + eps;
    }
    for (int it = 0; it < iters; it++) {
        if (it)
            for (int j = 0; j < hc; j++) {
                double s = 0;
                for (int k = 0; k < hc; k++) s += C[j * hc + k];
                for (int k = 0; k < hc; k++) C[j * hc + k] /= s + eps;
            }
        for (int k = 0; k < hc; k++) {
            double s = 0;
            for (int j = 0; j < hc; j++) s += C[j * hc + k];
            for (int j = 0; j < hc; j++) C[j * hc + k] /= s + eps;
        }
    }
}

static void rand_params(test_rng *r, int n_mix, float *scale, float *base) {
    for (int i = 0; i < 3; i++) scale[i] = (float)(0.5 + test_rng_uniform(r));
    for (int i = 0; i < n_mix; i++) base[i] = (float)test_rng_normal(r);
}

static void test_sinkhorn(void) {
    test_rng r;
    test_rng_seed(&r, 1);
    double worst = 0, worst_row = 0, worst_row_wide = 0, worst_col = 0;
    for (int hc = 2; hc <= 8; hc += 2)
        for (int trial = 0; trial < 200; trial++) {
            int n_mix = (2 + hc) * hc;
            float mix[80], scale[3], base[80], pre[8], post[8], comb[64];
            double mixd[80], rp[8], rq[8], rc[64];
            double sigma = trial % 3 == 0 ? 4.0 : 1.0;
            for (int i = 0; i < n_mix; i++) mixd[i] = mix[i] = (float)(sigma * test_rng_normal(&r));
            rand_params(&r, n_mix, scale, base);
            dsv4_cpu_hc_sinkhorn(mix, scale, base, hc, 20, 1e-6f, pre, post, comb);
            ref_sinkhorn(mixd, scale, base, hc, 20, (double)1e-6f, rp, rq, rc);
            for (int i = 0; i < hc; i++) {
                worst = fmax(worst, fabs(pre[i] - rp[i]) / rp[i]);
                worst = fmax(worst, fabs(post[i] - rq[i]) / rq[i]);
            }
            for (int i = 0; i < hc * hc; i++) worst = fmax(worst, fabs(comb[i] - rc[i]) / rc[i]);
            for (int j = 0; j < hc; j++) {
                double rs = 0, cs = 0;
                for (int k = 0; k < hc; k++) rs += comb[j * hc + k], cs += comb[k * hc + j];
                if (sigma > 1) worst_row_wide = fmax(worst_row_wide, fabs(rs - 1));
                else worst_row = fmax(worst_row, fabs(rs - 1));
                worst_col = fmax(worst_col, fabs(cs - 1));
            }
        }
    /* FP32 through 20 iterations of (sum, divide): each iteration ≈ hc + 2 roundings, contracting. */
    CHECK(worst <= 2e-5, "vs fp64: max rel err %.3g", worst);
    CHECK(worst_col <= 1e-5, "column sums: max |s-1| %.3g", worst_col);
    /* Rows converge geometrically at a rate set by the spread of the logits: tight for N(0,1) mixing
     * logits (0.014 measured for hc ≤ 8), loose when they span e^±12 (σ = 4), where 20 iterations are not enough — that is the
     * algorithm (the fp64 reference agrees to 2e-5), not a defect. */
    CHECK(worst_row <= 0.05, "row sums: max |s-1| %.3g", worst_row);
    CHECK(worst_row_wide <= 0.2, "row sums (sigma 4): max |s-1| %.3g", worst_row_wide);
    printf("  sinkhorn: max rel err vs fp64 %.3g; |col sum-1| %.3g, |row sum-1| %.3g (sigma 1) %.3g (sigma 4)\n",
           worst, worst_col, worst_row, worst_row_wide);
}

/* fp64 hc_pre / hc_head share: mix = (fn·v)·rsqrt(mean v² + eps). */
static void ref_mix(const float *X, int n, const float *fn, int n_mix, double *mix) {
    double ss = 0;
    for (int i = 0; i < n; i++) ss += (double)X[i] * X[i];
    double rs = 1 / sqrt(ss / n + (double)1e-6f);
    for (int m = 0; m < n_mix; m++) {
        double a = 0;
        for (int i = 0; i < n; i++) a += (double)fn[(size_t)m * n + i] * X[i];
        mix[m] = a * rs;
    }
}

static void check_hc_pre(int hc, int D, uint64_t seed, double *w_x, double *w_pc) {
    test_rng r;
    test_rng_seed(&r, seed);
    int n = hc * D, n_mix = (2 + hc) * hc;
    float *X = malloc(sizeof(float) * n), *fn = malloc(sizeof(float) * n * n_mix), *x = malloc(sizeof(float) * D);
    float scale[3], base[80], post[8], comb[64];
    test_fill_bf16(&r, X, n, 1.0);
    for (int i = 0; i < n * n_mix; i++) fn[i] = (float)(test_rng_normal(&r) / sqrt(n) * 3);
    rand_params(&r, n_mix, scale, base);
    dsv4_cpu_hc_pre(X, hc, D, fn, base, scale, 20, 1e-6f, 1e-6f, x, post, comb);
    double mix[80], rp[8], rq[8], rc[64];
    ref_mix(X, n, fn, n_mix, mix);
    ref_sinkhorn(mix, scale, base, hc, 20, (double)1e-6f, rp, rq, rc);
    for (int i = 0; i < hc; i++) *w_pc = fmax(*w_pc, fabs(post[i] - rq[i]) / rq[i]);
    for (int i = 0; i < hc * hc; i++) *w_pc = fmax(*w_pc, fabs(comb[i] - rc[i]) / rc[i]);
    for (int d = 0; d < D; d++) {
        double y = 0, a = 0;
        for (int h = 0; h < hc; h++) y += rp[h] * X[(size_t)h * D + d], a += rp[h] * fabs(X[(size_t)h * D + d]);
        CHECK(x[d] == dsv4_bf16_round(x[d]), "x not bf16");
        /* 0.5 ulp final rounding; pre carries ≈1e-6 relative (mix over hc·D in FP32 then sigmoid), the
         * FP32 weighted sum ≤ (hc+1)·2^-24·Σ|pre·X|: slack 4e-6·Σ|pre·X|. */
        double e = (fabs(x[d] - y) - 4e-6 * a) / ulp_bf16(y);
        *w_x = fmax(*w_x, e);
    }
    free(X); free(fn); free(x);
}

static void test_hc_pre(void) {
    double w_x = 0, w_pc = 0;
    check_hc_pre(4, 4096, 2, &w_x, &w_pc);
    check_hc_pre(4, 256, 3, &w_x, &w_pc);
    check_hc_pre(2, 128, 4, &w_x, &w_pc);
    CHECK(w_x <= 0.5, "x: %.4f ulp beyond slack", w_x);
    CHECK(w_pc <= 2e-5, "post/comb rel err %.3g", w_pc);
    printf("  hc_pre: x max %.4f ulp (beyond slack), post/comb rel %.3g\n", w_x, w_pc);
}

static void test_hc_post(void) {
    int hc = 4, D = 4096;
    test_rng r;
    test_rng_seed(&r, 5);
    float *a = malloc(sizeof(float) * D), *res = malloc(sizeof(float) * hc * D), *out = malloc(sizeof(float) * hc * D);
    float post[4], comb[16];
    test_fill_bf16(&r, a, D, 1.0);
    test_fill_bf16(&r, res, (size_t)hc * D, 3.0);
    for (int i = 0; i < 4; i++) post[i] = (float)(2 * test_rng_uniform(&r));
    for (int i = 0; i < 16; i++) comb[i] = (float)test_rng_uniform(&r) * 0.5f;
    dsv4_cpu_hc_post(a, res, post, comb, hc, D, out);
    double worst = 0;
    for (int k = 0; k < hc; k++)
        for (int d = 0; d < D; d++) {
            double y = (double)post[k] * a[d], m = fabs(y);
            for (int j = 0; j < hc; j++) {
                y += (double)comb[j * hc + k] * res[j * D + d];
                m += fabs((double)comb[j * hc + k] * res[j * D + d]);
            }
            /* 0.5 ulp + FP32 products/sums: (hc+2)·2^-24·Σ|terms|. */
            double e = (fabs(out[k * D + d] - y) - 6 * 0x1p-24 * m) / ulp_bf16(y);
            worst = fmax(worst, e);
        }
    CHECK(worst <= 0.5, "hc_post %.4f ulp beyond slack", worst);
    printf("  hc_post: max %.4f ulp beyond FP32 slack\n", worst);
    free(a); free(res); free(out);
}

static void test_hc_head(void) {
    int hc = 4, D = 4096, n = hc * D;
    test_rng r;
    test_rng_seed(&r, 6);
    float *X = malloc(sizeof(float) * n), *fn = malloc(sizeof(float) * n * hc), *y = malloc(sizeof(float) * D);
    float scale[1] = {0.7f}, base[4];
    test_fill_bf16(&r, X, n, 2.0);
    for (int i = 0; i < n * hc; i++) fn[i] = (float)(test_rng_normal(&r) / sqrt(n) * 3);
    for (int i = 0; i < 4; i++) base[i] = (float)test_rng_normal(&r);
    dsv4_cpu_hc_head(X, hc, D, fn, base, scale, 1e-6f, 1e-6f, y);
    double mix[4], pre[4], worst = 0;
    ref_mix(X, n, fn, hc, mix);
    for (int h = 0; h < hc; h++) pre[h] = sigm(mix[h] * scale[0] + base[h]) + (double)1e-6f;
    for (int d = 0; d < D; d++) {
        double v = 0, a = 0;
        for (int h = 0; h < hc; h++) v += pre[h] * X[h * D + d], a += fabs(pre[h] * X[h * D + d]);
        worst = fmax(worst, (fabs(y[d] - v) - 4e-6 * a) / ulp_bf16(v));
    }
    CHECK(worst <= 0.5, "hc_head %.4f ulp beyond slack", worst);
    printf("  hc_head: max %.4f ulp beyond slack\n", worst);
    free(X); free(fn); free(y);
}

int main(void) {
    RUN(test_sinkhorn);
    RUN(test_hc_pre);
    RUN(test_hc_post);
    RUN(test_hc_head);
    return test_finish();
}
