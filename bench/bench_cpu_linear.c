/* bench_cpu_linear.c — benchmark (not a test) of the CPU linears at V4-Flash shapes, M = 1, 8, 64:
 * median time, GFLOP/s (2·M·N·K), and GB/s of weight streaming (weight + scale bytes / time), with the
 * ratio to a memcpy bandwidth measured in the same run (bytes copied per second over a 256 MiB buffer).
 * Weights are replicated so every timed call reads a copy not touched by the previous call (> L2/L3).
 *   usage: bench_cpu_linear [threads (default: all online CPUs)] [min seconds per case (default 0.3)]
 * Output: one CSV line per case after a header. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend/cpu/linear.h"
#include "core/numfmt.h"

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static uint64_t rng = 88172645463325252ull;
static uint64_t xs(void) { rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17; return rng; }

/* Median of 5 memcpy's of a 256 MiB buffer, in bytes copied per second. */
static double memcpy_bw(void) {
    size_t n = (size_t)256 << 20;
    char *a = malloc(n), *b = malloc(n);
    if (!a || !b) return 0;
    memset(a, 1, n), memset(b, 2, n);
    double t[5];
    for (int i = 0; i < 5; i++) {
        double t0 = now_s();
        memcpy(i & 1 ? a : b, i & 1 ? b : a, n);
        t[i] = now_s() - t0;
    }
    qsort(t, 5, sizeof t[0], cmp_d);
    free(a), free(b);
    return (double)n / t[2];
}

typedef enum { B_FP8, B_FP4, B_BF16 } bkind;
typedef struct { const char *name; bkind kind; int N, K; } bshape;

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 0;
    double min_s = argc > 2 ? atof(argv[2]) : 0.3;
    dsv4_threadpool *pool;
    if (dsv4_threadpool_create(threads, &pool, NULL) != DSV4_OK) return 1;
    double bw = memcpy_bw();
    printf("# threads %d, memcpy %.2f GB/s (bytes copied / s, 256 MiB, median of 5)\n", dsv4_threadpool_size(pool), bw * 1e-9);
    printf("shape,kind,M,N,K,median_ms,gflops,weight_GBps,ratio_to_memcpy\n");

    static const bshape shapes[] = {
        {"attn.wq_a", B_FP8, 1024, 4096},   {"attn.wkv", B_FP8, 512, 4096},
        {"attn.wo_b", B_FP8, 4096, 8192},   {"expert.w1", B_FP4, 2048, 4096},
        {"expert.w2", B_FP4, 4096, 2048},   {"compressor.wkv(bf16)", B_BF16, 512, 4096},
    };
    static const int Ms[] = {1, 8, 64};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        const bshape *sh = &shapes[s];
        size_t nk = (size_t)sh->N * sh->K;
        size_t wbytes = sh->kind == B_FP8 ? nk : sh->kind == B_FP4 ? nk / 2 : nk * 2;
        size_t sbytes = sh->kind == B_FP8 ? (size_t)((sh->N + 127) / 128) * (sh->K / 128)
                        : sh->kind == B_FP4 ? (size_t)sh->N * (sh->K / 32) : 0;
        int copies = (int)((((size_t)96 << 20) + wbytes - 1) / wbytes); /* >= 96 MiB of weights in rotation */
        uint8_t *w = malloc(wbytes * copies), *sc = malloc(sbytes * copies + 1);
        for (size_t i = 0; i < wbytes * copies; i++) {
            uint8_t b = (uint8_t)xs();
            if (sh->kind == B_FP8 && (b & 0x7f) == 0x7f) b = 0x7e;
            w[i] = b;
        }
        if (sh->kind == B_BF16) /* keep bf16 weights finite and moderate: exponent byte near 0x3c */
            for (size_t i = 1; i < wbytes * copies; i += 2) w[i] = (uint8_t)(0x3c | (w[i] & 0x80));
        for (size_t i = 0; i < sbytes * copies; i++) sc[i] = (uint8_t)(120 + xs() % 4);
        for (size_t mi = 0; mi < sizeof Ms / sizeof Ms[0]; mi++) {
            int M = Ms[mi];
            float *x = malloc(sizeof(float) * (size_t)M * sh->K), *y = malloc(sizeof(float) * (size_t)M * sh->N);
            for (size_t i = 0; i < (size_t)M * sh->K; i++) x[i] = dsv4_bf16_round((float)((int)(xs() % 2001) - 1000) * 1e-3f + 1e-4f);
            double times[256];
            int reps = 0;
            double t_start = now_s();
            for (int it = -1; reps < 256 && (reps < 3 || now_s() - t_start < min_s); it++) {
                int c = (it + 1) % copies;
                double t0 = now_s();
                switch (sh->kind) {
                case B_FP8: dsv4_cpu_linear_fp8(pool, x, M, sh->K, w + c * wbytes, sc + c * sbytes, sh->N, y); break;
                case B_FP4: dsv4_cpu_linear_fp4(pool, x, M, sh->K, w + c * wbytes, sc + c * sbytes, sh->N, y); break;
                case B_BF16:
                    dsv4_cpu_linear_bf16(pool, x, M, sh->K, (const uint16_t *)(w + c * wbytes), sh->N, y, DSV4_OUT_BF16);
                    break;
                }
                double dt = now_s() - t0;
                if (it >= 0) times[reps++] = dt; /* the first call is a warm-up */
            }
            qsort(times, (size_t)reps, sizeof times[0], cmp_d);
            double med = times[reps / 2];
            double gf = 2.0 * M * (double)nk / med * 1e-9, gbs = (double)(wbytes + sbytes) / med * 1e-9;
            printf("%s,%s,%d,%d,%d,%.3f,%.2f,%.2f,%.3f\n", sh->name,
                   sh->kind == B_FP8 ? "fp8" : sh->kind == B_FP4 ? "fp4" : "bf16", M, sh->N, sh->K, med * 1e3, gf,
                   gbs, gbs * 1e9 / bw);
            fflush(stdout);
            free(x), free(y);
        }
        free(w), free(sc);
    }
    dsv4_threadpool_destroy(pool);
    return 0;
}
