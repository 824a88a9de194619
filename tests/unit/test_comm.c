/* test_comm.c — the communicators of src/dist/comm.h.
 * Threads (always): all-reduce F32 and BF16 equal a rank-order reference bit for bit on every rank (odd
 * counts, so the per-rank chunks are uneven), all-gather (in place too), all-to-all, barrier, abort releasing
 * a rank blocked in a collective.
 * NCCL (CUDA builds with a GPU; worlds 2, 4, 8 up to the GPU count, or a world of 1 on one GPU): the same collectives on device buffers, one
 * host thread per GPU, against the same references (F32 within NCCL's own summation order: 1e-6 relative;
 * all-gather/all-to-all exact); then the collective time of one V4-Flash decode step at batch 1/8/32/128
 * (docs/MULTI_GPU.md), printed as "csv,..." lines. */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/numfmt.h"
#include "dist/comm.h"
#include "test_util.h"
#ifdef DSV4_HAVE_CUDA
#include "backend/cuda/cuda_ctx.h"
#endif

#define MAXW 8

static float input(int rank, size_t i) { return dsv4_bf16_round((float)sin(0.37 * (double)i + 1.3 * rank) * (1 + rank)); }

typedef struct job {
    dsv4_comm *c;
    size_t n;
    int ok, aborted_seen;
    int do_abort;
} job;

static void *threads_rank(void *arg) {
    job *j = arg;
    const int r = j->c->rank, W = j->c->world;
    const size_t n = j->n;
    dsv4_err err = {{0}};
    float *f = malloc(sizeof(float) * n);
    uint16_t *h = malloc(sizeof(uint16_t) * n);
    float *g = malloc(sizeof(float) * n * W), *a2a_in = malloc(sizeof(float) * W * 3), *a2a_out = malloc(sizeof(float) * W * 3);
    for (size_t i = 0; i < n; i++) { f[i] = input(r, i); h[i] = dsv4_f32_to_bf16(input(r, i)); }
    j->ok = dsv4_comm_allreduce_sum(j->c, f, n, DSV4_COMM_F32, NULL, &err) == DSV4_OK &&
            dsv4_comm_allreduce_sum(j->c, h, n, DSV4_COMM_BF16, NULL, &err) == DSV4_OK;
    for (size_t i = 0; i < n && j->ok; i++) {
        float sf = input(0, i), sb = input(0, i);
        for (int q = 1; q < W; q++) { sf += input(q, i); sb = dsv4_bf16_round(sb + input(q, i)); }
        if (memcmp(&sf, &f[i], 4) != 0 || dsv4_f32_to_bf16(sb) != h[i]) j->ok = 0;
    }
    for (size_t i = 0; i < n; i++) g[(size_t)r * n + i] = (float)(r * 1000 + i);   /* in place */
    j->ok &= dsv4_comm_allgather(j->c, g + (size_t)r * n, g, sizeof(float) * n, NULL, &err) == DSV4_OK;
    for (int q = 0; q < W && j->ok; q++)
        for (size_t i = 0; i < n; i++) if (g[(size_t)q * n + i] != (float)(q * 1000 + i)) { j->ok = 0; break; }
    for (int p = 0; p < W; p++) for (int k = 0; k < 3; k++) a2a_in[p * 3 + k] = (float)(100 * r + 10 * p + k);
    j->ok &= dsv4_comm_alltoall(j->c, a2a_in, a2a_out, sizeof(float) * 3, NULL, &err) == DSV4_OK;
    for (int p = 0; p < W && j->ok; p++)
        for (int k = 0; k < 3; k++) if (a2a_out[p * 3 + k] != (float)(100 * p + 10 * r + k)) j->ok = 0;
    j->ok &= dsv4_comm_barrier(j->c, NULL, &err) == DSV4_OK;
    /* Abort: rank 0 fails instead of entering the next collective; the others must come back with an error. */
    if (j->do_abort && r == 0) dsv4_comm_abort(j->c);
    else if (j->do_abort) j->aborted_seen = dsv4_comm_barrier(j->c, NULL, &err) == DSV4_ERR_INTERNAL;
    free(f); free(h); free(g); free(a2a_in); free(a2a_out);
    return NULL;
}

static void run_threads(int W, size_t n, int do_abort) {
    dsv4_comm *c[MAXW];
    dsv4_err err = {{0}};
    CHECK(dsv4_comm_threads_create(W, c, &err) == DSV4_OK, "%s", err.msg);
    pthread_t th[MAXW];
    job j[MAXW];
    for (int r = 0; r < W; r++) {
        j[r] = (job){c[r], n, 0, 0, do_abort};
        pthread_create(&th[r], NULL, threads_rank, &j[r]);
    }
    for (int r = 0; r < W; r++) pthread_join(th[r], NULL);
    for (int r = 0; r < W; r++) {
        CHECK(j[r].ok, "world %d n %zu: rank %d results differ from the rank-order reference", W, n, r);
        if (do_abort && r > 0) CHECK(j[r].aborted_seen, "world %d: rank %d not released by abort", W, r);
        dsv4_comm_destroy(c[r]);
    }
}

static void test_threads(void) {
    for (int W = 1; W <= 5; W++) {
        run_threads(W, 1, 0);
        run_threads(W, 1001, 0);
    }
    run_threads(3, 17, 1);
    run_threads(8, 4099, 1);
}

/* ---- NCCL ---------------------------------------------------------------------------------------------- */
#ifdef DSV4_HAVE_CUDA
typedef struct njob {
    dsv4_comm *c;
    int device, ok;
    double step_ms[4];     /* collective time of one Flash decode step at batch 1, 8, 32, 128 */
    dsv4_err err;
} njob;

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

/* One V4-Flash decode step's collectives at batch B (spec §1, docs/MULTI_GPU.md): embedding all-reduce
 * [B, 4096] f32; per layer (43) wo_b and MoE all-reduces [B, 4096] f32; per CSA layer (21) the indexer
 * score all-reduce [B, 512 keys at 2K context] bf16; the head all-gather [B, 129280/W] f32. */
static dsv4_status flash_step(dsv4_comm *c, dsv4_cuda_ctx *ctx, float *buf, int B, dsv4_err *err) {
    const size_t D = 4096, V = 129280;
    if (dsv4_comm_allreduce_sum(c, buf, (size_t)B * D, DSV4_COMM_F32, ctx->stream, err)) return DSV4_ERR_CUDA;
    for (int l = 0; l < 43; l++) {
        if (dsv4_comm_allreduce_sum(c, buf, (size_t)B * D, DSV4_COMM_F32, ctx->stream, err)) return DSV4_ERR_CUDA;
        if (dsv4_comm_allreduce_sum(c, buf, (size_t)B * D, DSV4_COMM_F32, ctx->stream, err)) return DSV4_ERR_CUDA;
        if (l >= 2 && l % 2 == 0 &&
            dsv4_comm_allreduce_sum(c, buf, (size_t)B * 512, DSV4_COMM_BF16, ctx->stream, err)) return DSV4_ERR_CUDA;
    }
    size_t part = (size_t)B * (V / (size_t)c->world) * sizeof(float);
    return dsv4_comm_allgather(c, (char *)buf + (size_t)c->rank * part, buf, part, ctx->stream, err);
}

static void *nccl_rank(void *arg) {
    njob *j = arg;
    const int r = j->c->rank, W = j->c->world;
    const size_t n = 100003;
    dsv4_cuda_ctx *ctx = NULL;
    void *d = NULL, *big = NULL;
    float *hf = malloc(sizeof(float) * n * W);
    uint16_t *hb = malloc(sizeof(uint16_t) * n);
    if (dsv4_cuda_ctx_create(j->device, 1 << 20, &ctx, &j->err) || dsv4_cuda_alloc(ctx, sizeof(float) * n * W, &d, &j->err))
        goto out;
    for (size_t i = 0; i < n; i++) hf[i] = input(r, i);
    j->ok = dsv4_cuda_upload(ctx, d, hf, sizeof(float) * n, &j->err) == DSV4_OK &&
            dsv4_comm_allreduce_sum(j->c, d, n, DSV4_COMM_F32, ctx->stream, &j->err) == DSV4_OK &&
            dsv4_cuda_download(ctx, hf, d, sizeof(float) * n, &j->err) == DSV4_OK;
    for (size_t i = 0; i < n && j->ok; i++) {
        double s = 0;
        for (int q = 0; q < W; q++) s += input(q, i);
        if (fabs(hf[i] - s) > 1e-6 * (fabs(s) + W)) { j->ok = 0; snprintf(j->err.msg, 512, "f32 all-reduce [%zu]", i); }
    }
    for (size_t i = 0; i < n; i++) hb[i] = dsv4_f32_to_bf16(input(r, i));
    j->ok &= dsv4_cuda_upload(ctx, d, hb, sizeof(uint16_t) * n, &j->err) == DSV4_OK &&
             dsv4_comm_allreduce_sum(j->c, d, n, DSV4_COMM_BF16, ctx->stream, &j->err) == DSV4_OK &&
             dsv4_cuda_download(ctx, hb, d, sizeof(uint16_t) * n, &j->err) == DSV4_OK;
    for (size_t i = 0; i < n && j->ok; i++) {
        double s = 0;
        for (int q = 0; q < W; q++) s += input(q, i);
        if (fabs(dsv4_bf16_to_f32(hb[i]) - s) > W * 0x1p-8 * (fabs(s) + W)) { j->ok = 0; snprintf(j->err.msg, 512, "bf16 [%zu]", i); }
    }
    for (size_t i = 0; i < n; i++) hf[i] = (float)(r * 1000003 + i);
    j->ok &= dsv4_cuda_upload(ctx, (char *)d + sizeof(float) * n * r, hf, sizeof(float) * n, &j->err) == DSV4_OK &&
             dsv4_comm_allgather(j->c, (char *)d + sizeof(float) * n * r, d, sizeof(float) * n, ctx->stream, &j->err) == DSV4_OK &&
             dsv4_cuda_download(ctx, hf, d, sizeof(float) * n * W, &j->err) == DSV4_OK;
    for (int q = 0; q < W && j->ok; q++)
        for (size_t i = 0; i < n; i++) if (hf[(size_t)q * n + i] != (float)(q * 1000003 + i)) { j->ok = 0; break; }
    j->ok &= dsv4_comm_barrier(j->c, ctx->stream, &j->err) == DSV4_OK && dsv4_cuda_sync(ctx, &j->err) == DSV4_OK;
    /* Collective time per Flash decode step. */
    if (j->ok && dsv4_cuda_alloc(ctx, (size_t)128 * 129280 * sizeof(float) + 4096, &big, &j->err) == DSV4_OK) {
        static const int batches[4] = {1, 8, 32, 128};
        for (int b = 0; b < 4 && j->ok; b++) {
            for (int it = 0; it < 3; it++) j->ok &= flash_step(j->c, ctx, big, batches[b], &j->err) == DSV4_OK;
            j->ok &= dsv4_cuda_sync(ctx, &j->err) == DSV4_OK;
            double t0 = now_ms();
            for (int it = 0; it < 10; it++) j->ok &= flash_step(j->c, ctx, big, batches[b], &j->err) == DSV4_OK;
            j->ok &= dsv4_cuda_sync(ctx, &j->err) == DSV4_OK;
            j->step_ms[b] = (now_ms() - t0) / 10;
        }
    }
out:
    if (big) dsv4_cuda_free(ctx, big);
    if (d) dsv4_cuda_free(ctx, d);
    dsv4_cuda_ctx_destroy(ctx);
    free(hf); free(hb);
    return NULL;
}

static void test_nccl(void) {
    int W = dsv4_cuda_device_count();
    if (W < 1) { printf("  nccl: skipped (no GPU)\n"); return; }
    if (W > MAXW) W = MAXW;
    /* One GPU: a world of 1 still loads libnccl, creates the communicator and runs gather/barrier. */
    for (int world = W >= 2 ? 2 : 1; world <= W; world *= 2) {
        int devs[MAXW];
        for (int i = 0; i < world; i++) devs[i] = i;
        dsv4_comm *c[MAXW];
        dsv4_err err = {{0}};
        dsv4_status st = dsv4_comm_nccl_create(world, devs, NULL, c, &err);
        CHECK(st == DSV4_OK, "nccl create %d: %s", world, err.msg);
        if (st != DSV4_OK) return;
        pthread_t th[MAXW];
        njob j[MAXW];
        for (int r = 0; r < world; r++) {
            memset(&j[r], 0, sizeof j[r]);
            j[r].c = c[r];
            j[r].device = devs[r];
            pthread_create(&th[r], NULL, nccl_rank, &j[r]);
        }
        for (int r = 0; r < world; r++) pthread_join(th[r], NULL);
        for (int r = 0; r < world; r++) CHECK(j[r].ok, "nccl world %d rank %d: %s", world, r, j[r].err.msg);
        printf("csv,nccl_flash_decode_step_collectives,world=%d,batch1_ms=%.3f,batch8_ms=%.3f,batch32_ms=%.3f,"
               "batch128_ms=%.3f\n", world, j[0].step_ms[0], j[0].step_ms[1], j[0].step_ms[2], j[0].step_ms[3]);
        for (int r = 0; r < world; r++) dsv4_comm_destroy(c[r]);
    }
}
#else
static void test_nccl(void) { printf("  nccl: skipped (built without CUDA)\n"); }
#endif

int main(void) {
    RUN(test_threads);
    RUN(test_nccl);
    return test_finish();
}
