/* test_util.c — implementation of the test harness (see test_util.h). */
#include "test_util.h"

#include <math.h>
#include <stdlib.h>
#include <time.h>

#include "core/numfmt.h"

int test_case_failed;
static int n_passed, n_failed, n_skipped;

void test_run(const char *name, test_fn fn) {
    struct timespec a, b;
    test_case_failed = 0;
    clock_gettime(CLOCK_MONOTONIC, &a);
    fn();
    clock_gettime(CLOCK_MONOTONIC, &b);
    double ms = (b.tv_sec - a.tv_sec) * 1e3 + (b.tv_nsec - a.tv_nsec) / 1e6;
    if (test_case_failed) {
        n_failed++;
        printf("FAIL %s (%d checks, %.1f ms)\n", name, test_case_failed, ms);
    } else {
        n_passed++;
        printf("ok   %s (%.1f ms)\n", name, ms);
    }
    fflush(stdout);
}

void test_skip(const char *name, const char *why) {
    n_skipped++;
    printf("SKIP %s: %s\n", name, why);
    fflush(stdout);
}

int test_finish(void) {
    if (n_skipped) printf("%d passed, %d failed, %d skipped\n", n_passed, n_failed, n_skipped);
    else printf("%d passed, %d failed\n", n_passed, n_failed);
    return n_failed ? 1 : 0;
}

void test_rng_seed(test_rng *r, uint64_t seed) { r->s = seed * 0x9E3779B97F4A7C15ull + 1; }

uint64_t test_rng_u64(test_rng *r) { /* splitmix64 */
    uint64_t z = (r->s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

double test_rng_uniform(test_rng *r) { return (double)(test_rng_u64(r) >> 11) * 0x1p-53; }

double test_rng_normal(test_rng *r) {
    double u1 = test_rng_uniform(r), u2 = test_rng_uniform(r);
    if (u1 < 1e-300) u1 = 1e-300;
    return sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2);
}

void test_fill_bf16(test_rng *r, float *x, size_t n, double sigma) {
    for (size_t i = 0; i < n; i++) {
        float v;
        do v = dsv4_bf16_round((float)(sigma * test_rng_normal(r)));
        while (v == 0.0f);
        x[i] = v;
    }
}

double test_rel_l2(const float *got, const double *want, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)got[i] - want[i];
        num += d * d;
        den += want[i] * want[i];
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

double test_rel_l2_f(const float *got, const float *want, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)got[i] - want[i];
        num += d * d;
        den += (double)want[i] * want[i];
    }
    if (isnan(num)) return INFINITY;
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

int test_argmax_f(const float *x, int n) {
    int b = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[b]) b = i;
    return b;
}

int32_t *test_random_tokens(uint64_t seed, int n, int vocab) {
    test_rng r;
    test_rng_seed(&r, seed);
    int32_t *t = malloc(sizeof(int32_t) * (size_t)n);
    for (int i = 0; i < n; i++) t[i] = (int32_t)(test_rng_u64(&r) % (uint64_t)vocab);
    return t;
}

double test_max_abs(const float *got, const double *want, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - want[i]);
        if (!(d <= m)) m = d; /* NaN propagates */
    }
    return m;
}

double test_tol_ratio(const float *got, const double *want, size_t n, double atol, double rtol) {
    double m = 0;
    for (size_t i = 0; i < n; i++) {
        double r = fabs((double)got[i] - want[i]) / (atol + rtol * fabs(want[i]));
        if (!(r <= m)) m = r;
    }
    return m;
}
