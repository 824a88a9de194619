/* bench_cuda_moe.c — speed of the routed experts of one MoE layer at V4-Flash shapes (D 4096, I 2048, FP4
 * experts, top-6), the two CUDA paths in the same run:
 *   scalar  — what the engine runs by default: dsv4_glue_moe_expert for w1, w3 (one GEMV per (row, slot)
 *             pair), dsv4_cuda_swiglu, dsv4_cuda_act_quant_fp8, dsv4_glue_moe_expert for w2;
 *   grouped — cuda_moe.h: dsv4_cuda_moe_sort + dsv4_cuda_moe_experts (DSV4_CUDA_MOE=grouped in the engine).
 * Rows 1, 8, 32 (decode: each step captured in a CUDA graph and replayed, as the engine's decode step) and
 * 512, 4096 (prefill passes, enqueued on the stream). Reported per layer step: µs; the bytes the step must
 * read (the distinct experts its rows selected × their weight + scale bytes) over the time, and that
 * bandwidth's ratio to the device-to-device cudaMemcpy bandwidth measured in the same run; TFLOP/s =
 * 2·pairs·3·D·I / time; and the agreement of the two paths' outputs (rel-L2; both are op-tested against the
 * CPU, test_cuda_moe / test_cuda_linear).
 * Timing: routing drawn uniformly over the E experts, 4 routing sets cycled so that consecutive steps touch
 * other experts; the expert pool (E × 12.6 MB) is far above the L2. Warm-up, CUDA events, median of batches.
 * Usage: bench_cuda_moe [E] (routed experts on the device, default 64). Without CUDA or a device: SKIP. */
#include <math.h>
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
#include "backend/cuda/cuda_moe.h"
#include "backend/cuda/cuda_moe_pairs.h"
#include "backend/cuda/ops_cuda.h"

#define D_ 4096
#define I_ 2048
#define K_ 6
#define NCOPY 4
#define RMAX 4096

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
        e_.msg[0] = 0;                                                                     \
        dsv4_status st_ = (call);                                                          \
        if (st_ != DSV4_OK) {                                                              \
            fprintf(stderr, "FATAL %s:%d: %s -> %s: %s\n", __FILE__, __LINE__, #call,      \
                    dsv4_status_name(st_), e_.msg);                                        \
            exit(1);                                                                       \
        }                                                                                  \
    } while (0)
#define ERR (&e_)

static void *dalloc(size_t bytes) {
    void *p = NULL;
    TRY(dsv4_cuda_alloc(ctx, bytes, &p, ERR));
    return p;
}

/* device buffer of random bytes (scales: e8m0 in [118, 126]) */
static void *dalloc_rand(size_t bytes, int scales) {
    uint8_t *h = malloc(bytes);
    if (!h) exit(1);
    for (size_t i = 0; i < bytes; i++) h[i] = scales ? (uint8_t)(118 + rnd() % 9) : (uint8_t)rnd();
    void *d = dalloc(bytes);
    TRY(dsv4_cuda_upload(ctx, d, h, bytes, ERR));
    free(h);
    return d;
}

static int cmpf(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return x < y ? -1 : x > y;
}

typedef struct {
    int E;
    uint8_t *w1, *w3, *w2, *s1, *s3, *s2;       /* stacked [E][...] */
    size_t w13b, s13b, w2b, s2b;
    uint8_t *xq, *xs;                           /* [RMAX, D] act-quantized input */
    int32_t *ids[NCOPY];                        /* [RMAX·k] routing sets */
    float *rw[NCOPY];
    uint16_t *eg, *eu, *ey;                     /* [RMAX·k, I], [RMAX·k, I], [RMAX·k, D] */
    uint8_t *aq2, *as2, *ws;
    int distinct[NCOPY][5];                     /* distinct experts touched per routing set and row count */
} bench;

static const int rows_list[5] = {1, 8, 32, 512, 4096};

static void step(bench *b, int grouped, int copy, int rows) {
    const int pairs = rows * K_;
    if (grouped) {
        dsv4_cuda_moe_layout lay;
        dsv4_cuda_moe_layout_init(b->ws, pairs, b->E, 0, &lay);
        TRY(dsv4_cuda_moe_sort(ctx, b->ids[copy], 0, &lay, b->ey, D_, ERR));
        dsv4_cuda_moe_params p;
        memset(&p, 0, sizeof p);
        p.k = K_;
        p.D = D_;
        p.I = I_;
        p.swiglu_limit = 10.0f;
        p.xq = b->xq;
        p.xs = b->xs;
        p.route_w = b->rw[copy];
        dsv4_cuda_moe_weights w1 = {b->w1, b->s1, b->w13b, b->s13b, 1}, w3 = {b->w3, b->s3, b->w13b, b->s13b, 1};
        dsv4_cuda_moe_weights w2 = {b->w2, b->s2, b->w2b, b->s2b, 1};
        p.w1 = w1;
        p.w3 = w3;
        p.w2 = w2;
        p.h = b->eg;
        p.hq = b->aq2;
        p.hs = b->as2;
        p.y = b->ey;
        TRY(dsv4_cuda_moe_experts(ctx, &lay, &p, ERR));
    } else {
        TRY(dsv4_glue_moe_expert(ctx, b->xq, b->xs, D_, K_, b->ids[copy], 0, b->E, pairs, b->w1, b->s1, b->w13b,
                                 b->s13b, 1, I_, b->eg, ERR));
        TRY(dsv4_glue_moe_expert(ctx, b->xq, b->xs, D_, K_, b->ids[copy], 0, b->E, pairs, b->w3, b->s3, b->w13b,
                                 b->s13b, 1, I_, b->eu, ERR));
        TRY(dsv4_cuda_swiglu(ctx, b->eg, b->eu, I_, pairs, I_, 10.0f, b->rw[copy], b->eg, I_, ERR));
        TRY(dsv4_cuda_act_quant_fp8(ctx, b->eg, pairs, I_, b->aq2, b->as2, ERR));
        TRY(dsv4_glue_moe_expert(ctx, b->aq2, b->as2, I_, 1, b->ids[copy], 0, b->E, pairs, b->w2, b->s2, b->w2b,
                                 b->s2b, 1, D_, b->ey, ERR));
    }
}

/* median µs of one step (graph: `per` steps captured once, replayed per batch) */
static double time_us(bench *b, int grouped, int rows, int graph, int per, int batches) {
    void *e0, *e1, *exec = NULL;
    TRY(dsv4_cuda_event_create(&e0, ERR));
    TRY(dsv4_cuda_event_create(&e1, ERR));
    for (int i = 0; i < per; i++) step(b, grouped, i % NCOPY, rows); /* warm-up */
    if (graph) {
        TRY(dsv4_glue_capture_begin(ctx, ERR));
        for (int i = 0; i < per; i++) step(b, grouped, i % NCOPY, rows);
        TRY(dsv4_glue_capture_end(ctx, 1, &exec, ERR));
        TRY(dsv4_glue_graph_launch(ctx, exec, ERR));
    }
    float t[16];
    if (batches > 16) batches = 16;
    for (int bt = 0; bt < batches; bt++) {
        TRY(dsv4_cuda_event_record(ctx, e0, ERR));
        if (graph) TRY(dsv4_glue_graph_launch(ctx, exec, ERR));
        else
            for (int i = 0; i < per; i++) step(b, grouped, i % NCOPY, rows);
        TRY(dsv4_cuda_event_record(ctx, e1, ERR));
        TRY(dsv4_cuda_event_elapsed_ms(e0, e1, &t[bt], ERR));
        t[bt] = t[bt] * 1000.0f / (float)per;
    }
    dsv4_glue_graph_destroy(exec);
    dsv4_cuda_event_destroy(e0);
    dsv4_cuda_event_destroy(e1);
    qsort(t, (size_t)batches, sizeof(float), cmpf);
    return t[batches / 2];
}

/* rel-L2 between the two paths' y for routing set 0 at `rows` rows */
static double agreement(bench *b, int rows) {
    const size_t n = (size_t)rows * K_ * D_;
    uint16_t *ya = malloc(n * 2), *yb = malloc(n * 2);
    if (!ya || !yb) exit(1);
    step(b, 0, 0, rows);
    TRY(dsv4_cuda_download(ctx, ya, b->ey, n * 2, ERR));
    step(b, 1, 0, rows);
    TRY(dsv4_cuda_download(ctx, yb, b->ey, n * 2, ERR));
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double a = dsv4_bf16_to_f32(ya[i]), c = dsv4_bf16_to_f32(yb[i]);
        num += (a - c) * (a - c);
        den += a * a;
    }
    free(ya);
    free(yb);
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

int main(int argc, char **argv) {
    if (dsv4_cuda_device_count() == 0) {
        printf("SKIP: no CUDA device\n");
        return 0;
    }
    dsv4_err err;
    if (dsv4_cuda_ctx_create(0, 0, &ctx, &err) != DSV4_OK) {
        printf("SKIP: no usable CUDA device (%s)\n", err.msg);
        return 0;
    }
    bench b;
    memset(&b, 0, sizeof b);
    b.E = argc > 1 ? atoi(argv[1]) : 64;
    if (b.E < K_ || b.E > DSV4_CUDA_MOE_MAX_EXPERTS) {
        fprintf(stderr, "bench_cuda_moe: E must be in [%d, %d]\n", K_, DSV4_CUDA_MOE_MAX_EXPERTS);
        return 2;
    }
    char desc[256];
    dsv4_cuda_describe(ctx, desc, sizeof desc);
    printf("device: %s\n", desc);
    b.w13b = (size_t)I_ * D_ / 2;
    b.s13b = (size_t)I_ * (D_ / 32);
    b.w2b = (size_t)D_ * I_ / 2;
    b.s2b = (size_t)D_ * (I_ / 32);
    const double expert_bytes = 2.0 * (double)(b.w13b + b.s13b) + (double)(b.w2b + b.s2b);
    b.w1 = dalloc_rand(b.w13b * b.E, 0);
    b.w3 = dalloc_rand(b.w13b * b.E, 0);
    b.w2 = dalloc_rand(b.w2b * b.E, 0);
    b.s1 = dalloc_rand(b.s13b * b.E, 1);
    b.s3 = dalloc_rand(b.s13b * b.E, 1);
    b.s2 = dalloc_rand(b.s2b * b.E, 1);
    {
        uint16_t *xh = malloc(sizeof(uint16_t) * RMAX * D_);
        if (!xh) exit(1);
        for (size_t i = 0; i < (size_t)RMAX * D_; i++)
            xh[i] = dsv4_f32_to_bf16((float)(((double)(rnd() % 2001) - 1000.0) / 1000.0 + 1e-3));
        uint16_t *xd = dalloc(sizeof(uint16_t) * RMAX * D_);
        TRY(dsv4_cuda_upload(ctx, xd, xh, sizeof(uint16_t) * RMAX * D_, ERR));
        b.xq = dalloc((size_t)RMAX * D_);
        b.xs = dalloc((size_t)RMAX * D_ / 128);
        TRY(dsv4_cuda_act_quant_fp8(ctx, xd, RMAX, D_, b.xq, b.xs, ERR));
        TRY(dsv4_cuda_sync(ctx, ERR));
        dsv4_cuda_free(ctx, xd);
        free(xh);
    }
    {
        int32_t *ih = malloc(sizeof(int32_t) * RMAX * K_);
        float *wh = malloc(sizeof(float) * RMAX * K_);
        if (!ih || !wh) exit(1);
        for (int c = 0; c < NCOPY; c++) {
            for (int r = 0; r < RMAX; r++)
                for (int j = 0; j < K_; j++) {
                    int e, dup;
                    do {
                        e = (int)(rnd() % (uint64_t)b.E);
                        dup = 0;
                        for (int jj = 0; jj < j; jj++) dup |= ih[r * K_ + jj] == e;
                    } while (dup);
                    ih[r * K_ + j] = e;
                    wh[r * K_ + j] = (float)(0.1 + (double)(rnd() % 1000) / 1000.0);
                }
            for (int ri = 0; ri < 5; ri++) {
                char seen[DSV4_CUDA_MOE_MAX_EXPERTS] = {0};
                int nd = 0;
                for (int p = 0; p < rows_list[ri] * K_; p++)
                    if (!seen[ih[p]]) {
                        seen[ih[p]] = 1;
                        nd++;
                    }
                b.distinct[c][ri] = nd;
            }
            b.ids[c] = dalloc(sizeof(int32_t) * RMAX * K_);
            b.rw[c] = dalloc(sizeof(float) * RMAX * K_);
            TRY(dsv4_cuda_upload(ctx, b.ids[c], ih, sizeof(int32_t) * RMAX * K_, ERR));
            TRY(dsv4_cuda_upload(ctx, b.rw[c], wh, sizeof(float) * RMAX * K_, ERR));
        }
        free(ih);
        free(wh);
    }
    b.eg = dalloc(sizeof(uint16_t) * RMAX * K_ * I_);
    b.eu = dalloc(sizeof(uint16_t) * RMAX * K_ * I_);
    b.ey = dalloc(sizeof(uint16_t) * RMAX * K_ * D_);
    b.aq2 = dalloc((size_t)RMAX * K_ * I_);
    b.as2 = dalloc((size_t)RMAX * K_ * I_ / 128);
    b.ws = dalloc(dsv4_cuda_moe_layout_bytes(RMAX * K_, b.E));

    double bw = 0.0;
    TRY(dsv4_bench_cuda_copy_gbps(0, &bw, ERR));   /* the copy ceiling of dsv4 bench (include/dsv4_bench.h) */
    printf("memcpy d2d: %.0f GB/s; experts E=%d (pool %.2f GB), k=%d, D=%d, I=%d, FP4\n", bw, b.E,
           expert_bytes * b.E / 1e9, K_, D_, I_);
    printf("csv,memcpy_d2d,GBps,%.1f\n", bw);
    printf("%6s %8s | %12s %12s | %9s %9s %7s | %7s %7s | %s\n", "rows", "experts", "scalar us", "grouped us",
           "MB/step", "GB/s", "ratio", "TFLOP/s", "speedup", "grouped plan; y rel-L2 scalar vs grouped");
    for (int ri = 0; ri < 5; ri++) {
        const int rows = rows_list[ri], graph = rows <= 32;
        double nd = 0;
        for (int c = 0; c < NCOPY; c++) nd += b.distinct[c][ri];
        nd /= NCOPY;
        const int slow = rows >= 4096;
        double ts = time_us(&b, 0, rows, graph, graph ? 16 : (slow ? 1 : 4), slow ? 3 : 9);
        double tg = time_us(&b, 1, rows, graph, graph ? 16 : 4, 9);
        double mb = nd * expert_bytes / 1e6, gbs = nd * expert_bytes / (tg * 1e-6) / 1e9;
        double tflops = 2.0 * rows * K_ * 3.0 * D_ * I_ / (tg * 1e-6) / 1e12;
        dsv4_cuda_moe_layout lay;
        dsv4_cuda_moe_plan pl;
        dsv4_cuda_moe_layout_init(b.ws, rows * K_, b.E, 0, &lay);
        dsv4_cuda_moe_plan_get(&lay, D_, I_, &pl);
        double agree = agreement(&b, rows);
        printf("%6d %8.1f | %12.1f %12.1f | %9.1f %9.0f %7.3f | %7.1f %7.2f | bt %d, max tiles %d, ks %d/%d, "
               "%s; %.2e\n",
               rows, nd, ts, tg, mb, gbs, gbs / bw, tflops, ts / tg, pl.bt, pl.max_tiles, pl.ks13, pl.ks2,
               graph ? "graph" : "stream", agree);
        printf("csv,moe,%d,%d,%.1f,%.2f,%.2f,%.1f,%.4f,%.2f,%.3e\n", b.E, rows, nd, ts, tg, gbs, gbs / bw, tflops,
               agree);
        fflush(stdout);
    }
    dsv4_cuda_ctx_destroy(ctx); /* frees nothing of ours: the process ends */
    return 0;
}
#endif
