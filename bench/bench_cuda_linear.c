/* bench_cuda_linear.c — speed of the CUDA linears (src/backend/cuda/cuda_linear.h) with ratios to peers
 * measured in the same run:
 *   decode (M = 1, 8, 16): weight-streaming GB/s (weight + scale bytes / time) and its ratio to the measured
 *     device-to-device cudaMemcpy bandwidth (bytes read + written / time), for the 16-row tile decode kernel
 *     (before) and the GEMV the launchers now pick for M <= 16 (after), in the same run;
 *   grouped MoE decode: all 6 routed experts' w1+w3 (12 GEMVs) and w2 (6 GEMVs) of a step, as separate
 *     launches and as one grouped GEMV launch;
 *   prefill (M = 32, 128, 512, 2048, 4096): TFLOP/s (2·M·N·K / time) of the own FP8/FP4 kernels and, for FP8,
 *     of cuBLASLt's block-scaled FP8 GEMM (dsv4_cuda_linear_fp8_lt, scales converted per call, and with the
 *     weight scales prepared at load), each with its ratio to cuBLASLt's BF16 GEMM of the same shape (FP32
 *     accumulation, BF16 out) and lt/own.
 * Timing: warm-up, then batches of launches that cycle over enough weight copies to exceed 4x the L2 (so
 * every launch streams its weights from HBM), CUDA events around each batch, median of the batches.
 * Inputs are random, never zeros. Output: one CSV line per measurement ("csv,...") and a table.
 * Usage: bench_cuda_linear [--quick]; DSV4_BENCH_DECODE_ONLY=1 stops after the decode sections,
 * DSV4_BENCH_PREFILL_ONLY=1 skips them (prefill table and act_quant only).
 * Without CUDA (or a device) it prints SKIP and exits 0. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/numfmt.h"
#include "dsv4_bench.h"

#ifndef DSV4_HAVE_CUDA
int main(void) {
    printf("SKIP: built without CUDA\n");
    return 0;
}
#else
#include "backend/cuda/cuda_linear.h"
#include "backend/cuda/gemv.h"

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
    int kernel;          /* FP8/FP4: -1 automatic, 0 tile decode kernel, 2 GEMV, 3 cuBLASLt FP8 (dsv4_cuda_linear_q_kernel) */
    int group;           /* > 0: grouped GEMV of `group` GEMVs (w, ws = [ncopy] device descriptor tables) */
    int gsep;            /* grouped, "before": `group` separate launches of `kernel` instead of one launch */
    dsv4_cuda_gemv_desc *hdesc; /* grouped: host copy of the tables [ncopy][group] */
    int nexp;            /* grouped: distinct experts allocated */
    void **ew, **ews;    /* grouped: [nexp] expert weights */
    void **gy;           /* grouped: [group] outputs */
    int ncopy;
    void **w, **ws;      /* [ncopy] weight copies */
    void *xq, *xs, *xb;  /* activation (quantized / bf16) */
    void *y;
} job;

static void job_launch(job *j, int c) {
    if (j->group > 0 && !j->gsep) {
        TRY(dsv4_cuda_gemv_grouped(ctx, j->op == OP_FP4, j->w[c], j->group, j->M, j->K, j->N, ERR));
    } else if (j->group > 0) {
        for (int i = 0; i < j->group; i++) {
            const dsv4_cuda_gemv_desc *d = &j->hdesc[(size_t)c * j->group + i];
            TRY(dsv4_cuda_linear_q_kernel(ctx, j->op == OP_FP4, j->kernel, d->xq, d->xs, d->m, j->K, d->w, d->ws, j->N,
                                          d->y, ERR));
        }
    } else if (j->op == OP_FP8 || j->op == OP_FP4) {
        TRY(dsv4_cuda_linear_q_kernel(ctx, j->op == OP_FP4, j->kernel, j->xq, j->xs, j->M, j->K, j->w[c], j->ws[c], j->N,
                                      j->y, ERR));
    } else {
        TRY(dsv4_cuda_linear_bf16(ctx, j->xb, j->M, j->K, j->w[c], j->N, j->y, DSV4_OUT_BF16, ERR));
    }
}

static size_t job_wbytes(const job *j) {
    size_t n = (size_t)j->N, k = (size_t)j->K, g = j->group > 0 ? (size_t)j->group : 1;
    if (j->op == OP_FP8) return g * (n * k + (n / 128) * (k / 128));
    if (j->op == OP_FP4) return g * (n * k / 2 + n * (k / 32));
    return n * k * 2;
}

static void job_init(job *j, enum op op, int M, int N, int K) {
    memset(j, 0, sizeof *j);
    j->op = op;
    j->M = M;
    j->N = N;
    j->K = K;
    j->kernel = -1;
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

/* Grouped job: `group` GEMVs (M rows each) per launch over distinct experts; `ncopy` descriptor tables pick
 * different experts so that consecutive launches stream from HBM (the experts rotate beyond 4x L2). */
static void job_init_grouped(job *j, enum op op, int group, int M, int N, int K) {
    memset(j, 0, sizeof *j);
    j->op = op;
    j->M = M;
    j->N = N;
    j->K = K;
    j->kernel = -1;
    j->group = group;
    size_t wb = job_wbytes(j); /* bytes per launch */
    j->ncopy = (int)((4 * ctx->l2_bytes + wb - 1) / wb) + 1;
    if (j->ncopy < 4) j->ncopy = 4;
    j->nexp = j->ncopy * group;
    j->ew = calloc((size_t)j->nexp, sizeof(void *));
    j->ews = calloc((size_t)j->nexp, sizeof(void *));
    for (int e = 0; e < j->nexp; e++) {
        if (op == OP_FP8) {
            j->ew[e] = dalloc_rand((size_t)N * K, 1);
            j->ews[e] = dalloc_rand((size_t)(N / 128) * (K / 128), 3);
        } else {
            j->ew[e] = dalloc_rand((size_t)N * K / 2, 0);
            j->ews[e] = dalloc_rand((size_t)N * (K / 32), 3);
        }
    }
    j->xb = dalloc_rand((size_t)M * K * 2, 2);
    TRY(dsv4_cuda_alloc(ctx, (size_t)M * K, &j->xq, ERR));
    TRY(dsv4_cuda_alloc(ctx, (size_t)M * (K / 128), &j->xs, ERR));
    TRY(dsv4_cuda_act_quant_fp8(ctx, j->xb, M, K, j->xq, j->xs, ERR));
    j->gy = calloc((size_t)group, sizeof(void *));
    for (int i = 0; i < group; i++) TRY(dsv4_cuda_alloc(ctx, (size_t)M * N * 2, &j->gy[i], ERR));
    j->hdesc = calloc((size_t)j->ncopy * group, sizeof *j->hdesc);
    j->w = calloc((size_t)j->ncopy, sizeof(void *));
    for (int c = 0; c < j->ncopy; c++) {
        dsv4_cuda_gemv_desc *d = &j->hdesc[(size_t)c * group];
        for (int i = 0; i < group; i++) {
            int e = (c * group + i * 7) % j->nexp; /* scattered expert ids */
            d[i].w = j->ew[e];
            d[i].ws = j->ews[e];
            d[i].xq = j->xq;
            d[i].xs = j->xs;
            d[i].y = j->gy[i];
            d[i].m = M;
        }
        TRY(dsv4_cuda_alloc(ctx, (size_t)group * sizeof *d, &j->w[c], ERR));
        TRY(dsv4_cuda_upload(ctx, j->w[c], d, (size_t)group * sizeof *d, ERR));
    }
}

static void job_free(job *j) {
    if (j->group > 0) {
        for (int e = 0; e < j->nexp; e++) {
            dsv4_cuda_free(ctx, j->ew[e]);
            dsv4_cuda_free(ctx, j->ews[e]);
        }
        for (int c = 0; c < j->ncopy; c++) dsv4_cuda_free(ctx, j->w[c]);
        for (int i = 0; i < j->group; i++) dsv4_cuda_free(ctx, j->gy[i]);
        free(j->ew);
        free(j->ews);
        free(j->w);
        free(j->gy);
        free(j->hdesc);
        dsv4_cuda_free(ctx, j->xb);
        dsv4_cuda_free(ctx, j->xq);
        dsv4_cuda_free(ctx, j->xs);
        return;
    }
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

/* Median time of one launch in microseconds: batches of `per` launches cycling the copies, enqueued one by
 * one on the stream (graph = 0) or captured once into a CUDA graph that each batch replays (graph = 1: no
 * host launch cost, as in the engine's graph-captured decode step). */
static double job_time_us_g(job *j, int batches, int graph) {
    void *e0, *e1, *exec = NULL;
    TRY(dsv4_cuda_event_create(&e0, ERR));
    TRY(dsv4_cuda_event_create(&e1, ERR));
    int per = j->ncopy < 8 ? 8 : j->ncopy;
    if (per < 16 && graph) per = 16;
    for (int i = 0; i < per; i++) job_launch(j, i % j->ncopy); /* warm-up */
    if (graph) {
        TRY(dsv4_glue_capture_begin(ctx, ERR));
        for (int i = 0; i < per; i++) job_launch(j, i % j->ncopy);
        TRY(dsv4_glue_capture_end(ctx, 1, &exec, ERR));
        TRY(dsv4_glue_graph_launch(ctx, exec, ERR));
    }
    float *t = malloc(sizeof(float) * (size_t)batches);
    for (int b = 0; b < batches; b++) {
        TRY(dsv4_cuda_event_record(ctx, e0, ERR));
        if (graph) TRY(dsv4_glue_graph_launch(ctx, exec, ERR));
        else
            for (int i = 0; i < per; i++) job_launch(j, i % j->ncopy);
        TRY(dsv4_cuda_event_record(ctx, e1, ERR));
        TRY(dsv4_cuda_event_elapsed_ms(e0, e1, &t[b], ERR));
        t[b] = t[b] * 1000.0f / (float)per;
    }
    dsv4_glue_graph_destroy(exec);
    qsort(t, (size_t)batches, sizeof(float), cmpf);
    double med = t[batches / 2];
    free(t);
    dsv4_cuda_event_destroy(e0);
    dsv4_cuda_event_destroy(e1);
    return med;
}
static double job_time_us(job *j, int batches) { return job_time_us_g(j, batches, 0); }

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

    double bw = 0.0;
    TRY(dsv4_bench_cuda_copy_gbps(0, &bw, ERR));   /* the copy ceiling of dsv4 bench (include/dsv4_bench.h) */
    printf("csv,memcpy_d2d,GBps,%.1f\n", bw);
    printf("device-to-device cudaMemcpy: %.0f GB/s (read + write)\n\n", bw);

    const int prefill_only = getenv("DSV4_BENCH_PREFILL_ONLY") != NULL;
    /* ---- decode: weight streaming; "before" = the 16-row tile decode kernel (kernel 0), "after" = what the
     * launcher picks for M <= 16 (the GEMV, gemv.h), both in this run ---- */
    const shape dec[] = {
        {"wq_a", OP_FP8, 1024, 4096},          {"wq_b", OP_FP8, 32768, 1024},
        {"wkv", OP_FP8, 512, 4096},            {"wo_b", OP_FP8, 4096, 8192},
        {"shared.w1", OP_FP8, 2048, 4096},     {"shared.w2", OP_FP8, 4096, 2048},
        {"expert.w1", OP_FP4, 2048, 4096},     {"expert.w2", OP_FP4, 4096, 2048},
        {"gate(bf16)", OP_BF16, 256, 4096},    {"wo_b(bf16 peer)", OP_BF16, 4096, 8192},
    };
    const int decM[] = {1, 8, 16};
    const int ndecM = quick ? 2 : 3;
    printf("DECODE (weight streaming; tile = 16-row tile decode kernel, gemv = new default for M <= 16;\n"
           "        stream = launches enqueued one by one, graph = the same launches replayed from a CUDA graph)\n"
           "%-16s %-5s %3s %7s | %-21s | %-21s | %-21s | %-21s | %s\n",
           "layer", "op", "M", "MB", "tile stream us  ratio", "tile graph us   ratio", "gemv stream us  ratio",
           "gemv graph us   ratio", "gemv plan");
    for (size_t s = 0; s < (prefill_only ? 0 : sizeof dec / sizeof dec[0]); s++)
        for (int mi = 0; mi < ndecM; mi++) {
            job j;
            job_init(&j, dec[s].op, decM[mi], dec[s].N, dec[s].K);
            double mb = job_wbytes(&j) / 1e6;
            if (j.op == OP_BF16) {
                double us = job_time_us(&j, batches), gbs = (double)job_wbytes(&j) / (us * 1e-6) / 1e9;
                double ug = job_time_us_g(&j, batches, 1), ggs = (double)job_wbytes(&j) / (ug * 1e-6) / 1e9;
                printf("%-16s %-5s %3d %7.2f | %21s | %21s | %8.2f %5.0f %6.3f | %8.2f %5.0f %6.3f | cublasLt\n",
                       dec[s].name, "bf16", j.M, mb, "", "", us, gbs, gbs / bw, ug, ggs, ggs / bw);
                printf("csv,decode,%s,%s,%d,%d,%d,%.3f,%.1f,%.4f\n", dec[s].name, op_name[j.op], j.M, j.N, j.K, us, gbs,
                       gbs / bw);
            } else {
                double by = (double)job_wbytes(&j), t[4];
                for (int v = 0; v < 4; v++) {
                    j.kernel = v < 2 ? 0 : -1;
                    t[v] = job_time_us_g(&j, batches, v & 1);
                }
#define R_(v) by / (t[v] * 1e-6) / 1e9 / bw
                dsv4_cuda_gemv_plan gp;
                dsv4_cuda_gemv_plan_get(ctx, 1, j.M, j.K, j.N, j.op == OP_FP4, &gp);
                printf("%-16s %-5s %3d %7.2f | %8.2f %5.0f %6.3f | %8.2f %5.0f %6.3f | %8.2f %5.0f %6.3f | %8.2f %5.0f "
                       "%6.3f | %d rows/CTA, ks %d, splits %d, kpw %d, %d CTAs\n",
                       dec[s].name, op_name[j.op], j.M, mb, t[0], R_(0) * bw, R_(0), t[1], R_(1) * bw, R_(1), t[2],
                       R_(2) * bw, R_(2), t[3], R_(3) * bw, R_(3), gp.rows, gp.ks, gp.splits, gp.kpw, gp.ctas);
                printf("csv,decode,%s,%s,%d,%d,%d,tile_stream,%.3f,%.4f,tile_graph,%.3f,%.4f,gemv_stream,%.3f,%.4f,"
                       "gemv_graph,%.3f,%.4f\n",
                       dec[s].name, op_name[j.op], j.M, j.N, j.K, t[0], R_(0), t[1], R_(1), t[2], R_(2), t[3], R_(3));
#undef R_
            }
            fflush(stdout);
            job_free(&j);
        }

    /* ---- grouped MoE decode: k = 6 routed experts; w1+w3 = 12 GEMVs [2048,4096], w2 = 6 GEMVs [4096,2048];
     * before = one launch per GEMV (tile kernel, and GEMV), after = one grouped launch ---- */
    {
        const struct { const char *name; int group, N, K; } grp[] = {
            {"6x(w1,w3) fp4", 12, 2048, 4096}, {"6x w2 fp4", 6, 4096, 2048}};
        printf("\nGROUPED MoE DECODE (all routed experts of a step; MB = weight + scale bytes per step)\n"
               "%-15s %3s %7s | %9s %6s | %9s %6s | %9s %6s | %9s %6s | %9s %7s %6s | %s\n",
               "experts", "m", "MB", "tile x G", "ratio", "gemv x G", "ratio", "(graph)", "ratio", "grouped", "ratio",
               "(graph)", "GB/s", "ratio", "plan");
        for (size_t gidx = 0; gidx < (prefill_only ? 0u : 2u); gidx++)
            for (int mi = 0; mi < 2; mi++) {
                int m = mi ? 8 : 1;
                job j;
                job_init_grouped(&j, OP_FP4, grp[gidx].group, m, grp[gidx].N, grp[gidx].K);
                double by = (double)job_wbytes(&j);
                j.gsep = 1;
                j.kernel = 0;
                double ut = job_time_us(&j, batches);
                j.kernel = 2;
                double us2 = job_time_us(&j, batches);
                double us2g = job_time_us_g(&j, batches, 1);
                j.gsep = 0;
                double ug0 = job_time_us(&j, batches);
                double ug = job_time_us_g(&j, batches, 1);
                double gt = by / (ut * 1e-6) / 1e9, gs = by / (us2 * 1e-6) / 1e9, gsg = by / (us2g * 1e-6) / 1e9;
                double gg0 = by / (ug0 * 1e-6) / 1e9, gg = by / (ug * 1e-6) / 1e9;
                dsv4_cuda_gemv_plan gp;
                dsv4_cuda_gemv_plan_get(ctx, j.group, m, j.K, j.N, 1, &gp);
                printf("%-15s %3d %7.2f | %7.2fus %6.3f | %7.2fus %6.3f | %7.2fus %6.3f | %7.2fus %6.3f | %7.2fus %7.0f "
                       "%6.3f | ks %d, splits %d, kpw %d, %d CTAs\n",
                       grp[gidx].name, m, by / 1e6, ut, gt / bw, us2, gs / bw, us2g, gsg / bw, ug0, gg0 / bw, ug, gg,
                       gg / bw, gp.ks, gp.splits, gp.kpw, gp.ctas);
                printf("csv,grouped,%s,%d,%d,%d,%d,tile_stream,%.3f,%.4f,gemv_sep_stream,%.3f,%.4f,gemv_sep_graph,%.3f,"
                       "%.4f,grouped_stream,%.3f,%.4f,grouped_graph,%.3f,%.4f\n",
                       grp[gidx].name, j.group, m, j.N, j.K, ut, gt / bw, us2, gs / bw, us2g, gsg / bw, ug0, gg0 / bw, ug,
                       gg / bw);
                fflush(stdout);
                job_free(&j);
            }
    }

    if (getenv("DSV4_BENCH_DECODE_ONLY")) {
        dsv4_cuda_ctx_destroy(ctx);
        return 0;
    }
    /* ---- prefill: tensor-core throughput; FP8 = own mma.sync kernel (what the launcher picks by default) next
     * to cuBLASLt's block-scaled FP8 GEMM (kernel 3: scales converted per call; "prep" = weight scales prepared
     * at load, only the activation scales converted per call), peer = cuBLASLt BF16 GEMM, all in this run ---- */
    const shape pre[] = {
        {"wq_b", OP_FP8, 32768, 1024},      {"wo_b", OP_FP8, 4096, 8192},
        {"shared.w1", OP_FP8, 2048, 4096},  {"shared.w2", OP_FP8, 4096, 2048},
        {"wq_a", OP_FP8, 1024, 4096},       {"wkv", OP_FP8, 512, 4096},
        {"expert.w1", OP_FP4, 2048, 4096},  {"expert.w2", OP_FP4, 4096, 2048},
    };
    const int preM[] = {32, 128, 512, 2048, 4096};
    printf("\nPREFILL (TFLOP/s = 2MNK/t; own = mma.sync kernel the launcher picks by default, lt = cuBLASLt block-scaled "
           "FP8,\n         lt prep = lt with the weight scales prepared at load; bf16 = cuBLASLt BF16 GEMM peer; same run)\n"
           "%-10s %-4s %5s | %8s %7s | %8s %7s | %8s %7s | %8s %7s | %7s %7s %7s  %s\n",
           "layer", "op", "M", "own us", "TFLOP/s", "lt us", "TFLOP/s", "prep us", "TFLOP/s", "bf16 us", "TFLOP/s",
           "lt/own", "own/bf", "lt/bf", "own plan");
    for (size_t s = 0; s < sizeof pre / sizeof pre[0]; s++)
        for (int mi = 0; mi < 5; mi++) {
            if (quick && preM[mi] != 512) continue;
            job j, b;
            job_init(&j, pre[s].op, preM[mi], pre[s].N, pre[s].K);
            job_init(&b, OP_BF16, preM[mi], pre[s].N, pre[s].K);
            double us = job_time_us(&j, batches), ub = job_time_us(&b, batches), ul = -1, up = -1;
            if (j.op == OP_FP8) {
                j.kernel = 3;
                ul = job_time_us(&j, batches);
                for (int c = 0; c < j.ncopy; c++) TRY(dsv4_cuda_linear_fp8_lt_prepare(ctx, j.ws[c], j.N, j.K, ERR));
                up = job_time_us(&j, batches);
                for (int c = 0; c < j.ncopy; c++) dsv4_cuda_linear_fp8_lt_release(ctx, j.ws[c]);
                j.kernel = -1;
            }
            double fl = 2.0 * j.M * (double)j.N * j.K;
#define TF_(t) ((t) > 0 ? fl / ((t) * 1e-6) / 1e12 : 0.0)
            dsv4_cuda_linear_plan pl;
            dsv4_cuda_linear_plan_get(ctx, j.M, j.K, j.N, j.op == OP_FP4, &pl);
            const char *pk = pl.kernel == 2 ? "gemv" : pl.kernel == 1 ? "prefill" : "decode";
            if (j.op == OP_FP8)
                printf("%-10s %-4s %5d | %8.1f %7.1f | %8.1f %7.1f | %8.1f %7.1f | %8.1f %7.1f | %7.3f %7.3f %7.3f  %s %dx%d "
                       "splits %d\n",
                       pre[s].name, op_name[j.op], j.M, us, TF_(us), ul, TF_(ul), up, TF_(up), ub, TF_(ub), us / ul,
                       TF_(us) / TF_(ub), TF_(ul) / TF_(ub), pk, pl.bm, pl.bn, pl.splits);
            else
                printf("%-10s %-4s %5d | %8.1f %7.1f | %8s %7s | %8s %7s | %8.1f %7.1f | %7s %7.3f %7s  %s %dx%d splits %d\n",
                       pre[s].name, op_name[j.op], j.M, us, TF_(us), "-", "-", "-", "-", ub, TF_(ub), "-",
                       TF_(us) / TF_(ub), "-", pk, pl.bm, pl.bn, pl.splits);
            printf("csv,prefill,%s,%s,%d,%d,%d,own,%.2f,%.1f,lt,%.2f,%.1f,lt_prep,%.2f,%.1f,bf16,%.2f,%.1f\n", pre[s].name,
                   op_name[j.op], j.M, j.N, j.K, us, TF_(us), ul, TF_(ul), up, TF_(up), ub, TF_(ub));
#undef TF_
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
