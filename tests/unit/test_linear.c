/* test_linear.c — the CPU linears (linear.h; spec §3.6) against a plain fp64 implementation.
 *
 * The fp64 reference computes the exact math on the same quantized operands (act_quant codes × act scales,
 * decoded weights × weight scales, all exact in fp64), so the only differences allowed are the FP32
 * accumulation of the kernel and its final BF16 rounding. Per output element the tolerance is
 *     tol = r_out·|ref| + (1 + r_out)·(d·2^-24 + K·2^-53)·Σ|terms| (·1.0001 slack)
 * with r_out = 2^-8 for BF16 outputs (RNE to 8 significant bits) and 0 for FP32 outputs, and d the longest
 * chain of FP32 roundings a term passes through in the documented order (linear.c header): ceil(L/8) lane
 * adds + 3 fold adds + number of chunks (+1 for the rounded FP32 product in the FP32-weight linear).
 * For BF16 outputs a second, tight check ("bracket"): the kernel returns RNE_bf16(C) with |C - ref| <= e_acc
 * (the accumulation part of tol), and RNE is monotone, so got must lie in [bf16(ref - e_acc), bf16(ref + e_acc)]:
 * equal to bf16(ref) unless ref is within e_acc of a bf16 rounding boundary.
 * Justification and numbers: docs/NUMERICS.md, "Linear layers".
 * Also: bitwise determinism for pools of 1/2/4 threads, row results independent of M, and two deliberately
 * wrong variants that must fail the same tolerance (the test discriminates). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu/linear.h"
#include "backend/cpu/quant.h"
#include "core/numfmt.h"
#include "test_util.h"

static dsv4_threadpool *pools[3]; /* 1, 2, 4 threads */

typedef enum { K_FP8, K_FP4, K_BF16, K_BF16_F32OUT, K_F32 } kind_t;
static const char *kind_name[] = {"fp8", "fp4", "bf16", "bf16->f32", "f32"};

/* One linear's operands, generated from a seed. */
typedef struct {
    kind_t kind;
    int M, K, N;
    float *x;          /* [M, K] bf16-exact, never zero */
    uint8_t *w8;       /* fp8: [N, K]; fp4: [N, K/2] */
    uint8_t *ws;       /* fp8: [ceil(N/128), K/128]; fp4: [N, K/32] */
    uint16_t *wb;      /* bf16: [N, K] */
    float *wf;         /* f32: [N, K] */
} problem;

static void problem_make(problem *p, kind_t kind, int M, int K, int N, uint64_t seed) {
    test_rng r;
    test_rng_seed(&r, seed);
    memset(p, 0, sizeof *p);
    p->kind = kind, p->M = M, p->K = K, p->N = N;
    p->x = malloc(sizeof(float) * (size_t)M * K);
    test_fill_bf16(&r, p->x, (size_t)M * K, 1.0);
    size_t nk = (size_t)N * K;
    switch (kind) {
    case K_FP8: {
        p->w8 = malloc(nk);
        for (size_t i = 0; i < nk; i++) p->w8[i] = dsv4_f32_to_e4m3((float)(64.0 * test_rng_normal(&r)));
        size_t ns = (size_t)((N + 127) / 128) * (K / 128);
        p->ws = malloc(ns);
        for (size_t i = 0; i < ns; i++) p->ws[i] = (uint8_t)(127 - 12 + test_rng_u64(&r) % 5);
    } break;
    case K_FP4: {
        p->w8 = malloc(nk / 2);
        for (size_t i = 0; i < nk / 2; i++) p->w8[i] = (uint8_t)test_rng_u64(&r);
        size_t ns = (size_t)N * (K / 32);
        p->ws = malloc(ns);
        for (size_t i = 0; i < ns; i++) p->ws[i] = (uint8_t)(127 - 6 + test_rng_u64(&r) % 5);
    } break;
    case K_BF16:
    case K_BF16_F32OUT: {
        float *t = malloc(sizeof(float) * nk);
        test_fill_bf16(&r, t, nk, 0.05);
        p->wb = malloc(sizeof(uint16_t) * nk);
        for (size_t i = 0; i < nk; i++) p->wb[i] = dsv4_f32_to_bf16(t[i]);
        free(t);
    } break;
    case K_F32:
        p->wf = malloc(sizeof(float) * nk);
        for (size_t i = 0; i < nk; i++) p->wf[i] = (float)(0.05 * test_rng_normal(&r)); /* not bf16-exact */
        break;
    }
}

static void problem_free(problem *p) { free(p->x), free(p->w8), free(p->ws), free(p->wb), free(p->wf); }

static void run_kernel(dsv4_threadpool *pool, const problem *p, const float *x, int M, float *y) {
    switch (p->kind) {
    case K_FP8: dsv4_cpu_linear_fp8(pool, x, M, p->K, p->w8, p->ws, p->N, y); break;
    case K_FP4: dsv4_cpu_linear_fp4(pool, x, M, p->K, p->w8, p->ws, p->N, y); break;
    case K_BF16: dsv4_cpu_linear_bf16(pool, x, M, p->K, p->wb, p->N, y, DSV4_OUT_BF16); break;
    case K_BF16_F32OUT: dsv4_cpu_linear_bf16(pool, x, M, p->K, p->wb, p->N, y, DSV4_OUT_F32); break;
    case K_F32: dsv4_cpu_linear_f32(pool, x, M, p->K, p->wf, p->N, y); break;
    }
}

static double e8m0_d(uint8_t c) { return ldexp(1.0, (int)c - 127); }

/* Operands as the kernel sees them, in fp64: xd [M, K] (dequantized act codes, or x itself), and row n of
 * the dequantized weights into wrow [K]. */
static void ref_act(const problem *p, double *xd) {
    int M = p->M, K = p->K;
    if (p->kind == K_FP8 || p->kind == K_FP4) {
        uint8_t *q = malloc((size_t)K), *s = malloc((size_t)K / 128);
        for (int m = 0; m < M; m++) {
            dsv4_cpu_act_quant_fp8(p->x + (size_t)m * K, (size_t)K, 128, q, s);
            for (int k = 0; k < K; k++) xd[(size_t)m * K + k] = (double)dsv4_e4m3_to_f32(q[k]) * e8m0_d(s[k / 128]);
        }
        free(q), free(s);
    } else {
        for (size_t i = 0; i < (size_t)M * K; i++) xd[i] = p->x[i];
    }
}

static void ref_wrow(const problem *p, int n, double *wrow) {
    int K = p->K;
    for (int k = 0; k < K; k++) {
        switch (p->kind) {
        case K_FP8:
            wrow[k] = (double)dsv4_e4m3_to_f32(p->w8[(size_t)n * K + k]) * e8m0_d(p->ws[(size_t)(n / 128) * (K / 128) + k / 128]);
            break;
        case K_FP4:
            wrow[k] = (double)dsv4_fp4_unpack(p->w8 + (size_t)n * (K / 2), (size_t)k) * e8m0_d(p->ws[(size_t)n * (K / 32) + k / 32]);
            break;
        case K_BF16:
        case K_BF16_F32OUT: wrow[k] = dsv4_bf16_to_f32(p->wb[(size_t)n * K + k]); break;
        case K_F32: wrow[k] = p->wf[(size_t)n * K + k]; break;
        }
    }
}

/* fp64 reference ref[M, N] and per-element tolerance tol[M, N] (see file header). */
static void reference(const problem *p, double *ref, double *tol, double *eacc) {
    int M = p->M, K = p->K, N = p->N;
    double *xd = malloc(sizeof(double) * (size_t)M * K), *wrow = malloc(sizeof(double) * (size_t)K);
    ref_act(p, xd);
    int L, nchunks, extra = 0;
    if (p->kind == K_FP4) L = 32, nchunks = K / 32;
    else L = K < 128 ? K : 128, nchunks = (K + 127) / 128;
    if (p->kind == K_F32) extra = 1;
    double d = (L + 7) / 8 + 3 + nchunks + extra;
    double r_out = (p->kind == K_BF16_F32OUT || p->kind == K_F32) ? 0.0 : 0x1p-8;
    double gamma = (d * 0x1p-24 + K * 0x1p-53) * 1.0001;
    for (int n = 0; n < N; n++) {
        ref_wrow(p, n, wrow);
        for (int m = 0; m < M; m++) {
            const double *xr = xd + (size_t)m * K;
            double s = 0, sa = 0;
            for (int k = 0; k < K; k++) {
                double t = xr[k] * wrow[k];
                s += t;
                sa += fabs(t);
            }
            ref[(size_t)m * N + n] = s;
            tol[(size_t)m * N + n] = r_out * fabs(s) + (1 + r_out) * gamma * sa;
            eacc[(size_t)m * N + n] = gamma * sa;
        }
    }
    free(xd), free(wrow);
}

/* max |got-ref|/tol; also counts outputs equal to the correctly rounded reference (bf16 or f32) and, for
 * BF16 outputs, outputs outside the bracket [bf16(ref - e_acc), bf16(ref + e_acc)] (widened by one FP32 ulp
 * each side before the bf16 rounding, to absorb the double->float step). */
static double tol_ratio(const problem *p, const float *got, const double *ref, const double *tol,
                        const double *eacc, int M, double *exact_frac, size_t *bracket_fail) {
    double worst = 0;
    size_t exact = 0, outside = 0, n = (size_t)M * p->N;
    int bf = !(p->kind == K_BF16_F32OUT || p->kind == K_F32);
    for (size_t i = 0; i < n; i++) {
        double r = fabs((double)got[i] - ref[i]) / tol[i];
        if (!(r <= worst)) worst = r;
        float cr = bf ? dsv4_bf16_round((float)ref[i]) : (float)ref[i];
        exact += got[i] == cr;
        if (bf) {
            float lo = dsv4_bf16_round(nextafterf((float)(ref[i] - eacc[i]), -INFINITY));
            float hi = dsv4_bf16_round(nextafterf((float)(ref[i] + eacc[i]), INFINITY));
            outside += !(got[i] >= lo && got[i] <= hi);
        }
    }
    if (exact_frac) *exact_frac = (double)exact / (double)n;
    if (bracket_fail) *bracket_fail = outside;
    return worst;
}

/* Full check of one shape: accuracy vs fp64, thread-count determinism, M-independence. */
static void check_shape(kind_t kind, int M, int K, int N, uint64_t seed, int all_pools) {
    problem p;
    problem_make(&p, kind, M, K, N, seed);
    size_t mn = (size_t)M * N;
    float *y[3] = {malloc(sizeof(float) * mn), NULL, NULL};
    double *ref = malloc(sizeof(double) * mn), *tol = malloc(sizeof(double) * mn), *eacc = malloc(sizeof(double) * mn);
    run_kernel(pools[0], &p, p.x, M, y[0]);
    reference(&p, ref, tol, eacc);
    double exact;
    size_t outside;
    double ratio = tol_ratio(&p, y[0], ref, tol, eacc, M, &exact, &outside);
    double rel = test_rel_l2(y[0], ref, mn);
    printf("    %-9s M=%d K=%-5d N=%-5d  max err/tol %.3f  rel_l2 %.2e  exact-rounded %.2f%%  outside bracket %zu\n",
           kind_name[kind], M, K, N, ratio, rel, 100 * exact, outside);
    CHECK(ratio <= 1.0, "%s M=%d K=%d N=%d: err/tol %.3f", kind_name[kind], M, K, N, ratio);
    CHECK(outside == 0, "%s M=%d K=%d N=%d: %zu outputs outside the bf16 bracket", kind_name[kind], M, K, N, outside);

    /* Thread count: 1 vs 2 vs 4 threads, bitwise. */
    for (int t = 1; t < 3 && all_pools; t++) {
        y[t] = malloc(sizeof(float) * mn);
        run_kernel(pools[t], &p, p.x, M, y[t]);
        CHECK(memcmp(y[0], y[t], sizeof(float) * mn) == 0, "%s: %d threads differ from 1",
              kind_name[kind], dsv4_threadpool_size(pools[t]));
    }
    /* M independence: each row alone gives the same bits as inside the batch. */
    if (M > 1) {
        float *yr = malloc(sizeof(float) * N);
        for (int m = 0; m < M; m++) {
            run_kernel(pools[2], &p, p.x + (size_t)m * K, 1, yr);
            CHECK(memcmp(yr, y[0] + (size_t)m * N, sizeof(float) * N) == 0, "%s: row %d differs with M=1",
                  kind_name[kind], m);
        }
        free(yr);
    }
    for (int t = 0; t < 3; t++) free(y[t]);
    free(ref), free(tol), free(eacc);
    problem_free(&p);
}

/* ---- small and odd shapes (all kinds, all pools) --------------------------------------------------- */
static void test_small_shapes(void) {
    static const int shapes[][3] = {{1, 128, 1}, {3, 256, 5}, {2, 384, 130}, {4, 1024, 300}, {5, 512, 17}};
    for (int k = 0; k < 5; k++)
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
            check_shape((kind_t)k, shapes[s][0], shapes[s][1], shapes[s][2], 100 + s * 7 + k, 1);
}

/* BF16/FP32 linears take any K: short and ragged chunks exercise the lane tail. */
static void test_ragged_k(void) {
    static const int ks[] = {1, 7, 8, 9, 100, 129, 200, 4100};
    for (size_t i = 0; i < sizeof ks / sizeof ks[0]; i++) {
        check_shape(K_BF16, 3, ks[i], 9, 300 + i, 1);
        check_shape(K_BF16_F32OUT, 2, ks[i], 6, 400 + i, 1);
        check_shape(K_F32, 2, ks[i], 7, 500 + i, 1);
    }
}

/* ---- real V4-Flash shapes -------------------------------------------------------------------------- */
static void test_flash_fp8_shapes(void) {
    check_shape(K_FP8, 4, 4096, 1024, 11, 1);  /* attn.wq_a */
    check_shape(K_FP8, 2, 4096, 512, 12, 1);   /* attn.wkv */
    check_shape(K_FP8, 3, 8192, 4096, 13, 0);  /* attn.wo_b */
    check_shape(K_FP8, 1, 8192, 4096, 14, 0);
}

static void test_flash_fp4_shapes(void) {
    check_shape(K_FP4, 4, 4096, 2048, 21, 1);  /* expert w1 / w3 */
    check_shape(K_FP4, 2, 2048, 4096, 22, 0);  /* expert w2 */
}

static void test_flash_bf16_f32_shapes(void) {
    check_shape(K_BF16, 2, 4096, 512, 31, 1);        /* compressor wkv/wgate-like (bf16 path) */
    check_shape(K_BF16_F32OUT, 2, 4096, 512, 32, 0);
    check_shape(K_F32, 2, 16384, 24, 33, 1);         /* hc fn: [24, hc*D] */
}

/* ---- the test discriminates -------------------------------------------------------------------------
 * Two wrong FP8 linears, computed here, must fail the tolerance the right one passes:
 *  (a) promotion dropped: all K products summed in FP32 and scaled once per row by the first block's scales;
 *  (b) one activation scale per row: x quantized with a single power-of-two scale from the row's amax
 *      (per-token quantization) instead of per-128 blocks, then the exact product.
 * Activation blocks get different magnitudes (as real activations with outlier channels do), so block
 * scales differ. Because e4m3 is itself a floating-point format, (b) only loses accuracy where the row scale
 * pushes a block into e4m3's subnormal range; the input includes such an outlier (see below). */
static void test_wrong_variants_fail(void) {
    const int M = 2, K = 1024, N = 64;
    problem p;
    problem_make(&p, K_FP8, M, K, N, 77);
    for (int m = 0; m < M; m++)
        for (int k = 0; k < K; k++) p.x[(size_t)m * K + k] = dsv4_bf16_round(ldexpf(p.x[(size_t)m * K + k], -3 * ((k / 128) % 4)));
    /* An outlier channel (k = 5, |x| = 1.5·2^16) whose weight column is zero: it sets a row-wide scale but
     * contributes nothing, so only the per-block scales keep the other blocks out of e4m3's subnormal range. */
    for (int m = 0; m < M; m++) p.x[(size_t)m * K + 5] = (m & 1) ? -98304.0f : 98304.0f;
    for (int n = 0; n < N; n++) p.w8[(size_t)n * K + 5] = 0;
    size_t mn = (size_t)M * N;
    float *y = malloc(sizeof(float) * mn), *ya = malloc(sizeof(float) * mn), *yb = malloc(sizeof(float) * mn);
    double *ref = malloc(sizeof(double) * mn), *tol = malloc(sizeof(double) * mn), *eacc = malloc(sizeof(double) * mn);
    run_kernel(pools[1], &p, p.x, M, y);
    reference(&p, ref, tol, eacc);
    size_t ok_out, a_out, b_out;
    double ok = tol_ratio(&p, y, ref, tol, eacc, M, NULL, &ok_out);

    uint8_t *q = malloc((size_t)K), *s = malloc((size_t)K / 128);
    for (int m = 0; m < M; m++) {
        const float *xr = p.x + (size_t)m * K;
        dsv4_cpu_act_quant_fp8(xr, (size_t)K, 128, q, s);
        /* (b) per-row quantization */
        float amax = 0;
        for (int k = 0; k < K; k++) amax = fmaxf(amax, fabsf(xr[k]));
        int e = dsv4_pow2_scale_exp(amax, DSV4_FP8_AMAX_FLOOR, 1.0f / 448.0f);
        for (int n = 0; n < N; n++) {
            float acc = 0;
            double accb = 0;
            for (int k = 0; k < K; k++) {
                float wv = dsv4_e4m3_to_f32(p.w8[(size_t)n * K + k]);
                acc += dsv4_e4m3_to_f32(q[k]) * wv;
                double qb = dsv4_e4m3_to_f32(dsv4_f32_to_e4m3(ldexpf(xr[k], -e)));
                accb += ldexp(qb, e) * wv * e8m0_d(p.ws[(size_t)(n / 128) * (K / 128) + k / 128]);
            }
            ya[(size_t)m * N + n] = dsv4_bf16_round(acc * (float)(e8m0_d(s[0]) * e8m0_d(p.ws[(size_t)(n / 128) * (K / 128)])));
            yb[(size_t)m * N + n] = dsv4_bf16_round((float)accb);
        }
    }
    double ra = tol_ratio(&p, ya, ref, tol, eacc, M, NULL, &a_out), rb = tol_ratio(&p, yb, ref, tol, eacc, M, NULL, &b_out);
    printf("    of %zu outputs: correct err/tol %.3f, %zu outside bracket; promotion dropped %.3g, %zu outside; "
           "per-row act scale %.3g, %zu outside\n", mn, ok, ok_out, ra, a_out, rb, b_out);
    CHECK(ok <= 1.0 && ok_out == 0, "correct kernel must pass (%.3f, %zu)", ok, ok_out);
    CHECK(ra > 1.0 && a_out > 0, "dropping the per-block promotion must fail (%.3f, %zu)", ra, a_out);
    CHECK(b_out > 0, "one act scale per row must fail the bracket (%zu)", b_out);
    free(q), free(s), free(y), free(ya), free(yb), free(ref), free(tol), free(eacc);
    problem_free(&p);
}

/* The documented order, checked bit for bit on one FP8 chunk against a scalar re-implementation of it. */
static void test_documented_order(void) {
    const int K = 256, N = 1;
    problem p;
    problem_make(&p, K_FP8, 1, K, N, 5);
    float y;
    run_kernel(NULL, &p, p.x, 1, &y);
    uint8_t q[256], s[2];
    dsv4_cpu_act_quant_fp8(p.x, (size_t)K, 128, q, s);
    float C = 0.0f;
    for (int kb = 0; kb < K / 128; kb++) {
        float l[8] = {0};
        for (int i = 0; i < 128; i++)
            l[i % 8] = l[i % 8] + dsv4_e4m3_to_f32(q[kb * 128 + i]) * dsv4_e4m3_to_f32(p.w8[kb * 128 + i]);
        float P = ((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7]));
        float sc = (float)e8m0_d(s[kb]) * (float)e8m0_d(p.ws[kb]);
        C = C + P * sc;
    }
    CHECK(memcmp(&y, &(float){dsv4_bf16_round(C)}, 4) == 0, "kernel %a vs documented order %a", y, dsv4_bf16_round(C));
    problem_free(&p);
}

int main(void) {
    int nt[3] = {1, 2, 4};
    for (int i = 0; i < 3; i++)
        if (dsv4_threadpool_create(nt[i], &pools[i], NULL) != DSV4_OK) return 1;
    RUN(test_documented_order);
    RUN(test_small_shapes);
    RUN(test_ragged_k);
    RUN(test_wrong_variants_fail);
    RUN(test_flash_fp8_shapes);
    RUN(test_flash_fp4_shapes);
    RUN(test_flash_bf16_f32_shapes);
    for (int i = 0; i < 3; i++) dsv4_threadpool_destroy(pools[i]);
    return test_finish();
}
