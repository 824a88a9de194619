/* test_ops_attn.c — sparse attention with sink (spec §3.8), the compressor's pooling and entry
 * post-processing (§4.5), the indexer's BF16-rounded scores (§4.6) and top-k with the lower-index tie rule,
 * each against an fp64 reference written here, at Flash shapes (64 heads × 512 over 640 rows; compressor
 * d = 512 with ratios 4 and 128, d = 128 indexer; 64 × 128 indexer heads over 1000 keys).
 * Tolerances and their reasons: docs/NUMERICS.md, "CPU ops (non-GEMM)". */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu/ops.h"
#include "backend/cpu/quant.h"
#include "core/numfmt.h"
#include "test_util.h"

#define U 0x1p-8 /* bf16 unit roundoff */

static double ulp_bf16(double v) {
    v = fabs(v);
    if (v < 0x1p-126) return 0x1p-133;
    return ldexp(1.0, ilogb(v) - 7);
}
static double bf16d(double v) { return (double)dsv4_bf16_round((float)v); }

/* ================================================================================================== */
/* sparse attention                                                                                    */
/* ================================================================================================== */

typedef struct { double pure, rep; long n_beyond_half; long total; } attn_err;

/* Two references per output element: "pure" (exact softmax, no bf16 P) with the bound
 *   0.5 ulp + u·A + slack,   A = Σ_j e_j|v_jd| / Z  (each P rounding is ≤ u relative);
 * and "replicated" (P rounded to bf16 in fp64) with 0.5 ulp + 2u·max_j e_j|v_jd|/Z + slack (one rounding
 * of P may flip because the FP32 score/exp differ from fp64 near a bf16 midpoint). */
static void check_attn(int H, int hd, int n_rows, int K, double q_sigma, double null_frac, uint64_t seed,
                       attn_err *err) {
    test_rng r;
    test_rng_seed(&r, seed);
    float *q = malloc(sizeof(float) * H * hd), *kv = malloc(sizeof(float) * n_rows * hd);
    float *out = malloc(sizeof(float) * H * hd), *sink = malloc(sizeof(float) * H);
    const float **rows = malloc(sizeof(float *) * K);
    test_fill_bf16(&r, q, (size_t)H * hd, q_sigma);
    test_fill_bf16(&r, kv, (size_t)n_rows * hd, 1.0);
    for (int h = 0; h < H; h++) sink[h] = (float)(2 * test_rng_normal(&r));
    rows[0] = kv; /* at least one valid row */
    for (int j = 1; j < K; j++)
        rows[j] = test_rng_uniform(&r) < null_frac ? NULL : kv + (size_t)(test_rng_u64(&r) % n_rows) * hd;
    float scale = 1.0f / sqrtf((float)hd);
    dsv4_cpu_sparse_attn(q, H, hd, rows, K, sink, scale, out);
    double *s = malloc(sizeof(double) * K);
    for (int h = 0; h < H; h++) {
        double m = -INFINITY;
        for (int j = 0; j < K; j++) {
            if (!rows[j]) continue;
            double a = 0;
            for (int d = 0; d < hd; d++) a += (double)q[h * hd + d] * rows[j][d];
            s[j] = a * (double)scale;
            m = fmax(m, s[j]);
        }
        double Z = exp(sink[h] - m);
        for (int j = 0; j < K; j++)
            if (rows[j]) Z += exp(s[j] - m);
        for (int d = 0; d < hd; d++) {
            double op = 0, orp = 0, A = 0, mx = 0;
            for (int j = 0; j < K; j++) {
                if (!rows[j]) continue;
                double e = exp(s[j] - m), v = rows[j][d];
                op += e * v;
                orp += bf16d(e) * v;
                A += e * fabs(v);
                mx = fmax(mx, e * fabs(v));
            }
            op /= Z, orp /= Z, A /= Z, mx /= Z;
            double got = out[h * hd + d], slack = 0x1p-18 * A;
            CHECK(got == dsv4_bf16_round((float)got), "not bf16");
            double ep = fabs(got - op) / (0.5 * ulp_bf16(op) + U * A + slack);
            double er = fabs(got - orp) / (0.5 * ulp_bf16(orp) + 2 * U * mx + slack);
            err->pure = fmax(err->pure, ep);
            err->rep = fmax(err->rep, er);
            err->n_beyond_half += fabs(got - orp) > 0.5 * ulp_bf16(orp) + slack;
            err->total++;
        }
    }
    free(q); free(kv); free(out); free(sink); free(rows); free(s);
}

static void test_sparse_attn_random(void) {
    attn_err e = {0};
    check_attn(64, 512, 700, 640, 1.0, 0.05, 1, &e);  /* Flash: window 128 + 512 compressed */
    check_attn(8, 512, 200, 128, 3.0, 0.3, 2, &e);    /* peaked scores, many empty slots */
    check_attn(4, 64, 50, 100, 1.0, 0.0, 3, &e);      /* small head, duplicates */
    CHECK(e.pure <= 1.0, "vs pure fp64: %.3f of bound", e.pure);
    CHECK(e.rep <= 1.0, "vs replicated: %.3f of bound", e.rep);
    CHECK(e.n_beyond_half <= e.total / 100, "%ld of %ld beyond 0.5 ulp of the replicated reference",
          e.n_beyond_half, e.total);
    printf("  sparse_attn: %.3f of pure bound, %.3f of replicated bound, %ld/%ld beyond 0.5 ulp (replicated)\n",
           e.pure, e.rep, e.n_beyond_half, e.total);
}

/* Every slot empty but one: softmax of one logit s against the sink: o = bf16(v · 1 / (1 + e^(sink−s))). */
static void test_sparse_attn_single_valid(void) {
    enum { H = 4, HD = 512, K = 256 };
    test_rng r;
    test_rng_seed(&r, 4);
    float *q = malloc(sizeof(float) * H * HD), *kv = malloc(sizeof(float) * HD), *out = malloc(sizeof(float) * H * HD);
    float sink[H] = {-1e30f, 0.0f, 1.5f, -3.0f};
    sink[0] = -INFINITY;
    const float *rows[K];
    test_fill_bf16(&r, q, H * HD, 1.0);
    test_fill_bf16(&r, kv, HD, 1.0);
    for (int j = 0; j < K; j++) rows[j] = j == 173 ? kv : NULL;
    dsv4_cpu_sparse_attn(q, H, HD, rows, K, sink, 1.0f / sqrtf(512.0f), out);
    for (int h = 0; h < H; h++) {
        double s = 0;
        for (int d = 0; d < HD; d++) s += (double)q[h * HD + d] * kv[d];
        s /= sqrt(512.0);
        double f = 1.0 / (1.0 + exp(sink[h] - s)), worst = 0;
        for (int d = 0; d < HD; d++)
            worst = fmax(worst, fabs(out[h * HD + d] - kv[d] * f) / (0.5 * ulp_bf16(kv[d] * f) + 1e-6 * fabs(kv[d])));
        CHECK(worst <= 1.0, "head %d: %.3f", h, worst);
        if (h == 0) CHECK(memcmp(out, kv, sizeof(float) * HD) == 0, "sink -inf, one row: output = the row");
    }
    /* All slots empty: zeros. */
    for (int j = 0; j < K; j++) rows[j] = NULL;
    dsv4_cpu_sparse_attn(q, H, HD, rows, K, sink, 0.04f, out);
    int nz = 0;
    for (int i = 0; i < H * HD; i++) nz += out[i] != 0.0f;
    CHECK(nz == 0, "all-empty: %d non-zero outputs", nz);
    free(q); free(kv); free(out);
}

/* The sink is an extra logit with a zero value: it only scales the output by Σe / (Σe + e^(sink−m)).
 * With K identical rows and equal scores the weights are exactly 1, so o = v·K / (K + e^(sink−s)). */
static void test_sparse_attn_sink_effect(void) {
    enum { HD = 512, K = 64 };
    test_rng r;
    test_rng_seed(&r, 5);
    float q[HD], kv[HD], o1[HD], o2[HD], o3[HD];
    test_fill_bf16(&r, q, HD, 1.0);
    test_fill_bf16(&r, kv, HD, 1.0);
    const float *rows[K];
    for (int j = 0; j < K; j++) rows[j] = kv;
    double s = 0;
    for (int d = 0; d < HD; d++) s += (double)q[d] * kv[d];
    s /= sqrt(512.0);
    float sink_none = -INFINITY, sink_half = (float)(s + log((double)K)), sink_big = (float)(s + 20.0);
    dsv4_cpu_sparse_attn(q, 1, HD, rows, K, &sink_none, 1.0f / sqrtf(512.0f), o1);
    dsv4_cpu_sparse_attn(q, 1, HD, rows, K, &sink_half, 1.0f / sqrtf(512.0f), o2);
    dsv4_cpu_sparse_attn(q, 1, HD, rows, K, &sink_big, 1.0f / sqrtf(512.0f), o3);
    double w1 = 0, w2 = 0, w3 = 0;
    double f3 = K / (K + exp(20.0));
    for (int d = 0; d < HD; d++) {
        w1 = fmax(w1, fabs(o1[d] - kv[d]));
        w2 = fmax(w2, fabs(o2[d] - 0.5 * kv[d]) / (0.5 * ulp_bf16(0.5 * kv[d]) + 1e-5 * fabs(kv[d])));
        w3 = fmax(w3, fabs(o3[d] - f3 * kv[d]) / (0.5 * ulp_bf16(f3 * kv[d]) + 1e-5 * fabs(f3 * kv[d])));
    }
    CHECK(w1 == 0, "no sink: output must equal the common row (%.3g)", w1);
    CHECK(w2 <= 1.0, "sink = s + ln K halves the output (%.3f)", w2);
    CHECK(w3 <= 1.0, "large sink shrinks the output, no value contribution (%.3f)", w3);
}

/* ================================================================================================== */
/* compressor                                                                                          */
/* ================================================================================================== */

static void check_pool(int n_slots, int d, int ld, int empty_first, uint64_t seed, double *worst) {
    test_rng r;
    test_rng_seed(&r, seed);
    float *v = malloc(sizeof(float) * n_slots * ld), *sc = malloc(sizeof(float) * n_slots * ld);
    float *out = malloc(sizeof(float) * d);
    for (int i = 0; i < n_slots * ld; i++) {
        v[i] = (float)test_rng_normal(&r);
        sc[i] = (float)(3 * test_rng_normal(&r));
    }
    for (int s = 0; s < empty_first; s++)
        for (int c = 0; c < ld; c++) {
            sc[s * ld + c] = -INFINITY;
            v[s * ld + c] = NAN; /* never read */
        }
    dsv4_cpu_compress_pool(v, sc, n_slots, d, ld, out);
    for (int c = 0; c < d; c++) {
        double m = -INFINITY, z = 0, o = 0, a = 0, spread = 0;
        for (int s = empty_first; s < n_slots; s++) m = fmax(m, sc[s * ld + c]);
        for (int s = empty_first; s < n_slots; s++) z += exp(sc[s * ld + c] - m);
        for (int s = empty_first; s < n_slots; s++) {
            double p = exp(sc[s * ld + c] - m) / z;
            o += p * v[s * ld + c];
            a += p * fabs(v[s * ld + c]);
            spread = fmax(spread, m - sc[s * ld + c]);
        }
        /* FP32: s − m (relative 2^-24·|s−m| on the weight), expf (≤ 1 ulp), Σ, division, product. */
        double tol = (spread + 8) * 0x1p-23 * a;
        *worst = fmax(*worst, fabs(out[c] - o) / tol);
    }
    free(v); free(sc); free(out);
}

static void test_compress_pool(void) {
    double worst = 0;
    check_pool(8, 512, 1024, 0, 1, &worst);   /* ratio 4 (overlap): 8 slots */
    check_pool(8, 512, 512, 4, 2, &worst);    /* window 0: previous-window slots empty */
    check_pool(128, 512, 512, 0, 3, &worst);  /* ratio 128 */
    check_pool(8, 128, 256, 0, 4, &worst);    /* indexer compressor */
    CHECK(worst <= 1.0, "pool: %.3f of bound", worst);
    printf("  compress_pool: %.3f of FP32 bound\n", worst);
}

/* Half an e4m3 step at |v| (v already divided by the block scale). */
static double e4m3_half_step(double v) {
    v = fabs(v);
    return v < 0x1p-6 ? 0x1p-10 : ldexp(1.0, ilogb(v) - 4);
}
static double e2m1_half_step(double v) {
    v = fabs(v);
    return v < 2 ? 0.25 : v < 4 ? 0.5 : 1.0;
}

static void fill_norm_w(test_rng *r, uint16_t *w, int n) {
    for (int i = 0; i < n; i++) w[i] = dsv4_f32_to_bf16((float)(1.0 + 0.3 * test_rng_normal(r)));
}

/* fp64: x = bf16(e) (the input cast is part of the op), n = w·x/rms, rope at pos with the FP32 angle. */
static void ref_norm_rope(const float *e, const uint16_t *w, int d, long pos, const dsv4_rope *ro, double *y) {
    double ss = 0;
    for (int i = 0; i < d; i++) ss += bf16d(e[i]) * bf16d(e[i]);
    double rs = 1 / sqrt(ss / d + (double)1e-6f);
    for (int i = 0; i < d; i++) y[i] = bf16d(e[i]) * rs * dsv4_bf16_to_f32(w[i]);
    double *x = y + d - ro->rope_dim;
    for (int p = 0; p < ro->rope_dim / 2; p++) {
        double ang = (double)((float)pos * ro->inv_freq[p]), c = cos(ang), s = sin(ang);
        double a = x[2 * p], b = x[2 * p + 1];
        x[2 * p] = a * c - b * s;
        x[2 * p + 1] = a * s + b * c;
    }
}

static void test_compress_finish(void) {
    dsv4_rope ro;
    dsv4_rope_init(&ro, 64, 160000.0, 1, 16.0, 65536.0, 32.0, 1.0);
    test_rng r;
    test_rng_seed(&r, 9);
    double w_nope = 0, w_rope = 0, w_idx = 0;
    for (int trial = 0; trial < 40; trial++) {
        int is_idx = trial % 2, d = is_idx ? 128 : 512;
        long pos = (long)(test_rng_u64(&r) % 100000) * (is_idx ? 4 : (trial % 4 == 0 ? 4 : 128));
        float e[512], e2[512];
        uint16_t w[512];
        for (int i = 0; i < d; i++) e[i] = (float)(test_rng_normal(&r) * (trial % 3 ? 1.0 : 50.0));
        fill_norm_w(&r, w, d);
        memcpy(e2, e, sizeof e);
        dsv4_cpu_compress_finish(e, d, w, 1e-6f, pos, &ro, is_idx);
        /* Composition with the separately tested pieces: bitwise. */
        for (int i = 0; i < d; i++) e2[i] = dsv4_bf16_round(e2[i]);
        dsv4_cpu_rmsnorm(e2, w, d, 1e-6f, e2);
        dsv4_cpu_rope(e2 + d - 64, pos, &ro, 0);
        if (is_idx) {
            dsv4_cpu_hadamard128(e2);
            dsv4_cpu_fake_quant_fp4(e2, 128);
        } else {
            dsv4_cpu_fake_quant_fp8(e2, 448, 64);
        }
        CHECK(memcmp(e, e2, sizeof(float) * d) == 0, "trial %d: not the composition norm→rope→quant", trial);
    }
    /* fp64 bounds on fresh inputs. */
    for (int trial = 0; trial < 40; trial++) {
        int is_idx = trial % 2, d = is_idx ? 128 : 512;
        long pos = (long)(test_rng_u64(&r) % 100000) * 4;
        float e[512];
        uint16_t w[512];
        double y[512];
        for (int i = 0; i < d; i++) e[i] = (float)(test_rng_normal(&r) * (trial % 3 ? 1.0 : 50.0));
        fill_norm_w(&r, w, d);
        ref_norm_rope(e, w, d, pos, &ro, y);
        dsv4_cpu_compress_finish(e, d, w, 1e-6f, pos, &ro, is_idx);
        if (!is_idx) {
            /* rope dims: norm rounding (≤ u per component, mixed by the rotation) + 0.5 ulp. */
            for (int p = 448; p < 512; p += 2) {
                double mag = fabs(y[p]) + fabs(y[p + 1]);
                for (int c = 0; c < 2; c++)
                    w_rope = fmax(w_rope, fabs(e[p + c] - y[p + c]) / (0.5 * ulp_bf16(y[p + c]) + U * mag + 1e-6 * mag));
            }
            /* nope dims: FP8 at the block scale from the fp64 amax; the norm's bf16 rounding (≤ u) moves
             * the value before quantisation. */
            for (int b = 0; b < 7; b++) {
                double amax = 0;
                for (int i = 0; i < 64; i++) amax = fmax(amax, fabs(y[b * 64 + i]));
                double s = ldexp(1.0, (int)ceil(log2(fmax(amax, 1e-4) / 448)));
                for (int i = 0; i < 64; i++) {
                    double v = y[b * 64 + i], pert = U * fabs(v);
                    double tol = e4m3_half_step((fabs(v) + pert) / s) * s + pert + 1e-6 * fabs(v);
                    w_nope = fmax(w_nope, fabs(e[b * 64 + i] - v) / tol);
                }
            }
        } else {
            /* Hadamard in fp64, then FP4 at the block scale; bf16 roundings of norm, rope and the rotation
             * perturb the rotated value by ≤ 2u·Σ|x_j|/√128 + u·|y|. */
            double h[128], sx = 0;
            for (int i = 0; i < 128; i++) sx += fabs(y[i]);
            for (int i = 0; i < 128; i++) {
                double a = 0;
                for (int j = 0; j < 128; j++) a += (__builtin_popcount(i & j) & 1 ? -1 : 1) * y[j];
                h[i] = a / sqrt(128.0);
            }
            for (int b = 0; b < 4; b++) {
                double amax = 0;
                for (int i = 0; i < 32; i++) amax = fmax(amax, fabs(h[b * 32 + i]));
                double s = ldexp(1.0, (int)ceil(log2(amax / 6)));
                for (int i = 0; i < 32; i++) {
                    double v = h[b * 32 + i], pert = 2 * U * sx / sqrt(128.0) + U * fabs(v);
                    double tol = e2m1_half_step((fabs(v) + pert) / s) * s + pert;
                    w_idx = fmax(w_idx, fabs(e[b * 32 + i] - v) / tol);
                }
            }
        }
    }
    CHECK(w_rope <= 1.0, "rope dims %.3f of bound", w_rope);
    CHECK(w_nope <= 1.0, "nope dims (fp8) %.3f of bound", w_nope);
    CHECK(w_idx <= 1.0, "indexer (hadamard+fp4) %.3f of bound", w_idx);
    printf("  compress_finish: rope %.3f, fp8 nope %.3f, indexer fp4 %.3f of bound\n", w_rope, w_nope, w_idx);
}

/* ================================================================================================== */
/* indexer                                                                                             */
/* ================================================================================================== */

static void test_indexer_scores(void) {
    enum { NH = 64, DH = 128, NK = 1000 };
    test_rng r;
    test_rng_seed(&r, 11);
    float *q = malloc(sizeof(float) * NH * DH), *k = malloc(sizeof(float) * NK * DH), wI[NH], sc[NK];
    test_fill_bf16(&r, q, NH * DH, 1.0);
    test_fill_bf16(&r, k, NK * DH, 1.0);
    dsv4_cpu_fake_quant_fp4(q, NH * DH); /* the indexer's real inputs are FP4-simulated */
    dsv4_cpu_fake_quant_fp4(k, NK * DH);
    for (int h = 0; h < NH; h++) wI[h] = dsv4_bf16_round((float)(test_rng_normal(&r) / (sqrt(128.0) * 8)));
    dsv4_cpu_indexer_scores(q, wI, NH, DH, k, NK, sc);
    long exact = 0;
    double w_rep = 0, w_pure = 0;
    for (int t = 0; t < NK; t++) {
        double rep = 0, pure = 0, mag = 0, max_term_ulp = 0;
        for (int h = 0; h < NH; h++) {
            double dot = 0;
            for (int i = 0; i < DH; i++) dot += (double)q[h * DH + i] * k[t * DH + i];
            double rd = bf16d(dot);
            double term = bf16d(wI[h] * fmax(rd, 0.0));
            rep += term;
            pure += wI[h] * fmax(dot, 0.0);
            mag += fabs(wI[h] * fmax(dot, 0.0));
            max_term_ulp = fmax(max_term_ulp, ulp_bf16(term));
        }
        rep = bf16d(rep);
        exact += sc[t] == rep;
        /* Replicated: equal unless one intermediate rounding flips (then ≤ 1 ulp of that term + 1 ulp). */
        w_rep = fmax(w_rep, fabs(sc[t] - rep) / (ulp_bf16(rep) + max_term_ulp));
        /* Pure: dot and product roundings ≤ (2u + u²)·|term| each, summed; then 0.5 ulp of the score. */
        w_pure = fmax(w_pure, fabs(sc[t] - pure) / ((2 * U + U * U) * mag + 0.5 * ulp_bf16(pure) + 1e-6 * mag));
    }
    CHECK(w_rep <= 1.0, "replicated %.3f of bound", w_rep);
    CHECK(w_pure <= 1.0, "pure %.3f of bound", w_pure);
    CHECK(exact >= NK * 99 / 100, "exact %ld / %d", exact, NK);
    printf("  indexer_scores: %ld/%d bitwise equal to the replicated rounding; %.3f of pure bound\n", exact, NK,
           w_pure);
    free(q); free(k);
}

static const float *g_scores;
static int cmp_rank(const void *a, const void *b) {
    int32_t i = *(const int32_t *)a, j = *(const int32_t *)b;
    float x = g_scores[i], y = g_scores[j];
    if (isnan(x) != isnan(y)) return isnan(x) ? 1 : -1;
    if (!isnan(x) && x != y) return x > y ? -1 : 1;
    return i < j ? -1 : 1;
}

static void check_topk(const float *s, int n, int k, const char *what) {
    int32_t *want = malloc(sizeof(int32_t) * n), *got = malloc(sizeof(int32_t) * (k > 0 ? k : 1));
    for (int i = 0; i < n; i++) want[i] = i;
    g_scores = s;
    qsort(want, n, sizeof(int32_t), cmp_rank);
    dsv4_cpu_topk(s, n, k, got);
    int bad = 0;
    for (int i = 0; i < k; i++) bad += got[i] != want[i];
    CHECK(bad == 0, "%s (n=%d k=%d): %d positions differ", what, n, k, bad);
    free(want); free(got);
}

static void test_topk(void) {
    enum { N = 1000 };
    test_rng r;
    test_rng_seed(&r, 12);
    float s[N];
    for (int i = 0; i < N; i++) s[i] = (float)test_rng_normal(&r);
    check_topk(s, N, 512, "random");
    check_topk(s, N, 1, "k=1");
    check_topk(s, N, N, "k=n");
    check_topk(s, 7, 6, "small");
    for (int i = 0; i < N; i++) s[i] = (float)(test_rng_u64(&r) % 3); /* hundreds of boundary ties */
    check_topk(s, N, 512, "ties");
    int32_t got[512];
    dsv4_cpu_topk(s, N, 512, got);
    /* Explicitly: the selected entries equal to the boundary value are the lowest-indexed ones. */
    float bnd = s[got[511]];
    int last_in = -1, first_out = N;
    for (int i = 0; i < 512; i++)
        if (s[got[i]] == bnd && got[i] > last_in) last_in = got[i];
    for (int i = 0; i < N; i++) {
        int in = 0;
        for (int j = 0; j < 512; j++) in |= got[j] == i;
        if (!in && s[i] == bnd && i < first_out) first_out = i;
    }
    CHECK(last_in < first_out, "tie at the boundary: selected %d but not %d", last_in, first_out);
    for (int i = 0; i < N; i++) s[i] = 0.25f;
    dsv4_cpu_topk(s, N, 100, got);
    int bad = 0;
    for (int i = 0; i < 100; i++) bad += got[i] != i;
    CHECK(bad == 0, "all equal: must be 0..k-1");
    /* Prefill masking: -inf for invisible entries, NaN sorts last. */
    for (int i = 0; i < N; i++) s[i] = i < 300 ? (float)test_rng_normal(&r) : -INFINITY;
    s[5] = NAN;
    check_topk(s, N, 512, "masked");
    /* Bf16 indexer-like scores (many exact ties). */
    for (int i = 0; i < N; i++) s[i] = dsv4_bf16_round((float)test_rng_normal(&r) * 0.01f);
    check_topk(s, N, 512, "bf16");
}

int main(void) {
    RUN(test_sparse_attn_random);
    RUN(test_sparse_attn_single_valid);
    RUN(test_sparse_attn_sink_effect);
    RUN(test_compress_pool);
    RUN(test_compress_finish);
    RUN(test_indexer_scores);
    RUN(test_topk);
    return test_finish();
}
