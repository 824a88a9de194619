/* test_cuda_moe.c — the routed experts grouped by expert on the device (src/backend/cuda/cuda_moe.h) against
 * the CPU reference of the expert FFN (forward_cpu.c swiglu_ffn: dsv4_cpu_linear_fp4/_fp8 for w1 and w3,
 * dsv4_cpu_swiglu with the routing weight, dsv4_cpu_linear for w2), on random inputs.
 *
 * What is checked (docs/NUMERICS.md "CUDA grouped MoE" derives the bounds):
 *  - the sort: n_live, n_tiles, the tile list and the sorted pair order equal a host reference exactly
 *    (stable by pair index inside each expert), foreign / invalid experts skipped, y_zero rows zeroed;
 *  - stage by stage on sampled pairs, each stage fed the GPU's own input of that stage:
 *      h (w1+w3+SwiGLU) vs the CPU chain from x: the derived bound below, and >= 99% bitwise;
 *      act_quant(h) bit-identical to dsv4_cpu_act_quant_fp8 of the GPU's h (every live row);
 *      y (w2) vs dsv4_cpu_linear of the GPU's h: |d| <= 2^-7·|y| + 2^-11·S (the CUDA linear bound);
 *  - end to end (CPU chain from x vs GPU): rel-L2 <= 1e-2 over the sampled rows (informative, loose);
 *  - every held pair's row written and finite (outputs NaN-poisoned first), foreign pairs' rows untouched;
 *  - two runs bitwise equal; the first and last rows run alone give bitwise the rows of the batch.
 *
 * The layout helpers (workspace size, alignment, tile-size and K-split rules) are checked on the host first,
 * device or not. Without a CUDA build, or past that without a device, it prints "SKIP: no CUDA device" and
 * passes. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu/linear.h"
#include "backend/cpu/ops.h"
#include "backend/cpu/quant.h"
#include "core/numfmt.h"
#include "test_util.h"

#ifndef DSV4_HAVE_CUDA
static void test_cuda_moe_skipped(void) { printf("SKIP: no CUDA device (built without CUDA)\n"); }
int main(void) {
    RUN(test_cuda_moe_skipped);
    return test_finish();
}
#else
#include "backend/cuda/cuda_linear.h"
#include "backend/cuda/cuda_moe.h"

static dsv4_cuda_ctx *ctx;
static dsv4_threadpool *pool;
static test_rng rng;

#define CU(call)                                                                         \
    do {                                                                                 \
        dsv4_err e_;                                                                     \
        e_.msg[0] = 0;                                                                   \
        dsv4_status st_ = (call);                                                        \
        if (st_ != DSV4_OK) {                                                            \
            CHECK(st_ == DSV4_OK, "%s -> %s: %s", #call, dsv4_status_name(st_), e_.msg); \
            goto done;                                                                   \
        }                                                                                \
    } while (0)
#define ERR (&e_)

static void *xmalloc(size_t n) {
    void *p = calloc(1, n ? n : 1);
    if (!p) {
        fprintf(stderr, "out of host memory (%zu bytes)\n", n);
        abort();
    }
    return p;
}

/* ==== sort ================================================================================================ */

/* pairs expert ids in [-1, E): mostly a few popular experts (multi-row tiles), some uniform, a few -1. */
static void fill_ids(int32_t *ids, int pairs, int E) {
    int hot = E < 5 ? E : 5;
    for (int i = 0; i < pairs; i++) {
        uint64_t r = test_rng_u64(&rng) % 100;
        ids[i] = r < 2    ? -1
                 : r < 50 ? (int32_t)(test_rng_u64(&rng) % (uint64_t)hot)
                          : (int32_t)(test_rng_u64(&rng) % (uint64_t)E);
    }
}

static void sort_case(int pairs, int E, int e0, int ne, int bt, int zero) {
    const int D = 40;
    int32_t *ids = xmalloc(sizeof(int32_t) * pairs), *sorted = xmalloc(sizeof(int32_t) * pairs);
    int32_t *ref_sorted = xmalloc(sizeof(int32_t) * pairs), head[2];
    uint16_t *y = xmalloc(sizeof(uint16_t) * (size_t)pairs * D);
    void *dws = NULL, *dids = NULL, *dy = NULL;
    dsv4_cuda_moe_layout lay;
    int32_t *tiles = NULL, *ref_tiles = NULL;
    fill_ids(ids, pairs, E);
    size_t wsb = dsv4_cuda_moe_layout_bytes(pairs, ne);
    CU(dsv4_cuda_alloc(ctx, wsb, &dws, ERR));
    CU(dsv4_cuda_alloc(ctx, sizeof(int32_t) * pairs, &dids, ERR));
    CU(dsv4_cuda_alloc(ctx, sizeof(uint16_t) * (size_t)pairs * D, &dy, ERR));
    CU(dsv4_cuda_memset(ctx, dws, 0xff, wsb, ERR));
    CU(dsv4_cuda_memset(ctx, dy, 0xff, sizeof(uint16_t) * (size_t)pairs * D, ERR));
    CU(dsv4_cuda_upload(ctx, dids, ids, sizeof(int32_t) * pairs, ERR));
    dsv4_cuda_moe_layout_init(dws, pairs, ne, bt, &lay);
    CHECK((size_t)((uint8_t *)(lay.sorted + pairs) - (uint8_t *)dws) <= wsb, "layout exceeds its workspace");
    CU(dsv4_cuda_moe_sort(ctx, dids, e0, &lay, zero ? dy : NULL, D, ERR));
    tiles = xmalloc(sizeof(int32_t) * 4 * (size_t)lay.max_tiles);
    ref_tiles = xmalloc(sizeof(int32_t) * 4 * (size_t)lay.max_tiles);
    CU(dsv4_cuda_download(ctx, head, lay.n_tiles, sizeof head, ERR));
    CU(dsv4_cuda_download(ctx, tiles, lay.tiles, sizeof(int32_t) * 4 * (size_t)lay.max_tiles, ERR));
    CU(dsv4_cuda_download(ctx, sorted, lay.sorted, sizeof(int32_t) * pairs, ERR));
    CU(dsv4_cuda_download(ctx, y, dy, sizeof(uint16_t) * (size_t)pairs * D, ERR));
    {
        int live = 0, nt = 0;
        for (int e = 0; e < ne; e++) {
            int first = live;
            for (int i = 0; i < pairs; i++)
                if (ids[i] - e0 == e) ref_sorted[live++] = i;
            for (int s = first; s < live; s += lay.bt) {
                int *t = ref_tiles + 4 * nt++;
                t[0] = e;
                t[1] = s;
                t[2] = live - s < lay.bt ? live - s : lay.bt;
                t[3] = 0;
            }
        }
        CHECK(nt <= lay.max_tiles, "reference tiles %d > max_tiles %d", nt, lay.max_tiles);
        CHECK(head[0] == nt && head[1] == live, "pairs %d ne %d bt %d: n_tiles %d (want %d), n_live %d (want %d)",
              pairs, ne, lay.bt, head[0], nt, head[1], live);
        if (head[0] == nt)
            CHECK(memcmp(tiles, ref_tiles, sizeof(int32_t) * 4 * (size_t)nt) == 0, "pairs %d: tile list differs",
                  pairs);
        if (head[1] == live)
            CHECK(memcmp(sorted, ref_sorted, sizeof(int32_t) * (size_t)live) == 0, "pairs %d: sorted order differs",
                  pairs);
        size_t bad = 0;
        for (int i = 0; i < pairs; i++) {
            int held = ids[i] - e0 >= 0 && ids[i] - e0 < ne;
            uint16_t want = held || !zero ? 0xffff : 0;
            for (int d = 0; d < D; d++) bad += y[(size_t)i * D + d] != want;
        }
        CHECK(bad == 0, "pairs %d: %zu y_zero cells wrong", pairs, bad);
        printf("  sort pairs %6d E %3d held [%d, %d) bt %2d: %d live pairs, %d tiles (max %d)\n", pairs, E, e0,
               e0 + ne, lay.bt, live, nt, lay.max_tiles);
    }
done:
    dsv4_cuda_free(ctx, dws);
    dsv4_cuda_free(ctx, dids);
    dsv4_cuda_free(ctx, dy);
    free(ids);
    free(sorted);
    free(ref_sorted);
    free(y);
    free(tiles);
    free(ref_tiles);
}

static void test_sort(void) {
    sort_case(1, 8, 0, 8, 8, 1);
    sort_case(2, 8, 0, 8, 8, 1);
    sort_case(6, 256, 0, 256, 8, 1);
    sort_case(192, 64, 0, 64, 8, 1);
    sort_case(1000, 512, 0, 512, 8, 1);
    sort_case(3072, 256, 0, 256, 16, 0);
    sort_case(24576, 256, 0, 256, 32, 0);
    sort_case(5000, 384, 96, 96, 8, 1); /* expert parallel: ids 96..191 held */
    sort_case(33, 8, 4, 4, 32, 1);
    sort_case(517, 7, 0, 7, 0, 1);      /* bt picked by dsv4_cuda_moe_tile_rows */
}

/* ==== the expert FFN ====================================================================================== */

typedef struct {
    const char *label;
    int D, I, E, k, rows, fp4;
    int e0, ne; /* experts held on the device (ne = E, e0 = 0: all) */
    float limit;
} moe_shape;

typedef struct {
    uint8_t *w1, *s1, *w3, *s3, *w2, *s2; /* host stacks [ne][...] */
    size_t w13b, s13b, w2b, s2b;          /* per expert bytes */
} host_experts;

static void fill_weights(uint8_t *w, size_t wb, uint8_t *s, size_t sb, int fp4) {
    for (size_t i = 0; i < wb; i++) {
        uint8_t c = (uint8_t)test_rng_u64(&rng);
        if (!fp4)
            while ((c & 0x7f) == 0x7f) c = (uint8_t)test_rng_u64(&rng);
        w[i] = c;
    }
    for (size_t i = 0; i < sb; i++) s[i] = (uint8_t)(fp4 ? 118 + test_rng_u64(&rng) % 9 : 117 + test_rng_u64(&rng) % 8);
}

/* x rows with a per-row spread of magnitudes and a few outliers, all bf16-exact and non-zero */
static void fill_x(float *x, int M, int K) {
    for (int m = 0; m < M; m++) {
        double sigma = ldexp(1.0, (int)(test_rng_u64(&rng) % 7) - 3);
        test_fill_bf16(&rng, x + (size_t)m * K, K, sigma);
        for (int o = 0; o < 3; o++) x[(size_t)m * K + test_rng_u64(&rng) % K] = dsv4_bf16_round((float)(sigma * 20));
    }
}

/* CPU linear of one row (the reference's kind) */
static void cpu_lin(int fp4, const float *x, int K, const uint8_t *w, const uint8_t *s, int N, float *y) {
    if (fp4) dsv4_cpu_linear_fp4(pool, x, 1, K, w, s, N, y);
    else dsv4_cpu_linear_fp8(pool, x, 1, K, w, s, N, y);
}

/* S[n] = Σ_k |x̂_k·ŵ_nk| in fp64 over the operands the kernels multiply (act-quantized x, decoded weights) */
static void sum_abs(int fp4, const float *x, int K, const uint8_t *w, const uint8_t *ws, int N, double *S) {
    const int KB = K / 128;
    float *xd = xmalloc(sizeof(float) * K);
    uint8_t *q = xmalloc(K), *s = xmalloc(KB);
    dsv4_cpu_act_quant_fp8(x, (size_t)K, 128, q, s);
    for (int i = 0; i < K; i++) xd[i] = fabsf(dsv4_e4m3_to_f32(q[i]) * dsv4_e8m0_to_f32(s[i / 128]));
    for (int n = 0; n < N; n++) {
        double acc = 0;
        if (fp4) {
            const uint8_t *wr = w + (size_t)n * K / 2;
            for (int b = 0; b < K / 32; b++) {
                double blk = 0;
                for (int i = b * 32; i < b * 32 + 32; i++) blk += xd[i] * fabsf(dsv4_fp4_unpack(wr, (size_t)i));
                acc += blk * dsv4_e8m0_to_f32(ws[(size_t)n * (K / 32) + b]);
            }
        } else {
            const uint8_t *wr = w + (size_t)n * K;
            for (int b = 0; b < KB; b++) {
                double blk = 0;
                for (int i = b * 128; i < b * 128 + 128; i++) blk += xd[i] * fabsf(dsv4_e4m3_table[wr[i]]);
                acc += blk * dsv4_e8m0_to_f32(ws[(size_t)(n / 128) * KB + b]);
            }
        }
        S[n] = acc;
    }
    free(xd);
    free(q);
    free(s);
}

static float clampf(float v, float lo, float hi) { return v < lo ? lo : (v > hi ? hi : v); }

/* Runs sort + experts for rows [r0, r0+rows) of x / ids / weights into y [rows·k, D] (NaN-poisoned first).
 * Device buffers sized for the whole case. Returns the status; fills lay. */
typedef struct {
    void *x, *xq, *xs, *ids, *rw, *ws, *h, *hq, *hs, *y;
    void *w1, *s1, *w3, *s3, *w2, *s2;
} dev_bufs;

static dsv4_status run_moe(const moe_shape *sh, dev_bufs *d, int r0, int rows, dsv4_cuda_moe_layout *lay,
                           dsv4_err *err) {
    const int k = sh->k, pairs = rows * k;
    dsv4_status st;
    if ((st = dsv4_cuda_memset(ctx, d->y, 0xff, sizeof(uint16_t) * (size_t)pairs * sh->D, err)) != DSV4_OK) return st;
    if ((st = dsv4_cuda_act_quant_fp8(ctx, (const uint16_t *)d->x + (size_t)r0 * sh->D, rows, sh->D, d->xq, d->xs,
                                      err)) != DSV4_OK)
        return st;
    dsv4_cuda_moe_layout_init(d->ws, pairs, sh->ne, 0, lay);
    if ((st = dsv4_cuda_moe_sort(ctx, (const int32_t *)d->ids + (size_t)r0 * k, sh->e0, lay, NULL, sh->D, err)) !=
        DSV4_OK)
        return st;
    dsv4_cuda_moe_params p;
    memset(&p, 0, sizeof p);
    p.k = k;
    p.D = sh->D;
    p.I = sh->I;
    p.swiglu_limit = sh->limit;
    p.xq = d->xq;
    p.xs = d->xs;
    p.route_w = (const float *)d->rw + (size_t)r0 * k;
    size_t w13b = sh->fp4 ? (size_t)sh->I * sh->D / 2 : (size_t)sh->I * sh->D;
    size_t s13b = sh->fp4 ? (size_t)sh->I * (sh->D / 32) : (size_t)(sh->I / 128) * (sh->D / 128);
    size_t w2b = w13b, s2b = sh->fp4 ? (size_t)sh->D * (sh->I / 32) : s13b;
    dsv4_cuda_moe_weights w1 = {d->w1, d->s1, w13b, s13b, sh->fp4}, w3 = {d->w3, d->s3, w13b, s13b, sh->fp4};
    dsv4_cuda_moe_weights w2 = {d->w2, d->s2, w2b, s2b, sh->fp4};
    p.w1 = w1;
    p.w3 = w3;
    p.w2 = w2;
    p.h = d->h;
    p.hq = d->hq;
    p.hs = d->hs;
    p.y = d->y;
    return dsv4_cuda_moe_experts(ctx, lay, &p, err);
}

static double g_worst_h, g_worst_y, g_worst_e2e;

static void moe_case(const moe_shape *sh) {
    const int D = sh->D, I = sh->I, k = sh->k, R = sh->rows, pairs = R * k, fp4 = sh->fp4;
    const size_t w13b = fp4 ? (size_t)I * D / 2 : (size_t)I * D;
    const size_t s13b = fp4 ? (size_t)I * (D / 32) : (size_t)(I / 128) * (D / 128);
    const size_t w2b = w13b, s2b = fp4 ? (size_t)D * (I / 32) : s13b;
    float *x = xmalloc(sizeof(float) * (size_t)R * D), *rw = xmalloc(sizeof(float) * pairs);
    uint16_t *xb = xmalloc(sizeof(uint16_t) * (size_t)R * D);
    int32_t *ids = xmalloc(sizeof(int32_t) * pairs), *sorted = xmalloc(sizeof(int32_t) * pairs);
    int32_t *pos_of = xmalloc(sizeof(int32_t) * pairs), head[2] = {0, 0};
    uint16_t *y = xmalloc(sizeof(uint16_t) * (size_t)pairs * D), *y2 = xmalloc(sizeof(uint16_t) * (size_t)pairs * D);
    uint16_t *ya = xmalloc(sizeof(uint16_t) * (size_t)k * D);
    uint16_t *h = xmalloc(sizeof(uint16_t) * (size_t)pairs * I);
    uint8_t *hq = xmalloc((size_t)pairs * I), *hs = xmalloc((size_t)pairs * I / 128);
    host_experts he = {0};
    dev_bufs d;
    memset(&d, 0, sizeof d);
    dsv4_cuda_moe_layout lay;

    /* inputs: k distinct experts per row from [0, E), a few popular ones; weights (0.05, 1.5) */
    fill_x(x, R, D);
    for (size_t i = 0; i < (size_t)R * D; i++) xb[i] = dsv4_f32_to_bf16(x[i]);
    for (int r = 0; r < R; r++)
        for (int j = 0; j < k; j++) {
            int e, dup;
            do {
                e = test_rng_u64(&rng) % 2 ? (int)(test_rng_u64(&rng) % (uint64_t)(sh->E < 4 ? sh->E : 4))
                                           : (int)(test_rng_u64(&rng) % (uint64_t)sh->E);
                dup = 0;
                for (int jj = 0; jj < j; jj++) dup |= ids[r * k + jj] == e;
            } while (dup);
            ids[r * k + j] = e;
            rw[r * k + j] = (float)(0.05 + 1.45 * test_rng_uniform(&rng));
        }
    he.w13b = w13b;
    he.s13b = s13b;
    he.w2b = w2b;
    he.s2b = s2b;
    he.w1 = xmalloc(w13b * sh->ne);
    he.w3 = xmalloc(w13b * sh->ne);
    he.w2 = xmalloc(w2b * sh->ne);
    he.s1 = xmalloc(s13b * sh->ne);
    he.s3 = xmalloc(s13b * sh->ne);
    he.s2 = xmalloc(s2b * sh->ne);
    fill_weights(he.w1, w13b * sh->ne, he.s1, s13b * sh->ne, fp4);
    fill_weights(he.w3, w13b * sh->ne, he.s3, s13b * sh->ne, fp4);
    fill_weights(he.w2, w2b * sh->ne, he.s2, s2b * sh->ne, fp4);

    CU(dsv4_cuda_alloc(ctx, sizeof(uint16_t) * (size_t)R * D, &d.x, ERR));
    CU(dsv4_cuda_alloc(ctx, (size_t)R * D, &d.xq, ERR));
    CU(dsv4_cuda_alloc(ctx, (size_t)R * D / 128 + 16, &d.xs, ERR));
    CU(dsv4_cuda_alloc(ctx, sizeof(int32_t) * pairs, &d.ids, ERR));
    CU(dsv4_cuda_alloc(ctx, sizeof(float) * pairs, &d.rw, ERR));
    CU(dsv4_cuda_alloc(ctx, dsv4_cuda_moe_layout_bytes(pairs, sh->ne), &d.ws, ERR));
    CU(dsv4_cuda_alloc(ctx, sizeof(uint16_t) * (size_t)pairs * I, &d.h, ERR));
    CU(dsv4_cuda_alloc(ctx, (size_t)pairs * I, &d.hq, ERR));
    CU(dsv4_cuda_alloc(ctx, (size_t)pairs * I / 128 + 16, &d.hs, ERR));
    CU(dsv4_cuda_alloc(ctx, sizeof(uint16_t) * (size_t)pairs * D, &d.y, ERR));
    CU(dsv4_cuda_alloc(ctx, w13b * sh->ne, &d.w1, ERR));
    CU(dsv4_cuda_alloc(ctx, w13b * sh->ne, &d.w3, ERR));
    CU(dsv4_cuda_alloc(ctx, w2b * sh->ne, &d.w2, ERR));
    CU(dsv4_cuda_alloc(ctx, s13b * sh->ne, &d.s1, ERR));
    CU(dsv4_cuda_alloc(ctx, s13b * sh->ne, &d.s3, ERR));
    CU(dsv4_cuda_alloc(ctx, s2b * sh->ne, &d.s2, ERR));
    CU(dsv4_cuda_upload(ctx, d.x, xb, sizeof(uint16_t) * (size_t)R * D, ERR));
    CU(dsv4_cuda_upload(ctx, d.ids, ids, sizeof(int32_t) * pairs, ERR));
    CU(dsv4_cuda_upload(ctx, d.rw, rw, sizeof(float) * pairs, ERR));
    CU(dsv4_cuda_upload(ctx, d.w1, he.w1, w13b * sh->ne, ERR));
    CU(dsv4_cuda_upload(ctx, d.w3, he.w3, w13b * sh->ne, ERR));
    CU(dsv4_cuda_upload(ctx, d.w2, he.w2, w2b * sh->ne, ERR));
    CU(dsv4_cuda_upload(ctx, d.s1, he.s1, s13b * sh->ne, ERR));
    CU(dsv4_cuda_upload(ctx, d.s3, he.s3, s13b * sh->ne, ERR));
    CU(dsv4_cuda_upload(ctx, d.s2, he.s2, s2b * sh->ne, ERR));

    /* two full runs (bitwise equal), then the first and the last row alone (batch invariance) */
    {
        dsv4_err e_;
        e_.msg[0] = 0;
        dsv4_status st = run_moe(sh, &d, 0, R, &lay, &e_);
        CHECK(st == DSV4_OK, "%s: %s", sh->label, e_.msg);
        if (st != DSV4_OK) goto done;
    }
    CU(dsv4_cuda_download(ctx, y, d.y, sizeof(uint16_t) * (size_t)pairs * D, ERR));
    CU(dsv4_cuda_download(ctx, head, lay.n_tiles, sizeof head, ERR));
    CU(dsv4_cuda_download(ctx, sorted, lay.sorted, sizeof(int32_t) * pairs, ERR));
    CU(dsv4_cuda_download(ctx, h, d.h, sizeof(uint16_t) * (size_t)pairs * I, ERR));
    CU(dsv4_cuda_download(ctx, hq, d.hq, (size_t)pairs * I, ERR));
    CU(dsv4_cuda_download(ctx, hs, d.hs, (size_t)pairs * I / 128, ERR));
    {
        dsv4_err e_;
        e_.msg[0] = 0;
        dsv4_status st = run_moe(sh, &d, 0, R, &lay, &e_);
        CHECK(st == DSV4_OK, "%s (second run): %s", sh->label, e_.msg);
        if (st != DSV4_OK) goto done;
    }
    CU(dsv4_cuda_download(ctx, y2, d.y, sizeof(uint16_t) * (size_t)pairs * D, ERR));
    CHECK(memcmp(y, y2, sizeof(uint16_t) * (size_t)pairs * D) == 0, "%s: two runs differ", sh->label);
    {
        const int alone[2] = {0, R - 1};
        for (int a = 0; a < (R > 1 ? 2 : 1); a++) {
            dsv4_cuda_moe_layout l1;
            dsv4_err e_;
            e_.msg[0] = 0;
            dsv4_status st = run_moe(sh, &d, alone[a], 1, &l1, &e_);
            CHECK(st == DSV4_OK, "%s (row alone): %s", sh->label, e_.msg);
            if (st != DSV4_OK) goto done;
            CU(dsv4_cuda_download(ctx, ya, d.y, sizeof(uint16_t) * (size_t)k * D, ERR));
            size_t diff = 0;
            for (int j = 0; j < k; j++) {
                int held = ids[alone[a] * k + j] - sh->e0 >= 0 && ids[alone[a] * k + j] - sh->e0 < sh->ne;
                if (held)
                    diff += memcmp(ya + (size_t)j * D, y + ((size_t)alone[a] * k + j) * D, sizeof(uint16_t) * D) != 0;
            }
            CHECK(diff == 0, "%s: row %d alone differs from the batch in %zu of its pairs", sh->label, alone[a], diff);
        }
    }

    /* written / untouched, and the live count */
    {
        int live = 0;
        size_t nonfinite = 0, touched = 0;
        for (int p = 0; p < pairs; p++) {
            int held = ids[p] - sh->e0 >= 0 && ids[p] - sh->e0 < sh->ne;
            live += held;
            for (int dd = 0; dd < D; dd++) {
                uint16_t v = y[(size_t)p * D + dd];
                if (held) nonfinite += !isfinite(dsv4_bf16_to_f32(v));
                else touched += v != 0xffff;
            }
        }
        CHECK(head[1] == live && nonfinite == 0 && touched == 0,
              "%s: n_live %d (want %d), %zu held outputs not written/finite, %zu foreign cells touched", sh->label,
              head[1], live, nonfinite, touched);
        if (head[1] != live) goto done;
        for (int p = 0; p < pairs; p++) pos_of[p] = -1;
        for (int s = 0; s < live; s++) pos_of[sorted[s]] = s;
    }

    /* act_quant(h): bit-identical on every live row */
    {
        size_t bad = 0;
        float *hf = xmalloc(sizeof(float) * I);
        uint8_t *q = xmalloc(I), *s = xmalloc(I / 128);
        for (int r = 0; r < head[1]; r++) {
            for (int i = 0; i < I; i++) hf[i] = dsv4_bf16_to_f32(h[(size_t)r * I + i]);
            dsv4_cpu_act_quant_fp8(hf, (size_t)I, 128, q, s);
            bad += memcmp(q, hq + (size_t)r * I, I) != 0 || memcmp(s, hs + (size_t)r * (I / 128), I / 128) != 0;
        }
        CHECK(bad == 0, "%s: act_quant(h) differs from the CPU's in %zu of %d rows", sh->label, bad, head[1]);
        free(hf);
        free(q);
        free(s);
    }

    /* sampled pairs: the w1+w3+SwiGLU stage, the w2 stage, end to end */
    {
        int sp[12], ns = 0;
        for (int p = 0; p < pairs && ns < 12; p++) /* the first pairs held (row 0's), then random ones */
            if (pos_of[p] >= 0 && ns < 4) sp[ns++] = p;
        for (int tries = 0; ns < 12 && tries < 1000; tries++) {
            int p = (int)(test_rng_u64(&rng) % (uint64_t)pairs), dup = 0;
            for (int i = 0; i < ns; i++) dup |= sp[i] == p;
            if (!dup && pos_of[p] >= 0) sp[ns++] = p;
        }
        float *g = xmalloc(sizeof(float) * I), *u = xmalloc(sizeof(float) * I), *href = xmalloc(sizeof(float) * I);
        float *hg = xmalloc(sizeof(float) * I), *yref = xmalloc(sizeof(float) * D), *ycpu = xmalloc(sizeof(float) * D);
        double *Sg = xmalloc(sizeof(double) * I), *Su = xmalloc(sizeof(double) * I), *Sy = xmalloc(sizeof(double) * D);
        double worst_h = 0, worst_y = 0, num = 0, den = 0;
        size_t h_diff = 0, h_cmp = 0, y_diff = 0, y_cmp = 0;
        for (int si = 0; si < ns; si++) {
            const int p = sp[si], e = ids[p] - sh->e0, pos = pos_of[p];
            const float *xr = x + (size_t)(p / k) * D;
            const float wt = rw[p], lim = sh->limit;
            cpu_lin(fp4, xr, D, he.w1 + e * w13b, he.s1 + e * s13b, I, g);
            cpu_lin(fp4, xr, D, he.w3 + e * w13b, he.s3 + e * s13b, I, u);
            dsv4_cpu_swiglu(g, u, I, lim, wt, href);
            sum_abs(fp4, xr, D, he.w1 + e * w13b, he.s1 + e * s13b, I, Sg);
            sum_abs(fp4, xr, D, he.w3 + e * w13b, he.s3 + e * s13b, I, Su);
            /* h: the CUDA linear bound on g and u (tg, tu), carried through the clamps (1-Lipschitz), silu
             * (|silu'| < 1.1, |silu(z)| <= |z|) and the product, times the weight; plus the two BF16 roundings */
            for (int i = 0; i < I; i++) {
                double tg = 0x1p-7 * fabs(g[i]) + 0x1p-11 * Sg[i], tu = 0x1p-7 * fabs(u[i]) + 0x1p-11 * Su[i];
                double gc = lim > 0 ? (g[i] > lim ? lim : g[i]) : g[i];
                double uc = lim > 0 ? clampf(u[i], -lim, lim) : u[i];
                double silu = gc / (1.0 + exp(-gc));
                double dv = wt * (1.1 * tg * (fabs(uc) + tu) + fabs(silu) * tu);
                double tol = dv + 0x1p-7 * (fabs(href[i]) + dv) + 1e-30;
                double got = dsv4_bf16_to_f32(h[(size_t)pos * I + i]);
                double r = fabs(got - href[i]) / tol;
                if (!(r <= worst_h)) worst_h = r;
                h_diff += got != href[i];
                h_cmp++;
                hg[i] = (float)got;
            }
            /* y from the GPU's h: the CUDA linear bound */
            cpu_lin(fp4, hg, I, he.w2 + e * w2b, he.s2 + e * s2b, D, yref);
            sum_abs(fp4, hg, I, he.w2 + e * w2b, he.s2 + e * s2b, D, Sy);
            /* end to end: the CPU chain from x */
            cpu_lin(fp4, href, I, he.w2 + e * w2b, he.s2 + e * s2b, D, ycpu);
            for (int n = 0; n < D; n++) {
                double got = dsv4_bf16_to_f32(y[(size_t)p * D + n]);
                double tol = 0x1p-7 * fabs(yref[n]) + 0x1p-11 * Sy[n] + 1e-30;
                double r = fabs(got - yref[n]) / tol;
                if (!(r <= worst_y)) worst_y = r;
                y_diff += got != yref[n];
                y_cmp++;
                num += (got - ycpu[n]) * (got - ycpu[n]);
                den += (double)ycpu[n] * ycpu[n];
            }
        }
        double e2e = den > 0 ? sqrt(num / den) : sqrt(num);
        double h_bitwise = h_cmp ? 1.0 - (double)h_diff / h_cmp : 1.0;
        CHECK(worst_h <= 1.0 && h_bitwise >= 0.99, "%s: h max |d|/tol %.3g, bitwise %.4f (want <= 1, >= 0.99)",
              sh->label, worst_h, h_bitwise);
        CHECK(worst_y <= 1.0, "%s: y (from the GPU's h) max |d|/tol %.3g", sh->label, worst_y);
        CHECK(e2e <= 1e-2, "%s: end-to-end rel L2 %.3g > 1e-2", sh->label, e2e);
        if (worst_h > g_worst_h) g_worst_h = worst_h;
        if (worst_y > g_worst_y) g_worst_y = worst_y;
        if (e2e > g_worst_e2e) g_worst_e2e = e2e;
        dsv4_cuda_moe_plan pl;
        dsv4_cuda_moe_plan_get(&lay, D, I, &pl);
        printf("  %-14s %s D %4d I %4d E %3d k %d rows %4d held [%d,%d): %d tiles of <= %d rows (max %d), ks %d/%d;"
               " h %zu/%zu differ, max/tol %.3f; y %zu/%zu differ, max/tol %.3f; e2e relL2 %.2e\n",
               sh->label, fp4 ? "fp4" : "fp8", D, I, sh->E, k, R, sh->e0, sh->e0 + sh->ne, head[0], pl.bt,
               pl.max_tiles, pl.ks13, pl.ks2, h_diff, h_cmp, worst_h, y_diff, y_cmp, worst_y, e2e);
        fflush(stdout);
        free(g);
        free(u);
        free(href);
        free(hg);
        free(yref);
        free(ycpu);
        free(Sg);
        free(Su);
        free(Sy);
    }

done:
    dsv4_cuda_free(ctx, d.x);
    dsv4_cuda_free(ctx, d.xq);
    dsv4_cuda_free(ctx, d.xs);
    dsv4_cuda_free(ctx, d.ids);
    dsv4_cuda_free(ctx, d.rw);
    dsv4_cuda_free(ctx, d.ws);
    dsv4_cuda_free(ctx, d.h);
    dsv4_cuda_free(ctx, d.hq);
    dsv4_cuda_free(ctx, d.hs);
    dsv4_cuda_free(ctx, d.y);
    dsv4_cuda_free(ctx, d.w1);
    dsv4_cuda_free(ctx, d.w3);
    dsv4_cuda_free(ctx, d.w2);
    dsv4_cuda_free(ctx, d.s1);
    dsv4_cuda_free(ctx, d.s3);
    dsv4_cuda_free(ctx, d.s2);
    free(x);
    free(rw);
    free(xb);
    free(ids);
    free(sorted);
    free(pos_of);
    free(y);
    free(y2);
    free(ya);
    free(h);
    free(hq);
    free(hs);
    free(he.w1);
    free(he.w3);
    free(he.w2);
    free(he.s1);
    free(he.s3);
    free(he.s2);
}

static void test_tiny(void) {
    /* tiny-flash's MoE (D 256, I 128, 8 experts, top-2, limit 10): decode, a few rows, a prefill pass */
    moe_shape s[] = {{"tiny decode", 256, 128, 8, 2, 1, 1, 0, 8, 10.0f},
                     {"tiny batch", 256, 128, 8, 2, 7, 1, 0, 8, 10.0f},
                     {"tiny prefill", 256, 128, 8, 2, 300, 1, 0, 8, 10.0f},
                     {"tiny fp8", 256, 128, 8, 2, 13, 0, 0, 8, 10.0f},
                     {"tiny nolimit", 256, 128, 8, 2, 64, 1, 0, 8, 0.0f}};
    for (size_t i = 0; i < sizeof s / sizeof s[0]; i++) moe_case(&s[i]);
}

static void test_odd_shapes(void) {
    /* K split uneven (D 3200: 25 blocks over 2 slices), I 384 (no split, 128 features per CTA), k 6 */
    moe_shape s[] = {{"odd", 3200, 384, 16, 6, 9, 1, 0, 16, 10.0f},
                     {"odd fp8", 3200, 384, 16, 6, 100, 0, 0, 16, 10.0f},
                     {"ep slice", 1024, 256, 32, 6, 64, 1, 8, 8, 10.0f}}; /* experts 8..15 held here */
    for (size_t i = 0; i < sizeof s / sizeof s[0]; i++) moe_case(&s[i]);
}

static void test_flash_shapes(void) {
    /* V4-Flash expert shapes (D 4096, I 2048, FP4, top-6, limit 10), 32 experts: decode batch 1, 8, 32 and a
     * prefill pass of 256 rows (bt 32: four 8-row MMA groups) */
    int quick = getenv("DSV4_TEST_QUICK") != NULL;
    moe_shape s[] = {{"flash b1", 4096, 2048, 32, 6, 1, 1, 0, 32, 10.0f},
                     {"flash b8", 4096, 2048, 32, 6, 8, 1, 0, 32, 10.0f},
                     {"flash b32", 4096, 2048, 32, 6, 32, 1, 0, 32, 10.0f},
                     {"flash p256", 4096, 2048, 32, 6, 256, 1, 0, 32, 10.0f},
                     {"flash fp8 b24", 4096, 2048, 8, 6, 24, 0, 0, 8, 10.0f}};
    for (size_t i = 0; i < sizeof s / sizeof s[0]; i++)
        if (!quick || i == 1 || i == 3) moe_case(&s[i]);
}

/* Host-side shape helpers (no device needed): the layout fits its workspace and is aligned for every pair
 * count, expert count and tile size; the tile size and the K split follow the documented rules. */
static void test_layout_host(void) {
    static const int bts[4] = {0, 8, 16, 32};
    long bad = 0;
    for (int pairs = 1; pairs <= 5000; pairs += pairs < 100 ? 1 : 97)
        for (int ne = 1; ne <= DSV4_CUDA_MOE_MAX_EXPERTS; ne = ne < 16 ? ne + 1 : ne * 2)
            for (int b = 0; b < 4; b++) {
                dsv4_cuda_moe_layout lay;
                uint8_t *base = (uint8_t *)(uintptr_t)4096; /* only the offsets matter */
                dsv4_cuda_moe_layout_init(base, pairs, ne, bts[b], &lay);
                size_t need = (size_t)((uint8_t *)(lay.sorted + pairs) - base);
                long nz = ne < pairs ? ne : pairs;
                bad += need > dsv4_cuda_moe_layout_bytes(pairs, ne) || ((uintptr_t)lay.tiles & 15) ||
                       (uint8_t *)lay.sorted < (uint8_t *)(lay.tiles + 4 * (size_t)lay.max_tiles) ||
                       lay.max_tiles != pairs / lay.bt + nz || (bts[b] && lay.bt != bts[b]) ||
                       (!bts[b] && lay.bt != dsv4_cuda_moe_tile_rows(pairs, ne));
            }
    CHECK(bad == 0, "%ld layouts out of their workspace, misaligned or with a wrong bound", bad);
    CHECK(dsv4_cuda_moe_tile_rows(6, 256) == 8 && dsv4_cuda_moe_tile_rows(192, 64) == 8 &&
              dsv4_cuda_moe_tile_rows(3072, 256) == 8 && dsv4_cuda_moe_tile_rows(3072, 64) == 32 &&
              dsv4_cuda_moe_tile_rows(1536, 64) == 16 && dsv4_cuda_moe_tile_rows(24576, 256) == 32,
          "tile rows rule");
    dsv4_cuda_moe_layout lay;
    dsv4_cuda_moe_plan pl;
    dsv4_cuda_moe_layout_init((void *)(uintptr_t)4096, 6, 256, 0, &lay);
    dsv4_cuda_moe_plan_get(&lay, 4096, 2048, &pl);
    CHECK(pl.ks13 == 4 && pl.cols13 == 32 && pl.ks2 == 2 && pl.cols2 == 64 && pl.bt == 8 && pl.max_tiles == 6,
          "Flash plan: ks %d/%d cols %d/%d bt %d max tiles %d", pl.ks13, pl.ks2, pl.cols13, pl.cols2, pl.bt,
          pl.max_tiles);
    dsv4_cuda_moe_plan_get(&lay, 256, 128, &pl);
    CHECK(pl.ks13 == 1 && pl.ks2 == 1 && pl.cols13 == 128, "tiny plan: ks %d/%d", pl.ks13, pl.ks2);
}

static void test_cuda_moe_skipped(void) { printf("SKIP: no CUDA device\n"); }

int main(void) {
    RUN(test_layout_host);
    if (dsv4_cuda_device_count() == 0) {
        RUN(test_cuda_moe_skipped);
        return test_finish();
    }
    dsv4_err err;
    dsv4_status st = dsv4_cuda_ctx_create(0, 0, &ctx, &err);
    if (st != DSV4_OK) {
        printf("SKIP: no usable CUDA device (%s: %s)\n", dsv4_status_name(st), err.msg);
        RUN(test_cuda_moe_skipped);
        return test_finish();
    }
    if (dsv4_threadpool_create(0, &pool, &err) != DSV4_OK) pool = NULL;
    char desc[256];
    dsv4_cuda_describe(ctx, desc, sizeof desc);
    printf("device: %s\n", desc);
    test_rng_seed(&rng, 20261204);
    RUN(test_sort);
    RUN(test_tiny);
    RUN(test_odd_shapes);
    RUN(test_flash_shapes);
    printf("worst: h max|d|/tol %.3f, y max|d|/tol %.3f, end-to-end rel L2 %.2e\n", g_worst_h, g_worst_y, g_worst_e2e);
    dsv4_threadpool_destroy(pool);
    dsv4_cuda_ctx_destroy(ctx);
    return test_finish();
}
#endif
