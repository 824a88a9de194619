/* test_ops_moe.c — MoE router (sqrt-softplus, bias for selection only, hash ids, normalisation, route
 * scale; spec §4.8) at E = 256 / 384, and the clamped SwiGLU with the routing weight applied before the
 * BF16 rounding, against fp64 references written here. Tolerances: docs/NUMERICS.md, "CPU ops (non-GEMM)". */
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
static double softplus(double z) { return z > 0 ? z + log1p(exp(-z)) : log1p(exp(z)); }

/* Checks one routing decision against fp64: the chosen set is a top-k of s + bias (up to FP32 noise),
 * and weights = s[e]/Σ s[e] · scale, from s without the bias. */
static void check_route(const float *lg, int E, const float *bias, const int64_t *hash, int k, float rs,
                        double *w_err, double *sel_gap) {
    int32_t ex[16];
    float w[16];
    dsv4_cpu_route(lg, E, bias, hash, k, rs, ex, w);
    double sum = 0, wsum = 0;
    for (int i = 0; i < k; i++) sum += sqrt(softplus(lg[ex[i]]));
    for (int i = 0; i < k; i++) {
        if (hash) CHECK(ex[i] == hash[i], "hash id %d: %d vs %lld", i, ex[i], (long long)hash[i]);
        for (int j = 0; j < i; j++) CHECK(ex[i] != ex[j] || hash, "duplicate expert");
        double want = sqrt(softplus(lg[ex[i]])) / sum * rs;
        /* FP32: softplus (≤ 2 ulp), sqrt, k-term sum, division, scale: ≤ ~10·2^-24 relative; plus an
         * absolute 1e-20 for logits below ≈ −87, where softplus(z) ≈ e^z is an FP32 subnormal (torch's FP32
         * softplus has the same floor; such a weight is < 1e-19 of the sum). */
        *w_err = fmax(*w_err, fabs(w[i] - want) / (want * 10 * 0x1p-24 + 1e-20));
        CHECK(isfinite(w[i]) && w[i] > 0, "weight %d = %g", i, w[i]);
        wsum += w[i];
    }
    CHECK(fabs(wsum - rs) <= 1e-5 * rs, "weights sum %.8g vs route scale %g", wsum, rs);
    if (!hash) {
        double min_in = INFINITY, max_out = -INFINITY;
        for (int e = 0; e < E; e++) {
            double key = sqrt(softplus(lg[e])) + (bias ? bias[e] : 0);
            int in = 0;
            for (int i = 0; i < k; i++) in |= ex[i] == e;
            if (in) min_in = fmin(min_in, key);
            else max_out = fmax(max_out, key);
        }
        /* max_out − min_in ≤ 0 up to FP32 rounding of the keys. */
        *sel_gap = fmax(*sel_gap, (max_out - min_in) / (4 * 0x1p-24 * (fabs(min_in) + 1)));
    }
}

static void test_route(void) {
    test_rng r;
    test_rng_seed(&r, 1);
    double w_err = 0, gap = 0;
    float lg[384], bias[384];
    int64_t hash[6];
    for (int trial = 0; trial < 300; trial++) {
        int E = trial % 2 ? 384 : 256;
        double sg = trial % 5 == 0 ? 30.0 : 2.0; /* includes z > 20 (linear branch) and z ≪ 0 */
        for (int e = 0; e < E; e++) lg[e] = (float)(sg * test_rng_normal(&r));
        for (int e = 0; e < E; e++) bias[e] = (float)(0.3 * test_rng_normal(&r));
        float rs = trial % 2 ? 2.5f : 1.5f;
        check_route(lg, E, trial % 3 ? bias : NULL, NULL, 6, rs, &w_err, &gap);
        for (int i = 0; i < 6; i++) hash[i] = (int64_t)(test_rng_u64(&r) % E);
        check_route(lg, E, bias, hash, 6, rs, &w_err, &gap);
    }
    CHECK(w_err <= 1.0, "weights %.3f of FP32 bound", w_err);
    CHECK(gap <= 1.0, "selection not a top-k of s+bias (%.3f)", gap);
    printf("  route: weights %.3f of bound, selection gap %.3f\n", w_err, gap);
}

static void test_route_bias_only_selects(void) {
    enum { E = 256 };
    float lg[E], bias[E], w[6], w2[6];
    int32_t ex[6], ex2[6];
    for (int e = 0; e < E; e++) lg[e] = -5.0f + 0.01f * (float)e, bias[e] = 0.0f;
    /* Without bias: the six largest logits 250..255. */
    dsv4_cpu_route(lg, E, bias, NULL, 6, 1.5f, ex, w);
    for (int i = 0; i < 6; i++) CHECK(ex[i] == 255 - i, "no bias: %d", ex[i]);
    /* A bias on expert 3 selects it, but its weight uses its own (small) score. */
    bias[3] = 10.0f;
    dsv4_cpu_route(lg, E, bias, NULL, 6, 1.5f, ex2, w2);
    CHECK(ex2[0] == 3, "bias must select expert 3 first, got %d", ex2[0]);
    double s3 = sqrt(softplus(lg[3])), others = 0;
    for (int i = 1; i < 6; i++) others += sqrt(softplus(lg[ex2[i]]));
    CHECK(fabs(w2[0] - s3 / (s3 + others) * 1.5) < 1e-6, "bias leaked into weight: %g", w2[0]);
    /* Hash path ignores the bias completely. */
    int64_t h[6] = {3, 7, 7, 200, 0, 255};
    dsv4_cpu_route(lg, E, bias, h, 6, 2.5f, ex, w);
    double tot = 0;
    for (int i = 0; i < 6; i++) tot += sqrt(softplus(lg[h[i]]));
    for (int i = 0; i < 6; i++) {
        CHECK(ex[i] == h[i], "hash id");
        CHECK(fabs(w[i] - sqrt(softplus(lg[h[i]])) / tot * 2.5) < 1e-6, "hash weight %d", i);
    }
    /* Extreme logits stay finite. */
    lg[0] = 1e4f, lg[1] = -1e4f, lg[2] = 88.0f, lg[4] = -100.0f;
    int64_t h2[6] = {0, 1, 2, 4, 5, 6};
    dsv4_cpu_route(lg, E, NULL, h2, 6, 1.0f, ex, w);
    for (int i = 0; i < 6; i++) CHECK(isfinite(w[i]) && w[i] >= 0, "extreme logit weight %d = %g", i, w[i]);
    CHECK(w[1] == 0.0f, "softplus(-1e4) = e^-10000 underflows to 0 (also in fp64): weight %g", w[1]);
    double tot2 = 0;
    for (int i = 0; i < 6; i++) tot2 += sqrt(softplus(lg[h2[i]]));
    CHECK(fabs(w[0] - 100.0 / tot2) <= 1e-6, "z = 1e4 (linear branch) weight %g vs %g", w[0], 100.0 / tot2);
}

/* ---- SwiGLU ------------------------------------------------------------------------------------ */
static double ref_swiglu(double g, double u, double lim, double w) {
    if (lim > 0) {
        u = fmin(fmax(u, -lim), lim);
        g = fmin(g, lim);
    }
    return g / (1 + exp(-g)) * u * w;
}

static void test_swiglu(void) {
    enum { N = 2048 };
    test_rng r;
    test_rng_seed(&r, 2);
    float g[N], u[N], h[N];
    double worst = 0;
    long n_clamped = 0, n_would_differ = 0;
    for (int pass = 0; pass < 6; pass++) {
        double sg = pass < 2 ? 1.0 : pass < 4 ? 6.0 : 15.0;
        float lim = pass % 2 ? 10.0f : 0.0f, w = (float)test_rng_uniform(&r) + 0.05f;
        test_fill_bf16(&r, g, N, sg);
        test_fill_bf16(&r, u, N, sg);
        dsv4_cpu_swiglu(g, u, N, lim, w, h);
        for (int i = 0; i < N; i++) {
            double ref = ref_swiglu(g[i], u[i], lim, w);
            CHECK(h[i] == dsv4_bf16_round(h[i]), "not bf16");
            /* 0.5 ulp + FP32 (expf, division, two products: ≤ 6·2^-24 relative). */
            worst = fmax(worst, (fabs(h[i] - ref) - 6 * 0x1p-24 * fabs(ref)) / ulp_bf16(ref));
            if (lim > 0 && (g[i] > lim || fabs(u[i]) > lim)) n_clamped++;
            /* The weight goes in before the rounding: bf16(bf16(silu·u)·w) would often differ. */
            double late = dsv4_bf16_round((float)(w * dsv4_bf16_round((float)ref_swiglu(g[i], u[i], lim, 1.0))));
            n_would_differ += late != h[i];
        }
    }
    CHECK(worst <= 0.5, "swiglu %.4f ulp beyond slack", worst);
    CHECK(n_clamped > 100, "clamps rarely active: %ld", n_clamped);
    CHECK(n_would_differ > 100, "test cannot tell early from late weighting (%ld)", n_would_differ);
    printf("  swiglu: max %.4f ulp beyond FP32 slack; %ld clamped elements; %ld where late weighting differs\n",
           worst, n_clamped, n_would_differ);
    /* Clamp cases, exactly. */
    float gg[6] = {12.0f, 10.0f, -30.0f, 1.0f, 1.0f, 1.0f}, uu[6] = {1.0f, 1.0f, 1.0f, 50.0f, -50.0f, 10.0f}, hh[6];
    dsv4_cpu_swiglu(gg, uu, 6, 10.0f, 1.0f, hh);
    CHECK(hh[0] == hh[1], "gate 12 clamps to 10");
    CHECK(hh[2] != 0 && fabs(hh[2] - ref_swiglu(-30, 1, 10, 1)) <= ulp_bf16(hh[2]), "no lower gate clamp: %g", hh[2]);
    CHECK(hh[3] == hh[5] && hh[4] == -hh[5], "up clamps both sides: %g %g %g", hh[3], hh[4], hh[5]);
}

int main(void) {
    RUN(test_route);
    RUN(test_route_bias_only_selects);
    RUN(test_swiglu);
    return test_finish();
}
