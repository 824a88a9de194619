/* bench_sampler.c — time per call of the sampler over the real 129280-token vocabulary, one thread.
 * Rotates 16 logit vectors (8 MB, larger than L2) so that each call reads cold-ish logits as the engine
 * would right after the LM head. Reports the median of 15 repetitions of 64 calls per configuration.
 * Times are thread CPU time (CLOCK_THREAD_CPUTIME_ID), not wall time, so that a shared, loaded dev box
 * still gives stable numbers; single-threaded code, so on an idle machine both agree.
 * Output: one CSV line per configuration: name,us_per_call_median,us_per_call_min.
 *   build/release/bench/bench_sampler [sigma]   (sigma: std of the N(0, sigma) logits, default 2) */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dsv4_sampler.h"

#define V 129280
#define NVEC 16
#define CALLS 64
#define REPS 15

static double now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static uint64_t rng_state = 88172645463325252ull;
static double rnd(void) { /* xorshift64*, uniform [0,1) */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (double)((rng_state * 2685821657736338717ull) >> 11) * 0x1p-53;
}

int main(int argc, char **argv) {
    double sigma = argc > 1 ? atof(argv[1]) : 2.0;
    float *logits = malloc((size_t)NVEC * V * sizeof *logits);
    for (size_t i = 0; i < (size_t)NVEC * V; i++) {
        double u1 = rnd() + 1e-300, u2 = rnd();
        logits[i] = (float)(sigma * sqrt(-2 * log(u1)) * cos(6.283185307179586 * u2));
    }
    struct { const char *name; float T; int k; float p, minp, rep, freq; int lp; } cfg[] = {
        {"greedy", 0, 0, 1, 0, 1, 0, 0},
        {"T=1 (full distribution)", 1, 0, 1, 0, 1, 0, 0},
        {"T=0.6 top_p=0.95", 0.6f, 0, 0.95f, 0, 1, 0, 0},
        {"T=1 top_p=0.9", 1, 0, 0.9f, 0, 1, 0, 0},
        {"T=0.7 top_k=50", 0.7f, 50, 1, 0, 1, 0, 0},
        {"T=0.7 top_k=50 top_p=0.9", 0.7f, 50, 0.9f, 0, 1, 0, 0},
        {"T=1 min_p=0.05", 1, 0, 1, 0.05f, 1, 0, 0},
        {"T=0.8 k=40 p=0.95 minp=0.05 +pen +lp5", 0.8f, 40, 0.95f, 0.05f, 1.1f, 0.2f, 5},
        {"logprobs top-20 only", 0, 0, 1, 0, 1, 0, 20},
    };
    dsv4_sampler_ws ws;
    if (dsv4_sampler_ws_init(&ws, V, NULL) != DSV4_OK) return 1;
    printf("name,us_per_call_median,us_per_call_min\n");
    for (size_t c = 0; c < sizeof cfg / sizeof cfg[0]; c++) {
        dsv4_sampling_params p;
        dsv4_sampling_params_default(&p);
        p.temperature = cfg[c].T;
        p.top_k = cfg[c].k;
        p.top_p = cfg[c].p;
        p.min_p = cfg[c].minp;
        p.repetition_penalty = cfg[c].rep;
        p.frequency_penalty = cfg[c].freq;
        p.logprobs = cfg[c].lp;
        p.seed = 1;
        dsv4_sampler s;
        if (dsv4_sampler_init(&s, &p, V, NULL) != DSV4_OK) return 1;
        int32_t prompt[256];
        for (int i = 0; i < 256; i++) prompt[i] = (int32_t)(rnd() * V);
        dsv4_sampler_add_prompt(&s, prompt, 256, NULL);
        double t[REPS];
        volatile int32_t sink = 0;
        for (int r = -2; r < REPS; r++) { /* 2 warm-up repetitions */
            double t0 = now_us();
            for (int i = 0; i < CALLS; i++) {
                dsv4_sample_out out;
                dsv4_sampler_next(&s, &ws, logits + (size_t)(i % NVEC) * V, &out, NULL);
                sink += out.token;
            }
            if (r >= 0) t[r] = (now_us() - t0) / CALLS;
        }
        qsort(t, REPS, sizeof t[0], cmp_d);
        printf("%s,%.1f,%.1f\n", cfg[c].name, t[REPS / 2], t[0]);
        dsv4_sampler_free(&s);
    }
    dsv4_sampler_ws_free(&ws);
    free(logits);
    return 0;
}
