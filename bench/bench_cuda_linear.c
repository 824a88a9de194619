/* bench_cuda_linear.c — speed of the CUDA linears (src/backend/cuda/cuda_linear.h) with ratios to peers
 * measured in the same run:
 *   decode (M = 1, 8): weight-streaming GB/s (weight + scale bytes / time) and its ratio to the measured
 *     device-to-device cudaMemcpy bandwidth (bytes read + written / time);
 *   prefill (M = 512, 2048): TFLOP/s (2·M·N·K / time) and its ratio to cuBLASLt's BF16 GEMM of the same
 *     shape (FP32 accumulation, BF16 out).
 * Timing: warm-up, then batches of launches that cycle over enough weight copies to exceed 4x the L2 (so
 * every launch streams its weights from HBM), CUDA events around each batch, median of the batches.
 * Inputs are random, never zeros. Output: one CSV line per measurement ("csv,...") and a table.
 * Usage: bench_cuda_linear [--quick]. Without CUDA (or a device) it prints SKIP and exits 0. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/numfmt.h"

#ifndef DSV4_HAVE_CUDA
int main(void) {
    printf("SKIP: built without CUDA\n");
    return 0;
}
#else
#include "backend/cuda/cuda_linear.h"

static dsv4_cuda_ctx *ctx;
static uint64_t rs = 0x9E3779B97F4A7C15ull;
static uint64_t rnd(void) {
    uint64_t z = (rs += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

#define TRY(call)                                                                          \
    do {                                                                                   \
        dsv4_err e_;                                                                       \
        dsv4_status st_ = (call);                                                          \
        if (st_ != DSV4_OK) {                                                              \
            fprintf(stderr, "FATAL %s:%d: %s -> %s: %s\n", __FILE__, __LINE__, #call,      \
                    dsv4_status_name(st_), e_.msg);                                        \
            exit(1);                                                                       \
        }                                                                                  \
    } while (0)
#define ERR (&e_)

static void *dalloc_rand(size_t bytes, int kind) { /* kind 0: random bytes, 1: e4m3 (no NaN), 2: bf16 N(0,.02)-ish, 3: e8m0 in [117,124] */
    uint8_t *h = malloc(bytes);
    if (!h) exit(1);
    for (size_t i = 0; i < bytes; i++) {
        uint8_t c = (uint8_t)rnd();
        if (kind == 1 && (c & 0x7f) == 0x7f) c = 0x7e;
        if (kind == 3) c = (uint8_t)(117 + c % 8);
        h[i] = c;
    }
    if (kind == 2) {
        uint16_t *b = (uint16_t *)h;
        for (size_t i = 0; i < bytes / 2; i++) {
            float v = ((float)(rnd() % 2001) - 1000.0f) * 2e-5f;
            if (v == 0.0f) v = 1e-5f;
            b[i] = dsv4_f32_to_bf16(v);
        }
    }
    void *d;
    TRY(dsv4_cuda_alloc(ctx, bytes, &d, ERR));
    TRY(dsv4_cuda_upload(ctx, d, h, bytes, ERR));
    free(h);
    return d;
}

static int cmpf(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return x < y ? -1 : x > y;
}

enum op { OP_FP8, OP_FP4, OP_BF16 };
typedef struct {
    enum op op;
    int M, N, K;
    int ncopy;
    void **w, **ws;      /* [ncopy] weight copies */
    void *xq, *xs, *xb;  /* activation (quantized / bf16) */
    void *y;
} job;

static void job_launch(job *j, int c) {
    if (j->op == OP_FP8) TRY(dsv4_cuda_linear_fp8(ctx, j->xq, j->xs, j->M, j->K, j->w[c], j->ws[c], j->N, j->y, ERR));
    else if (j->op == OP_FP4) TRY(dsv4_cuda_linear_fp4(ctx, j->xq, j->xs, j->M, j->K, j->w[c], j->ws[c], j->N, j->y, ERR));
    else TRY(dsv4_cuda_linear_bf16(ctx, j->xb, j->M, j->K, j->w[c], j->N, j->y, DSV4_OUT_BF16, ERR));
}

static size_t job_wbytes(const job *j) {
    size_t n = (size_t)j->N, k = (size_t)j->K;
    if (j->op == OP_FP8) return n * k + (n / 128) * (k / 128);
    if (j->op == OP_FP4) return n * k / 2 + n * (k / 32);
    return n * k * 2;
}

static void job_init(job *j, enum op op, int M, int N, int K) {
    memset(j, 0, sizeof *j);
    j->op = op;
    j->M = M;
    j->N = N;
    j->K = K;
    size_t wb = job_wbytes(j);
    size_t need = 4 * ctx->l2_bytes;
    j->ncopy = (int)((need + wb - 1) / wb);
    if (j->ncopy < 2) j->ncopy = 2;
    if (j->ncopy > 64) j->ncopy = 64;
    j->w = calloc((size_t)j->ncopy, sizeof(void *));
    j->ws = calloc((size_t)j->ncopy, sizeof(void *));
    for (int c = 0; c < j->ncopy; c++) {
        if (op == OP_FP8) {
            j->w[c] = dalloc_rand((size_t)N * K, 1);
            j->ws[c] = dalloc_rand((size_t)(N / 128) * (K / 128), 3);
        } else if (op == OP_FP4) {
            j->w[c] = dalloc_rand((size_t)N * K / 2, 0);
            j->ws[c] = dalloc_rand((size_t)N * (K / 32), 3);
        } else {
            j->w[c] = dalloc_rand((size_t)N * K * 2, 2);
        }
    }
    j->xb = dalloc_rand((size_t)M * K * 2, 2);
    TRY(dsv4_cuda_alloc(ctx, (size_t)M * K, &j->xq, ERR));
    TRY(dsv4_cuda_alloc(ctx, (size_t)M * (K / 128), &j->xs, ERR));
    TRY(dsv4_cuda_act_quant_fp8(ctx, j->xb, M, K, j->xq, j->xs, ERR));
    TRY(dsv4_cuda_alloc(ctx, (size_t)M * N * 2, &j->y, ERR));
}

static void job_free(job *j) {
    for (int c = 0; c < j->ncopy; c++) {
        dsv4_cuda_free(ctx, j->w[c]);
        dsv4_cuda_free(ctx, j->ws[c]);
    }
    free(j->w);
    free(j->ws);
    dsv4_cuda_free(ctx, j->xb);
    dsv4_cuda_free(ctx, j->xq);
    dsv4_cuda_free(ctx, j->xs);
    dsv4_cuda_free(ctx, j->y);
}

/* Median time of one launch in microseconds: batches of `per` launches cycling the copies. */
static double job_time_us(job *j, int batches) {
    void *e0, *e1;
    TRY(dsv4_cuda_event_create(&e0, ERR));
    TRY(dsv4_cuda_event_create(&e1, ERR));
    int per = j->ncopy < 8 ? 8 : j->ncopy;
    for (int i = 0; i < per; i++) job_launch(j, i % j->ncopy); /* warm-up */
    float *t = malloc(sizeof(float) * (size_t)batches);
    for (int b = 0; b < batches; b++) {
        TRY(dsv4_cuda_event_record(ctx, e0, ERR));
        for (int i = 0; i < per; i++) job_launch(j, i % j->ncopy);
        TRY(dsv4_cuda_event_record(ctx, e1, ERR));
        TRY(dsv4_cuda_event_elapsed_ms(e0, e1, &t[b], ERR));
        t[b] = t[b] * 1000.0f / (float)per;
    }
    qsort(t, (size_t)batches, sizeof(float), cmpf);
    double med = t[batches / 2];
    free(t);
    dsv4_cuda_event_destroy(e0);
    dsv4_cuda_event_destroy(e1);
    return med;
}

static double memcpy_gbs(void) {
    size_t bytes = (size_t)1 << 30;
    void *a, *b, *e0, *e1;
    TRY(dsv4_cuda_alloc(ctx, bytes, &a, ERR));
    TRY(dsv4_cuda_alloc(ctx, bytes, &b, ERR));
    TRY(dsv4_cuda_memset(ctx, a, 0x5a, bytes, ERR));
    TRY(dsv4_cuda_event_create(&e0, ERR));
    TRY(dsv4_cuda_event_create(&e1, ERR));
    float t[11];
    TRY(dsv4_cuda_copy(ctx, b, a, bytes, ERR));
    for (int i = 0; i < 11; i++) {
        TRY(dsv4_cuda_event_record(ctx, e0, ERR));
        TRY(dsv4_cuda_copy(ctx, i & 1 ? a : b, i & 1 ? b : a, bytes, ERR));
        TRY(dsv4_cuda_event_record(ctx, e1, ERR));
        TRY(dsv4_cuda_event_elapsed_ms(e0, e1, &t[i], ERR));
    }
    qsort(t, 11, sizeof(float), cmpf);
    dsv4_cuda_event_destroy(e0);
    dsv4_cuda_event_destroy(e1);
    dsv4_cuda_free(ctx, a);
    dsv4_cuda_free(ctx, b);
    return 2.0 * (double)bytes / (t[5] * 1e-3) / 1e9;
}

typedef struct {
    const char *name;
    enum op op;
    int N, K;
} shape;

static const char *op_name[] = {"fp8", "fp4", "bf16(cublasLt)"};

int main(int argc, char **argv) {
    int quick = argc > 1 && strcmp(argv[1], "--quick") == 0;
    if (dsv4_cuda_device_count() == 0) {
        printf("SKIP: no CUDA device\n");
        return 0;
    }
    TRY(dsv4_cuda_ctx_create(0, 0, &ctx, ERR));
    char desc[256];
    dsv4_cuda_describe(ctx, desc, sizeof desc);
    printf("device: %s\n", desc);
    int batches = quick ? 9 : 21;

    double bw = memcpy_gbs();
    printf("csv,memcpy_d2d,GBps,%.1f\n", bw);
    printf("device-to-device cudaMemcpy: %.0f GB/s (read + write)\n\n", bw);

    /* ---- decode: weight streaming ---- */
    const shape dec[] = {
        {"wq_a", OP_FP8, 1024, 4096},          {"wq_b", OP_FP8, 32768, 1024},
        {"wkv", OP_FP8, 512, 4096},            {"wo_b", OP_FP8, 4096, 8192},
        {"shared.w1", OP_FP8, 2048, 4096},     {"shared.w2", OP_FP8, 4096, 2048},
        {"expert.w1", OP_FP4, 2048, 4096},     {"expert.w2", OP_FP4, 4096, 2048},
        {"gate(bf16)", OP_BF16, 256, 4096},    {"wo_b(bf16 peer)", OP_BF16, 4096, 8192},
    };
    const int decM[] = {1, 8};
    printf("DECODE (weight streaming)\n%-16s %-15s %4s %10s %10s %9s %8s  %s\n", "layer", "op", "M", "MB", "us", "GB/s",
           "/memcpy", "plan");
    for (size_t s = 0; s < sizeof dec / sizeof dec[0]; s++)
        for (int mi = 0; mi < 2; mi++) {
            job j;
            job_init(&j, dec[s].op, decM[mi], dec[s].N, dec[s].K);
            double us = job_time_us(&j, batches);
            double gbs = (double)job_wbytes(&j) / (us * 1e-6) / 1e9;
            dsv4_cuda_linear_plan pl;
            dsv4_cuda_linear_plan_get(ctx, j.M, j.K, j.N, j.op == OP_FP4, &pl);
            char plan[64];
            if (j.op == OP_BF16) snprintf(plan, sizeof plan, "cublasLt");
            else snprintf(plan, sizeof plan, "%s %dx%d splits %d ctas %d", pl.kernel ? "prefill" : "decode", pl.bm, pl.bn,
                          pl.splits, pl.ctas);
            printf("%-16s %-15s %4d %10.2f %10.2f %9.0f %8.3f  %s\n", dec[s].name, op_name[j.op], j.M,
                   job_wbytes(&j) / 1e6, us, gbs, gbs / bw, plan);
            printf("csv,decode,%s,%s,%d,%d,%d,%.3f,%.1f,%.4f\n", dec[s].name, op_name[j.op], j.M, j.N, j.K, us, gbs,
                   gbs / bw);
            fflush(stdout);
            job_free(&j);
        }

    /* ---- prefill: tensor-core throughput vs cuBLASLt BF16 ---- */
    const shape pre[] = {
        {"wq_b", OP_FP8, 32768, 1024},      {"wo_b", OP_FP8, 4096, 8192},
        {"shared.w1", OP_FP8, 2048, 4096},  {"wq_a", OP_FP8, 1024, 4096},
        {"expert.w1", OP_FP4, 2048, 4096},  {"expert.w2", OP_FP4, 4096, 2048},
    };
    const int preM[] = {512, 2048};
    printf("\nPREFILL (TFLOP/s = 2MNK/t; peer = cuBLASLt BF16 GEMM, same shape, same run)\n%-12s %-5s %5s %9s %8s %9s %8s "
           "%7s  %s\n",
           "layer", "op", "M", "us", "TFLOP/s", "bf16 us", "TFLOP/s", "ratio", "plan");
    for (size_t s = 0; s < sizeof pre / sizeof pre[0]; s++)
        for (int mi = 0; mi < 2; mi++) {
            if (quick && mi == 1) continue;
            job j, b;
            job_init(&j, pre[s].op, preM[mi], pre[s].N, pre[s].K);
            job_init(&b, OP_BF16, preM[mi], pre[s].N, pre[s].K);
            double us = job_time_us(&j, batches), ub = job_time_us(&b, batches);
            double fl = 2.0 * j.M * (double)j.N * j.K;
            double tf = fl / (us * 1e-6) / 1e12, tb = fl / (ub * 1e-6) / 1e12;
            dsv4_cuda_linear_plan pl;
            dsv4_cuda_linear_plan_get(ctx, j.M, j.K, j.N, j.op == OP_FP4, &pl);
            printf("%-12s %-5s %5d %9.1f %8.1f %9.1f %8.1f %7.3f  %s %dx%d splits %d\n", pre[s].name, op_name[j.op], j.M, us,
                   tf, ub, tb, tf / tb, pl.kernel ? "prefill" : "decode", pl.bm, pl.bn, pl.splits);
            printf("csv,prefill,%s,%s,%d,%d,%d,%.2f,%.1f,%.2f,%.1f,%.4f\n", pre[s].name, op_name[j.op], j.M, j.N, j.K, us, tf,
                   ub, tb, tf / tb);
            fflush(stdout);
            job_free(&j);
            job_free(&b);
        }

    /* ---- act_quant ---- */
    {
        int M = 2048, K = 4096;
        void *x = dalloc_rand((size_t)M * K * 2, 2), *q, *sc, *e0, *e1;
        TRY(dsv4_cuda_alloc(ctx, (size_t)M * K, &q, ERR));
        TRY(dsv4_cuda_alloc(ctx, (size_t)M * K / 128, &sc, ERR));
        TRY(dsv4_cuda_event_create(&e0, ERR));
        TRY(dsv4_cuda_event_create(&e1, ERR));
        float t[11];
        TRY(dsv4_cuda_act_quant_fp8(ctx, x, M, K, q, sc, ERR));
        for (int i = 0; i < 11; i++) {
            TRY(dsv4_cuda_event_record(ctx, e0, ERR));
            TRY(dsv4_cuda_act_quant_fp8(ctx, x, M, K, q, sc, ERR));
            TRY(dsv4_cuda_event_record(ctx, e1, ERR));
            TRY(dsv4_cuda_event_elapsed_ms(e0, e1, &t[i], ERR));
        }
        qsort(t, 11, sizeof(float), cmpf);
        double bytes = (double)M * K * 3 + (double)M * K / 128;
        printf("\nact_quant %dx%d: %.2f us, %.0f GB/s (%.3f of memcpy)\n", M, K, t[5] * 1e3, bytes / (t[5] * 1e-3) / 1e9,
               bytes / (t[5] * 1e-3) / 1e9 / bw);
        printf("csv,act_quant,%d,%d,%.3f,%.1f\n", M, K, t[5] * 1e3, bytes / (t[5] * 1e-3) / 1e9);
        dsv4_cuda_event_destroy(e0);
        dsv4_cuda_event_destroy(e1);
        dsv4_cuda_free(ctx, x);
        dsv4_cuda_free(ctx, q);
        dsv4_cuda_free(ctx, sc);
    }
    dsv4_cuda_ctx_destroy(ctx);
    return 0;
}
#endif
