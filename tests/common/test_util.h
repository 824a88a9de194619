/* test_util.h — the tiny test harness every C test binary uses: named test cases, checks that record
 * (not abort), a seeded RNG for random inputs (never zeros), fp64 comparison helpers, and the closing
 * line "N passed, N failed" (", N skipped" appended when a case was skipped) that tests/run_tests.sh sums.
 * A test case passes when none of its checks failed. */
#ifndef DSV4_TEST_UTIL_H
#define DSV4_TEST_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

extern int test_case_failed;   /* checks failed in the running case */

#define CHECK(cond, ...)                                                                  \
    do {                                                                                  \
        if (!(cond)) {                                                                    \
            test_case_failed++;                                                           \
            fprintf(stderr, "  CHECK failed %s:%d: %s: ", __FILE__, __LINE__, #cond);     \
            fprintf(stderr, __VA_ARGS__);                                                 \
            fputc('\n', stderr);                                                          \
        }                                                                                 \
    } while (0)

typedef void (*test_fn)(void);
/* Runs fn as one named case and records pass/fail. */
void test_run(const char *name, test_fn fn);
#define RUN(fn) test_run(#fn, fn)
/* Records a case that cannot run here (no GPU, no tokenizer.json) as skipped, with a "SKIP name: why" line. */
void test_skip(const char *name, const char *why);
/* Prints "N passed, N failed[, N skipped]" and returns the process exit code. */
int test_finish(void);

/* ---- random inputs ---------------------------------------------------------------------------- */
typedef struct { uint64_t s; } test_rng;
void test_rng_seed(test_rng *r, uint64_t seed);
uint64_t test_rng_u64(test_rng *r);
double test_rng_uniform(test_rng *r);              /* [0, 1) */
double test_rng_normal(test_rng *r);               /* N(0, 1) */
/* Fills x[n] with N(0, sigma) values rounded to bf16, never exactly zero. */
void test_fill_bf16(test_rng *r, float *x, size_t n, double sigma);

/* ---- comparisons ------------------------------------------------------------------------------ */
double test_rel_l2(const float *got, const double *want, size_t n);   /* ||got-want|| / ||want|| */
/* The same between two FP32 vectors (e.g. two backends' logits); NaN anywhere: INFINITY. */
double test_rel_l2_f(const float *got, const float *want, size_t n);
/* The index of the largest x[i] (ties: the lowest i). */
int test_argmax_f(const float *x, int n);
/* n token ids uniform in [0, vocab) from seed (malloc'ed; the caller frees). */
int32_t *test_random_tokens(uint64_t seed, int n, int vocab);
double test_max_abs(const float *got, const double *want, size_t n);
/* Max over i of |got-want| / (atol + rtol*|want|); <= 1 means within tolerance. */
double test_tol_ratio(const float *got, const double *want, size_t n, double atol, double rtol);

#endif
