/* bench.c — roofline arithmetic and device peers for `dsv4 bench` (see dsv4_bench.h). */
#include "dsv4_bench.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/status.h"
#include "kv/kv_schema.h"
#include "model/checkpoint.h"
#include "model/safetensors.h"

#ifdef DSV4_HAVE_CUDA
#include "backend/cuda/cuda_ctx.h"
#include "backend/cuda/cuda_linear.h"
#endif

/* ---- weight accounting --------------------------------------------------------------------------- */

typedef struct acc {
    dsv4_bench_cost *c;
    double routed_bytes, routed_params;
} acc;

static dsv4_status visit(void *ctx, const char *name, dsv4_dtype dt, int ndim, const int64_t *shape, int is_mtp,
                         int is_routed) {
    acc *a = ctx;
    dsv4_bench_cost *c = a->c;
    if (is_mtp) return DSV4_OK;
    double n = 1;
    for (int i = 0; i < ndim; i++) n *= (double)shape[i];
    double bytes = n * (double)dsv4_dtype_size(dt);
    int is_scale = dt == DSV4_DTYPE_F8_E8M0;
    double params = is_scale ? 0 : dt == DSV4_DTYPE_I8 ? 2 * n : n;
    c->weight_bytes_total += bytes;
    if (!strcmp(name, "embed.weight")) {
        c->embed_row_bytes = bytes / (double)shape[0];
    } else if (!strncmp(name, "layers.", 7)) {
        if (is_routed) {
            a->routed_bytes += bytes;
            a->routed_params += params;
        } else if (strstr(name, "tid2eid")) {
            c->tid2eid_row_bytes = bytes / (double)shape[0];
        } else {
            c->dense_bytes += bytes;
            /* Matmul weights: 2-D, not scales, not the compressors' additive position bias (ape). */
            if (ndim == 2 && !is_scale && !strstr(name, ".ape")) c->dense_params += params;
        }
    } else {
        c->head_bytes += bytes;   /* head.weight, norm.weight, hc_head_* */
        if (!strcmp(name, "head.weight")) c->head_params = params;
    }
    return DSV4_OK;
}

dsv4_status dsv4_bench_cost_init(const dsv4_config *cfg, dsv4_bench_cost *c, dsv4_err *err) {
    memset(c, 0, sizeof *c);
    c->cfg = *cfg;
    if (c->cfg.expert_fp4 < 0) c->cfg.expert_fp4 = 1;   /* undecided (initial release): FP4, as the stats */
    dsv4_kv_schema kv;   /* checked here; dsv4_bench_kv_read_bytes derives it again from cfg */
    DSV4_TRY(dsv4_kv_schema_init(&kv, &c->cfg, 0, err));
    acc a = {c, 0, 0};
    DSV4_TRY(dsv4_checkpoint_expected_visit(&c->cfg, visit, &a));
    double per = (double)c->cfg.n_layers * (double)c->cfg.n_routed_experts;
    if (per > 0) {
        c->expert_bytes = a.routed_bytes / per;
        c->expert_params = a.routed_params / per;
    }
    return DSV4_OK;
}

double dsv4_bench_expected_experts(int E, int k, int B) {
    if (E <= 0 || k <= 0 || B <= 0) return 0.0;
    if (k >= E) return (double)E;
    return (double)E * (1.0 - pow(1.0 - (double)k / (double)E, (double)B));
}

double dsv4_bench_kv_read_bytes(const dsv4_bench_cost *c, double T) {
    dsv4_kv_schema kv;
    if (dsv4_kv_schema_init(&kv, &c->cfg, 0, NULL) != DSV4_OK) return 0.0;   /* not after a successful cost_init */
    const dsv4_kv_schema *s = &kv;
    double tok = floor(T), sum = 0.0;
    const double eb = s->entry.bytes, ikb = (double)s->ikey.code_bytes + s->ikey.n_scales;
    for (int l = 0; l < s->n_main_layers; l++) {
        const dsv4_kv_layer_schema *L = &s->layer[l];
        sum += fmin(tok, (double)s->window) * eb;
        if (!L->ratio) continue;
        double ne = floor(tok / L->ratio);
        if (L->kind == DSV4_LAYER_CSA) {
            sum += ne * ikb + fmin((double)c->cfg.index_topk, ne) * eb;
            sum += (double)(L->cmp.bytes + L->icmp.bytes) / L->ratio;
        } else {
            sum += ne * eb + (double)L->cmp.bytes / L->ratio;
        }
    }
    return sum;
}

double dsv4_bench_decode_bytes(const dsv4_bench_cost *c, int B, double T) {
    const dsv4_config *g = &c->cfg;
    double ex = dsv4_bench_expected_experts(g->n_routed_experts, g->n_activated_experts, B);
    int hash = g->n_hash_layers < g->n_layers ? g->n_hash_layers : g->n_layers;
    return c->dense_bytes + c->head_bytes + B * c->embed_row_bytes + (double)B * hash * c->tid2eid_row_bytes +
           (double)g->n_layers * ex * c->expert_bytes + (double)B * dsv4_bench_kv_read_bytes(c, T);
}

double dsv4_bench_prefill_bytes(const dsv4_bench_cost *c, long P) {
    const dsv4_config *g = &c->cfg;
    int Bt = P > (1L << 30) ? (1 << 30) : (int)P;
    double ex = dsv4_bench_expected_experts(g->n_routed_experts, g->n_activated_experts, Bt);
    return c->dense_bytes + c->head_bytes + (double)P * c->embed_row_bytes + (double)g->n_layers * ex * c->expert_bytes;
}

double dsv4_bench_prefill_flops(const dsv4_bench_cost *c, long P) {
    const dsv4_config *g = &c->cfg;
    const double per_tok = 2.0 * (c->dense_params + (double)g->n_activated_experts * c->expert_params);
    const double attn = 4.0 * g->n_heads * g->head_dim, idx = 2.0 * g->index_n_heads * g->index_head_dim;
    double f = per_tok * (double)P + 2.0 * c->head_params;
    for (int l = 0; l < g->n_layers; l++) {
        int r = g->compress_ratios[l];
        dsv4_layer_kind kind = dsv4_config_layer_kind(g, l);
        for (long t = 0; t < P; t++) {
            double seen = (double)(t + 1), K = fmin(seen, (double)g->window_size);
            if (kind == DSV4_LAYER_CSA) {
                double ne = floor(seen / r);
                K += fmin((double)g->index_topk, ne);
                f += idx * ne;
            } else if (r) {
                K += floor(seen / r);
            }
            f += attn * K;
        }
    }
    return f;
}

/* ---- host copy ----------------------------------------------------------------------------------- */

double dsv4_bench_now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

double dsv4_bench_median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

double dsv4_bench_host_copy_gbps(void) {
    const size_t n = (size_t)256 << 20;
    uint8_t *src = malloc(n), *dst = malloc(n);
    if (!src || !dst) {
        free(src);
        free(dst);
        return 0.0;
    }
    for (size_t i = 0; i < n; i++) src[i] = (uint8_t)(i * 2654435761u >> 13);
    memcpy(dst, src, n);
    double t[5];
    for (int r = 0; r < 5; r++) {
        double t0 = dsv4_bench_now_s();
        memcpy(dst, src, n);
        t[r] = dsv4_bench_now_s() - t0;
        src[r] ^= dst[n - 1 - r];   /* keep the copies observable */
    }
    double m = dsv4_bench_median(t, 5);
    free(src);
    free(dst);
    return m > 0 ? 2.0 * (double)n / m / 1e9 : 0.0;
}

/* ---- CUDA peers ---------------------------------------------------------------------------------- */

#ifndef DSV4_HAVE_CUDA

dsv4_status dsv4_bench_cuda_peers(int device, const dsv4_config *cfg, int gemm_m, double *copy_gbps,
                                  double *gemm_tflops, char *desc, size_t desc_n, dsv4_err *err) {
    (void)device; (void)cfg; (void)gemm_m;
    *copy_gbps = *gemm_tflops = 0.0;
    if (desc_n) desc[0] = 0;
    return dsv4_err_set(err, DSV4_ERR_UNSUPPORTED, "backend cuda not compiled in (build with nvcc present)");
}

dsv4_status dsv4_bench_cuda_copy_gbps(int device, double *copy_gbps, dsv4_err *err) {
    (void)device;
    *copy_gbps = 0.0;
    return dsv4_err_set(err, DSV4_ERR_UNSUPPORTED, "backend cuda not compiled in (build with nvcc present)");
}

#else

static uint16_t bf16_of(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

/* Fills dev[n] bf16 with uniform values in [-1, 1) (never zeros: they can run faster than real data). */
static dsv4_status upload_random_bf16(dsv4_cuda_ctx *ctx, uint16_t *dev, size_t n, uint64_t seed, dsv4_err *err) {
    uint16_t *h = malloc(n * sizeof *h);
    if (!h) return dsv4_err_set(err, DSV4_ERR_NOMEM, "bench: out of memory");
    uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
    for (size_t i = 0; i < n; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        h[i] = bf16_of((float)((double)(s >> 11) / 9007199254740992.0 * 2.0 - 1.0));
    }
    dsv4_status st = dsv4_cuda_upload(ctx, dev, h, n * sizeof *h, err);
    free(h);
    return st;
}

/* Median over `reps` batches of `per` calls of op, each batch between two events; returns ms per call. */
typedef dsv4_status (*op_fn)(void *u, dsv4_err *err);

static dsv4_status time_op(dsv4_cuda_ctx *ctx, op_fn op, void *u, int reps, int per, double *ms, dsv4_err *err) {
    void *e0 = NULL, *e1 = NULL;
    double t[16];
    DSV4_TRY(dsv4_cuda_event_create(&e0, err));
    dsv4_status st = dsv4_cuda_event_create(&e1, err);
    for (int i = 0; i < 2 && st == DSV4_OK; i++) st = op(u, err);   /* warm-up */
    for (int r = 0; r < reps && st == DSV4_OK; r++) {
        st = dsv4_cuda_event_record(ctx, e0, err);
        for (int i = 0; i < per && st == DSV4_OK; i++) st = op(u, err);
        if (st == DSV4_OK) st = dsv4_cuda_event_record(ctx, e1, err);
        if (st == DSV4_OK) st = dsv4_cuda_sync(ctx, err);
        float f = 0.0f;
        if (st == DSV4_OK) st = dsv4_cuda_event_elapsed_ms(e0, e1, &f, err);
        t[r] = (double)f / per;
    }
    dsv4_cuda_event_destroy(e0);
    dsv4_cuda_event_destroy(e1);
    if (st == DSV4_OK) *ms = dsv4_bench_median(t, reps);
    return st;
}

typedef struct copy_job { dsv4_cuda_ctx *ctx; void *dst; const void *src; size_t n; } copy_job;
static dsv4_status copy_op(void *u, dsv4_err *err) {
    copy_job *j = u;
    return dsv4_cuda_copy(j->ctx, j->dst, j->src, j->n, err);
}

/* Copy: 1 GiB each way; the source holds random data (replicated from 64 MiB). */
static dsv4_status copy_gbps_on(dsv4_cuda_ctx *ctx, double *copy_gbps, dsv4_err *err) {
    const size_t n = (size_t)1 << 30, chunk = (size_t)64 << 20;
    void *a = NULL, *b = NULL;
    dsv4_status st;
    if ((st = dsv4_cuda_alloc(ctx, n, &a, err)) == DSV4_OK && (st = dsv4_cuda_alloc(ctx, n, &b, err)) == DSV4_OK &&
        (st = upload_random_bf16(ctx, a, chunk / 2, 7, err)) == DSV4_OK) {
        for (size_t off = chunk; off < n && st == DSV4_OK; off += chunk)
            st = dsv4_cuda_copy(ctx, (uint8_t *)a + off, a, chunk, err);
        copy_job j = {ctx, b, a, n};
        double ms = 0.0;
        if (st == DSV4_OK && (st = time_op(ctx, copy_op, &j, 7, 4, &ms, err)) == DSV4_OK && ms > 0)
            *copy_gbps = 2.0 * (double)n / (ms * 1e-3) / 1e9;
    }
    dsv4_cuda_free(ctx, a);
    dsv4_cuda_free(ctx, b);
    return st;
}

dsv4_status dsv4_bench_cuda_copy_gbps(int device, double *copy_gbps, dsv4_err *err) {
    *copy_gbps = 0.0;
    if (dsv4_cuda_device_count() <= 0) return dsv4_err_set(err, DSV4_ERR_UNSUPPORTED, "cuda: no CUDA device visible");
    dsv4_cuda_ctx *ctx = NULL;
    DSV4_TRY(dsv4_cuda_ctx_create(device, 0, &ctx, err));
    dsv4_status st = copy_gbps_on(ctx, copy_gbps, err);
    dsv4_cuda_ctx_destroy(ctx);
    return st;
}

typedef struct gemm_job { dsv4_cuda_ctx *ctx; const uint16_t *x, *w; uint16_t *y; int M, K, N; } gemm_job;
static dsv4_status gemm_op(void *u, dsv4_err *err) {
    gemm_job *j = u;
    return dsv4_cuda_linear_bf16(j->ctx, j->x, j->M, j->K, j->w, j->N, j->y, DSV4_OUT_BF16, err);
}

dsv4_status dsv4_bench_cuda_peers(int device, const dsv4_config *cfg, int gemm_m, double *copy_gbps,
                                  double *gemm_tflops, char *desc, size_t desc_n, dsv4_err *err) {
    *copy_gbps = *gemm_tflops = 0.0;
    if (dsv4_cuda_device_count() <= 0) return dsv4_err_set(err, DSV4_ERR_UNSUPPORTED, "cuda: no CUDA device visible");
    dsv4_cuda_ctx *ctx = NULL;
    DSV4_TRY(dsv4_cuda_ctx_create(device, 0, &ctx, err));
    if (desc_n) dsv4_cuda_describe(ctx, desc, desc_n);
    dsv4_status st = copy_gbps_on(ctx, copy_gbps, err);
    /* GEMM: the wo_b shape of this config, y[M, dim] = x[M, groups*lora] · Wᵀ, BF16 in, FP32 accumulate. */
    if (st == DSV4_OK) {
        const int M = gemm_m > 0 ? gemm_m : 4096, N = cfg->dim, K = cfg->o_groups * cfg->o_lora_rank;
        void *x = NULL, *w = NULL, *y = NULL;
        if ((st = dsv4_cuda_alloc(ctx, (size_t)M * K * 2, &x, err)) == DSV4_OK &&
            (st = dsv4_cuda_alloc(ctx, (size_t)N * K * 2, &w, err)) == DSV4_OK &&
            (st = dsv4_cuda_alloc(ctx, (size_t)M * N * 2, &y, err)) == DSV4_OK &&
            (st = upload_random_bf16(ctx, x, (size_t)M * K, 11, err)) == DSV4_OK &&
            (st = upload_random_bf16(ctx, w, (size_t)N * K, 13, err)) == DSV4_OK) {
            gemm_job j = {ctx, x, w, y, M, K, N};
            double ms = 0.0;
            if ((st = time_op(ctx, gemm_op, &j, 7, 5, &ms, err)) == DSV4_OK && ms > 0)
                *gemm_tflops = 2.0 * (double)M * N * K / (ms * 1e-3) / 1e12;
        }
        dsv4_cuda_free(ctx, x);
        dsv4_cuda_free(ctx, w);
        dsv4_cuda_free(ctx, y);
    }
    dsv4_cuda_ctx_destroy(ctx);
    return st;
}

#endif
