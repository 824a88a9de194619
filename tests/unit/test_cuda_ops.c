/* test_cuda_ops.c — every non-GEMM CUDA op (src/backend/cuda/ops_cuda.h) against its CPU reference
 * (backend/cpu/ops.h, quant.h) on random inputs (never zeros), at tiny shapes and at the real V4-Flash
 * shapes (D = 4096, H = 64, hd = 512, E = 256, indexer 64×128 over 1000 and 100000 keys, top-k 512; Pro
 * attention H = 128 with 128 + 1024 keys). Outputs are poisoned (0xFF bytes = NaN) before each launch, so
 * an unwritten element fails.
 *
 * Agreement demanded (docs/NUMERICS.md, "CUDA ops (non-GEMM)"): element-wise ops and the ops whose only
 * reduction is fp64 on both sides are compared in BF16 ulps (≤ 1 allowed, the count of non-identical
 * elements printed and expected to be 0); top-k, router ids, argmax must be identical; attention within
 * the FP32-accumulation tolerance stated there; indexer scores bitwise on FP4-quantized inputs.
 *
 * Without a CUDA build or without a device it reports the case as skipped ("SKIP ...") (CI has no GPU). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu/ops.h"
#include "backend/cpu/quant.h"
#include "core/numfmt.h"
#include "test_util.h"

#ifndef DSV4_HAVE_CUDA
int main(void) {
    test_skip("test_cuda_ops", "no CUDA device (built without CUDA)");
    return test_finish();
}
#else
#include "backend/cuda/ops_cuda.h"

static dsv4_cuda_ctx *ctx;
static test_rng rng;

/* ---- helpers ------------------------------------------------------------------------------------------ */

#define MAX_DEV 64
static void *devs[MAX_DEV];
static int n_devs;

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "out of host memory\n");
        abort();
    }
    return p;
}
/* Device buffer (freed by dev_free_all at the end of each test); aborts on failure (a test bug). */
static void *dalloc(size_t bytes) {
    void *p = NULL;
    dsv4_err e;
    if (dsv4_cuda_alloc(ctx, bytes ? bytes : 16, &p, &e) != DSV4_OK || n_devs == MAX_DEV) {
        fprintf(stderr, "device alloc of %zu bytes failed: %s\n", bytes, e.msg);
        abort();
    }
    devs[n_devs++] = p;
    dsv4_cuda_memset(ctx, p, 0xff, bytes, &e); /* poison */
    return p;
}
static void dev_free_all(void) {
    for (int i = 0; i < n_devs; i++) dsv4_cuda_free(ctx, devs[i]);
    n_devs = 0;
}
static void *dup_to_dev(const void *h, size_t bytes) {
    void *d = dalloc(bytes);
    dsv4_err e;
    if (dsv4_cuda_upload(ctx, d, h, bytes, &e) != DSV4_OK) {
        fprintf(stderr, "upload: %s\n", e.msg);
        abort();
    }
    return d;
}
static void from_dev(void *h, const void *d, size_t bytes) {
    dsv4_err e;
    if (dsv4_cuda_download(ctx, h, d, bytes, &e) != DSV4_OK) {
        fprintf(stderr, "download: %s\n", e.msg);
        abort();
    }
}
static uint16_t *bf16_of(const float *x, size_t n) {
    uint16_t *b = xmalloc(n * 2);
    for (size_t i = 0; i < n; i++) b[i] = dsv4_f32_to_bf16(x[i]);
    return b;
}
static uint16_t *dev_bf16(const float *x, size_t n) {
    uint16_t *b = bf16_of(x, n);
    uint16_t *d = dup_to_dev(b, n * 2);
    free(b);
    return d;
}
static float *dev_to_f32_bf16(const uint16_t *d, size_t n) {
    uint16_t *b = xmalloc(n * 2);
    from_dev(b, d, n * 2);
    float *f = xmalloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) f[i] = dsv4_bf16_to_f32(b[i]);
    free(b);
    return f;
}
static float *rand_bf16(size_t n, double sigma) {
    float *x = xmalloc(n * sizeof(float));
    test_fill_bf16(&rng, x, n, sigma);
    return x;
}
static int32_t *rand_pos(int n, int maxpos) {
    int32_t *p = xmalloc((size_t)n * 4);
    for (int i = 0; i < n; i++) p[i] = (int32_t)(test_rng_u64(&rng) % (uint64_t)maxpos);
    return p;
}

/* BF16 ulp distance between two bf16-exact floats (NaN vs anything: huge; +0 == −0). */
static long ulp_dist(float a, float b) {
    if (isnan(a) || isnan(b)) return (isnan(a) && isnan(b)) ? 0 : 1L << 30;
    if (a == b) return 0;
    uint16_t ua = dsv4_f32_to_bf16(a), ub = dsv4_f32_to_bf16(b);
    long oa = (ua & 0x8000) ? -(long)(ua & 0x7fff) : (long)ua;
    long ob = (ub & 0x8000) ? -(long)(ub & 0x7fff) : (long)ub;
    return labs(oa - ob);
}
typedef struct { long max_ulp; size_t n_diff; size_t n; } ulp_stat;
static ulp_stat compare_ulp(const float *got, const float *ref, size_t n) {
    ulp_stat s = {0, 0, n};
    for (size_t i = 0; i < n; i++) {
        long d = ulp_dist(got[i], ref[i]);
        if (d) s.n_diff++;
        if (d > s.max_ulp) s.max_ulp = d;
    }
    return s;
}
/* Reports and checks ≤ max_ulp BF16 ulps. */
static void check_ulp(const char *what, const float *got, const float *ref, size_t n, long max_ulp) {
    ulp_stat s = compare_ulp(got, ref, n);
    printf("  %-44s n=%-9zu differing=%zu max_ulp=%ld\n", what, n, s.n_diff, s.max_ulp);
    CHECK(s.max_ulp <= max_ulp, "%s: max %ld bf16 ulps (%zu of %zu differ)", what, s.max_ulp, s.n_diff, n);
}
static void check_f32_exact(const char *what, const float *got, const float *ref, size_t n) {
    size_t nd = 0;
    double worst = 0;
    for (size_t i = 0; i < n; i++)
        if (!(got[i] == ref[i])) {
            nd++;
            double r = fabs((double)got[i] - ref[i]) / fmax(fabs(ref[i]), 1e-30);
            if (!(r <= worst)) worst = r;
        }
    printf("  %-44s n=%-9zu differing=%zu max_rel=%.3g\n", what, n, nd, worst);
    CHECK(worst <= 1e-6, "%s: %zu of %zu differ, max rel %.3g", what, nd, n, worst);
}

#define LAUNCH(call)                                                                 \
    do {                                                                             \
        dsv4_err e_;                                                                 \
        e_.msg[0] = 0;                                                               \
        dsv4_status st_ = (call);                                                    \
        if (st_ == DSV4_OK) st_ = dsv4_cuda_sync(ctx, &e_);                          \
        CHECK(st_ == DSV4_OK, "%s: %s", #call, e_.msg);                              \
        if (st_ != DSV4_OK) return;                                                  \
    } while (0)
#define ERR (&e_)

static dsv4_rope rope_yarn, rope_plain;

/* ==== RMSNorm / q norm / RoPE / fake-quant ============================================================ */

static void rmsnorm_case(int rows, int n, int ld, int weighted) {
    float *x = rand_bf16((size_t)rows * ld, 1.5), *w = rand_bf16(n, 0.7);
    uint16_t *wb = bf16_of(w, n);
    uint16_t *dx = dev_bf16(x, (size_t)rows * ld), *dw = dup_to_dev(wb, (size_t)n * 2);
    uint16_t *dy = dalloc((size_t)rows * n * 2);
    LAUNCH(dsv4_cuda_rmsnorm(ctx, dx, ld, weighted ? dw : NULL, rows, n, 1e-6f, dy, n, ERR));
    float *got = dev_to_f32_bf16(dy, (size_t)rows * n), *ref = xmalloc((size_t)rows * n * 4);
    for (int r = 0; r < rows; r++) dsv4_cpu_rmsnorm(x + (size_t)r * ld, weighted ? wb : NULL, n, 1e-6f, ref + (size_t)r * n);
    char name[96];
    snprintf(name, sizeof name, "rmsnorm rows=%d n=%d %s", rows, n, weighted ? "weighted" : "unweighted");
    check_ulp(name, got, ref, (size_t)rows * n, 1);
    free(x); free(w); free(wb); free(got); free(ref);
    dev_free_all();
}
static void test_rmsnorm(void) {
    rmsnorm_case(3, 7, 9, 1);
    rmsnorm_case(2, 33, 33, 0);
    rmsnorm_case(64, 4096, 4096, 1);
    rmsnorm_case(64, 1024, 1024, 1);
    rmsnorm_case(37, 512, 640, 0);
    rmsnorm_case(16, 7168, 7168, 1);
}

static void qnorm_case(int rows, int H, int hd, int with_rope) {
    size_t n = (size_t)rows * H * hd;
    float *x = rand_bf16(n, 2.0);
    int32_t *pos = rand_pos(rows, 1 << 20);
    uint16_t *dx = dev_bf16(x, n);
    int32_t *dpos = dup_to_dev(pos, (size_t)rows * 4);
    LAUNCH(dsv4_cuda_qnorm_rope(ctx, dx, rows, H, hd, 1e-6f, with_rope ? dpos : NULL, &rope_yarn, ERR));
    float *got = dev_to_f32_bf16(dx, n);
    for (int r = 0; r < rows; r++)
        for (int h = 0; h < H; h++) {
            float *v = x + ((size_t)r * H + h) * hd;
            dsv4_cpu_rmsnorm_bf16_arith(v, hd, 1e-6f);
            if (with_rope) dsv4_cpu_rope(v + hd - 64, pos[r], &rope_yarn, 0);
        }
    char name[96];
    snprintf(name, sizeof name, "qnorm%s rows=%d H=%d hd=%d", with_rope ? "+rope" : "", rows, H, hd);
    check_ulp(name, got, x, n, 1);
    free(x); free(pos); free(got);
    dev_free_all();
}
static void test_qnorm_rope(void) {
    qnorm_case(2, 3, 128, 1);
    qnorm_case(3, 2, 64, 0);
    qnorm_case(16, 64, 512, 1);
    qnorm_case(4, 128, 512, 0);
}

static void test_rope(void) {
    for (int inv = 0; inv < 2; inv++)
        for (int which = 0; which < 2; which++) {
            const dsv4_rope *rp = which ? &rope_plain : &rope_yarn;
            int rows = 33, H = 64, hd = 512;
            size_t n = (size_t)rows * H * hd;
            float *x = rand_bf16(n, 1.0);
            int32_t *pos = rand_pos(rows, 1 << 20);
            pos[0] = 0; pos[1] = 1; pos[2] = (1 << 20) - 1;
            uint16_t *dx = dev_bf16(x, n);
            int32_t *dpos = dup_to_dev(pos, (size_t)rows * 4);
            LAUNCH(dsv4_cuda_rope(ctx, dx, rows, H * hd, H, hd, hd - 64, dpos, rp, inv, ERR));
            float *got = dev_to_f32_bf16(dx, n);
            for (int r = 0; r < rows; r++)
                for (int h = 0; h < H; h++) dsv4_cpu_rope(x + ((size_t)r * H + h) * hd + hd - 64, pos[r], rp, inv);
            char name[96];
            snprintf(name, sizeof name, "rope %s %s rows=%d H=%d", inv ? "inverse" : "forward",
                     which ? "theta=1e4" : "yarn 1.6e5", rows, H);
            check_ulp(name, got, x, n, 1);
            free(x); free(pos); free(got);
            dev_free_all();
        }
}

static void test_fake_quant(void) {
    int rows = 300, ld = 512, n = 448;
    float *x = rand_bf16((size_t)rows * ld, 1.0);
    for (int r = 0; r < rows; r++) /* spread block scales over many binades */
        for (int i = 0; i < ld; i++) x[(size_t)r * ld + i] = dsv4_bf16_round(x[(size_t)r * ld + i] * ldexpf(1.0f, (r % 40) - 25));
    uint16_t *dx = dev_bf16(x, (size_t)rows * ld);
    LAUNCH(dsv4_cuda_fake_quant_fp8(ctx, dx, rows, ld, n, 64, ERR));
    float *got = dev_to_f32_bf16(dx, (size_t)rows * ld);
    for (int r = 0; r < rows; r++) dsv4_cpu_fake_quant_fp8(x + (size_t)r * ld, n, 64);
    check_ulp("fake_quant_fp8 kv 300x448 (ld 512) block 64", got, x, (size_t)rows * ld, 0);
    free(got);
    /* block 128 over whole rows */
    uint16_t *dx2 = dev_bf16(x, (size_t)rows * ld);
    LAUNCH(dsv4_cuda_fake_quant_fp8(ctx, dx2, rows, ld, ld, 128, ERR));
    got = dev_to_f32_bf16(dx2, (size_t)rows * ld);
    for (int r = 0; r < rows; r++) dsv4_cpu_fake_quant_fp8(x + (size_t)r * ld, ld, 128);
    check_ulp("fake_quant_fp8 300x512 block 128", got, x, (size_t)rows * ld, 0);
    free(got);
    free(x);
    /* Hadamard + FP4 */
    int nv = 64 * 37;
    float *v = rand_bf16((size_t)nv * 128, 1.0);
    for (int i = 0; i < nv; i++)
        for (int j = 0; j < 128; j++) v[(size_t)i * 128 + j] = dsv4_bf16_round(v[(size_t)i * 128 + j] * ldexpf(1.0f, (i % 30) - 15));
    uint16_t *dv = dev_bf16(v, (size_t)nv * 128);
    LAUNCH(dsv4_cuda_hadamard_fp4(ctx, dv, nv, ERR));
    got = dev_to_f32_bf16(dv, (size_t)nv * 128);
    for (int i = 0; i < nv; i++) {
        dsv4_cpu_hadamard128(v + (size_t)i * 128);
        dsv4_cpu_fake_quant_fp4(v + (size_t)i * 128, 128);
    }
    check_ulp("hadamard128 + fp4 (64x37 vectors)", got, v, (size_t)nv * 128, 0);
    free(got); free(v);
    dev_free_all();
}

/* ==== hyper-connections ================================================================================ */

static void hc_case(int rows, int hc, int D) {
    int nm = (2 + hc) * hc;
    size_t nX = (size_t)rows * hc * D;
    float *X = rand_bf16(nX, 1.0), *fn = xmalloc((size_t)nm * hc * D * 4), *hfn = xmalloc((size_t)hc * hc * D * 4);
    for (size_t i = 0; i < (size_t)nm * hc * D; i++) fn[i] = (float)(test_rng_normal(&rng) * 0.02);
    for (size_t i = 0; i < (size_t)hc * hc * D; i++) hfn[i] = (float)(test_rng_normal(&rng) * 0.02);
    float base[80], scale[3] = {0.7f, 1.3f, 0.9f}, hbase[8], hscale[1] = {0.8f};
    for (int i = 0; i < nm; i++) base[i] = (float)(test_rng_normal(&rng) * 0.5);
    for (int i = 0; i < hc; i++) hbase[i] = (float)(test_rng_normal(&rng) * 0.5);
    uint16_t *dX = dev_bf16(X, nX);
    float *dfn = dup_to_dev(fn, (size_t)nm * hc * D * 4), *dhfn = dup_to_dev(hfn, (size_t)hc * hc * D * 4);
    float *dbase = dup_to_dev(base, sizeof base), *dscale = dup_to_dev(scale, sizeof scale);
    float *dhbase = dup_to_dev(hbase, sizeof hbase), *dhscale = dup_to_dev(hscale, sizeof hscale);
    uint16_t *dx = dalloc((size_t)rows * D * 2), *dy = dalloc((size_t)rows * D * 2), *dXo = dalloc(nX * 2);
    float *dpost = dalloc((size_t)rows * hc * 4), *dcomb = dalloc((size_t)rows * hc * hc * 4);
    dsv4_cuda_hc_params p = {rows, hc, D, 20, 1e-6f, 1e-6f, dfn, dbase, dscale};
    LAUNCH(dsv4_cuda_hc_pre(ctx, &p, dX, dx, dpost, dcomb, ERR));
    dsv4_cuda_hc_params ph = {rows, hc, D, 0, 1e-6f, 1e-6f, dhfn, dhbase, dhscale};
    LAUNCH(dsv4_cuda_hc_head(ctx, &ph, dX, dy, ERR));
    /* hc_post with a random a and the GPU's post/comb (checked above against the CPU's) */
    float *a = rand_bf16((size_t)rows * D, 1.0);
    uint16_t *da = dev_bf16(a, (size_t)rows * D);
    LAUNCH(dsv4_cuda_hc_post(ctx, &p, da, dX, dpost, dcomb, dXo, ERR));

    float *gx = dev_to_f32_bf16(dx, (size_t)rows * D), *gy = dev_to_f32_bf16(dy, (size_t)rows * D);
    float *gXo = dev_to_f32_bf16(dXo, nX);
    float *gpost = xmalloc((size_t)rows * hc * 4), *gcomb = xmalloc((size_t)rows * hc * hc * 4);
    from_dev(gpost, dpost, (size_t)rows * hc * 4);
    from_dev(gcomb, dcomb, (size_t)rows * hc * hc * 4);
    float *rx = xmalloc((size_t)rows * D * 4), *ry = xmalloc((size_t)rows * D * 4), *rXo = xmalloc(nX * 4);
    float *rpost = xmalloc((size_t)rows * hc * 4), *rcomb = xmalloc((size_t)rows * hc * hc * 4);
    for (int r = 0; r < rows; r++) {
        const float *Xr = X + (size_t)r * hc * D;
        dsv4_cpu_hc_pre(Xr, hc, D, fn, base, scale, 20, 1e-6f, 1e-6f, rx + (size_t)r * D, rpost + r * hc,
                        rcomb + (size_t)r * hc * hc);
        dsv4_cpu_hc_head(Xr, hc, D, hfn, hbase, hscale, 1e-6f, 1e-6f, ry + (size_t)r * D);
        dsv4_cpu_hc_post(a + (size_t)r * D, Xr, gpost + r * hc, gcomb + (size_t)r * hc * hc, hc, D, rXo + (size_t)r * hc * D);
    }
    char name[96];
    snprintf(name, sizeof name, "hc_pre x rows=%d hc=%d D=%d", rows, hc, D);
    check_ulp(name, gx, rx, (size_t)rows * D, 1);
    check_f32_exact("hc_pre post", gpost, rpost, (size_t)rows * hc);
    check_f32_exact("hc_pre comb", gcomb, rcomb, (size_t)rows * hc * hc);
    snprintf(name, sizeof name, "hc_head y rows=%d D=%d", rows, D);
    check_ulp(name, gy, ry, (size_t)rows * D, 1);
    snprintf(name, sizeof name, "hc_post rows=%d D=%d", rows, D);
    check_ulp(name, gXo, rXo, nX, 0);
    free(X); free(fn); free(hfn); free(a); free(gx); free(gy); free(gXo); free(gpost); free(gcomb);
    free(rx); free(ry); free(rXo); free(rpost); free(rcomb);
    dev_free_all();
}
static void test_hc(void) {
    hc_case(3, 4, 16);
    hc_case(2, 2, 40);
    hc_case(16, 4, 4096);
}

/* ==== sparse attention ================================================================================= */

/* One query set: n_q queries, H heads, K entries each over an n_kv-row buffer; a few −1 entries, repeats. */
static void attn_case(int n_q, int H, int K, int n_kv, int n_empty, int with_rope) {
    const int hd = 512;
    float *q = rand_bf16((size_t)n_q * H * hd, 1.0), *kv = rand_bf16((size_t)n_kv * hd, 1.0);
    /* scale some queries so softmaxes range from flat to peaked */
    for (int i = 0; i < n_q * H; i++) {
        float f = (float)(0.5 + 4.0 * test_rng_uniform(&rng));
        for (int d = 0; d < hd; d++) q[(size_t)i * hd + d] = dsv4_bf16_round(q[(size_t)i * hd + d] * f);
    }
    float *sink = xmalloc((size_t)H * 4);
    for (int h = 0; h < H; h++) sink[h] = (float)(test_rng_normal(&rng) * 2.0);
    int32_t *idx = xmalloc((size_t)n_q * K * 4), *pos = rand_pos(n_q, 1 << 20);
    for (int i = 0; i < n_q; i++)
        for (int j = 0; j < K; j++) {
            int32_t v = (int32_t)(test_rng_u64(&rng) % (uint64_t)n_kv);
            if (j < n_empty) v = -1;
            idx[(size_t)i * K + (j * 7919 + i) % K] = v; /* scatter the empties */
        }
    if (K > 3) idx[1] = idx[2]; /* a repeated row */
    uint16_t *dq = dev_bf16(q, (size_t)n_q * H * hd), *dkv = dev_bf16(kv, (size_t)n_kv * hd);
    float *dsink = dup_to_dev(sink, (size_t)H * 4);
    int32_t *didx = dup_to_dev(idx, (size_t)n_q * K * 4), *dpos = dup_to_dev(pos, (size_t)n_q * 4);
    uint16_t *dout = dalloc((size_t)n_q * H * hd * 2);
    float *dws = dalloc(dsv4_cuda_sparse_attn_ws_bytes(n_q, H, K));
    dsv4_cuda_attn_params p;
    memset(&p, 0, sizeof p);
    p.n_q = n_q; p.H = H; p.hd = hd; p.K = K; p.scale = 1.0f / sqrtf(512.0f);
    p.q = dq; p.kv = dkv; p.idx = didx; p.sink = dsink; p.inv_rope_pos = with_rope ? dpos : NULL;
    p.rope = rope_yarn; p.out = dout; p.ws = dws;
    LAUNCH(dsv4_cuda_sparse_attn(ctx, &p, ERR));
    float *got = dev_to_f32_bf16(dout, (size_t)n_q * H * hd), *ref = xmalloc((size_t)n_q * H * hd * 4);
    const float **rows = xmalloc((size_t)K * sizeof *rows);
    for (int i = 0; i < n_q; i++) {
        for (int j = 0; j < K; j++) {
            int32_t v = idx[(size_t)i * K + j];
            rows[j] = v >= 0 ? kv + (size_t)v * hd : NULL;
        }
        float *o = ref + (size_t)i * H * hd;
        dsv4_cpu_sparse_attn(q + (size_t)i * H * hd, H, hd, rows, K, sink, p.scale, o);
        if (with_rope)
            for (int h = 0; h < H; h++) dsv4_cpu_rope(o + (size_t)h * hd + hd - 64, pos[i], &rope_yarn, 1);
    }
    /* Tolerance (docs/NUMERICS.md): |got − ref| ≤ 2^-7·|ref| + 2^-7·(1 + 2^-6)·A[d], where
     * A[d] = Σ_j p_j·|v_j[d]| / Z (fp64; summed over the pair for the inverse-RoPE dims): any set of
     * BF16-rounding flips of the probabilities moves o[d] by at most 2^-7·A[d], the output rounding by one
     * BF16 ulp, FP32 accumulation by ≤ K·2^-24·A[d]. */
    size_t n = (size_t)n_q * H * hd, nd = 0, bad = 0;
    double worst = 0, se = 0, sr = 0;
    long maxulp = 0;
    double *A = xmalloc((size_t)hd * sizeof(double)), *sc = xmalloc((size_t)K * sizeof(double));
    for (size_t hrow = 0; hrow < (size_t)n_q * H; hrow++) {
        int qi = (int)(hrow / H), h = (int)(hrow % H);
        const float *qh = q + hrow * hd;
        double m = -INFINITY, Z = 0;
        for (int j = 0; j < K; j++) {
            int32_t v = idx[(size_t)qi * K + j];
            sc[j] = -INFINITY;
            if (v < 0) continue;
            double acc = 0;
            for (int d = 0; d < hd; d++) acc += (double)qh[d] * kv[(size_t)v * hd + d];
            sc[j] = acc * p.scale;
            if (sc[j] > m) m = sc[j];
        }
        for (int d = 0; d < hd; d++) A[d] = 0;
        for (int j = 0; j < K; j++) {
            int32_t v = idx[(size_t)qi * K + j];
            if (v < 0) continue;
            double e = exp(sc[j] - m);
            Z += e;
            for (int d = 0; d < hd; d++) A[d] += e * fabs(kv[(size_t)v * hd + d]);
        }
        Z += exp(sink[h] - m);
        for (int d = 0; d < hd; d++) A[d] = m == -INFINITY ? 0 : A[d] / Z;
        if (with_rope)
            for (int d = hd - 64; d < hd; d += 2) A[d] = A[d + 1] = A[d] + A[d + 1];
        for (int d = 0; d < hd; d++) {
            size_t i = hrow * hd + d;
            double e = fabs((double)got[i] - ref[i]);
            double tol = ldexp(fabs(ref[i]), -7) + ldexp(A[d], -7) * (1 + 1.0 / 64) + 1e-30;
            if (!(e <= tol)) bad++;
            if (e / tol > worst || isnan(e)) worst = isnan(e) ? INFINITY : e / tol;
            long u = ulp_dist(got[i], ref[i]);
            if (u) nd++;
            if (u > maxulp) maxulp = u;
            se += e * e;
            sr += (double)ref[i] * ref[i];
        }
    }
    free(A); free(sc);
    double rel = sr > 0 ? sqrt(se / sr) : 0;
    printf("  attn n_q=%d H=%d K=%d empty=%d%s: differing=%zu/%zu (%.4f%%) max_ulp=%ld rel_l2=%.3g worst err/tol=%.3f\n",
           n_q, H, K, n_empty, with_rope ? " +inv_rope" : "", nd, n, 100.0 * nd / n, maxulp, rel, worst);
    CHECK(bad == 0, "attention: %zu elements outside tolerance (worst err/tol %.3f)", bad, worst);
    CHECK(rel <= 1e-3 && nd * 100 <= n, "attention: rel_l2 %.3g, %zu of %zu not bitwise", rel, nd, n);
    free(q); free(kv); free(sink); free(idx); free(pos); free(got); free(ref); free(rows);
    dev_free_all();
}
static void test_attention_tiny(void) {
    attn_case(1, 3, 5, 7, 1, 0);
    attn_case(2, 5, 40, 50, 3, 1);
    attn_case(1, 2, 4, 4, 4, 0); /* every entry empty: zeros */
}
static void test_attention_flash(void) {
    attn_case(8, 64, 128 + 512, 4096, 17, 1); /* decode: window + top-k */
    attn_case(3, 64, 128, 300, 0, 1);         /* SWA */
}
static void test_attention_pro(void) { attn_case(2, 128, 128 + 1024, 3000, 5, 1); }

/* ==== compressor ======================================================================================= */

static void compress_case(int n_entries, int n_slots, int d, int is_indexer) {
    int ld = d + 24; /* a strided view, as the caller's state buffers are */
    long es = (long)n_slots * ld;
    size_t nv = (size_t)n_entries * es;
    float *vals = xmalloc(nv * 4), *sc = xmalloc(nv * 4);
    for (size_t i = 0; i < nv; i++) {
        vals[i] = (float)(test_rng_normal(&rng) * 1.5);
        sc[i] = (float)(test_rng_normal(&rng) * 2.0);
    }
    for (int e = 0; e < n_entries; e++) /* entry 0 style: first half of the slots empty for some entries */
        if (e % 3 == 0 && n_slots == 8)
            for (int s = 0; s < 4; s++)
                for (int c = 0; c < d; c++) sc[(size_t)e * es + (size_t)s * ld + c] = -INFINITY;
    float *nw = rand_bf16(d, 0.8);
    uint16_t *nwb = bf16_of(nw, d);
    int32_t *pos = rand_pos(n_entries, 1 << 20);
    float *dv = dup_to_dev(vals, nv * 4), *ds = dup_to_dev(sc, nv * 4);
    uint16_t *dnw = dup_to_dev(nwb, (size_t)d * 2), *dout = dalloc((size_t)n_entries * d * 2);
    int32_t *dpos = dup_to_dev(pos, (size_t)n_entries * 4);
    dsv4_cuda_compress_params p;
    memset(&p, 0, sizeof p);
    p.n_entries = n_entries; p.n_slots = n_slots; p.d = d; p.values = dv; p.scores = ds; p.entry_stride = es;
    p.ld = ld; p.positions = dpos; p.norm_w = dnw; p.eps = 1e-6f; p.rope = rope_yarn; p.is_indexer = is_indexer;
    p.out = dout; p.ld_out = d;
    LAUNCH(dsv4_cuda_compress(ctx, &p, ERR));
    float *got = dev_to_f32_bf16(dout, (size_t)n_entries * d), *ref = xmalloc((size_t)n_entries * d * 4);
    for (int e = 0; e < n_entries; e++) {
        float *o = ref + (size_t)e * d;
        dsv4_cpu_compress_pool(vals + (size_t)e * es, sc + (size_t)e * es, n_slots, d, ld, o);
        dsv4_cpu_compress_finish(o, d, nwb, 1e-6f, pos[e], &rope_yarn, is_indexer);
    }
    char name[96];
    snprintf(name, sizeof name, "compress %s entries=%d slots=%d d=%d", is_indexer ? "indexer" : "main", n_entries,
             n_slots, d);
    check_ulp(name, got, ref, (size_t)n_entries * d, 1);
    free(vals); free(sc); free(nw); free(nwb); free(pos); free(got); free(ref);
    dev_free_all();
}
static void test_compressor(void) {
    compress_case(3, 8, 512, 0);
    compress_case(64, 8, 512, 0);
    compress_case(16, 128, 512, 0);
    compress_case(64, 8, 128, 1);
}

/* ==== indexer scores and top-k ========================================================================= */

static void indexer_case(int n_q, int n_keys, int fp4_inputs) {
    const int nh = 64, dh = 128;
    float *q = rand_bf16((size_t)n_q * nh * dh, 1.0), *k = rand_bf16((size_t)n_keys * dh, 1.0);
    float *w = rand_bf16((size_t)n_q * nh, 0.05);
    if (fp4_inputs) { /* what the model feeds: Hadamard + FP4 on both */
        for (size_t i = 0; i < (size_t)n_q * nh; i++) {
            dsv4_cpu_hadamard128(q + i * dh);
            dsv4_cpu_fake_quant_fp4(q + i * dh, dh);
        }
        for (size_t i = 0; i < (size_t)n_keys; i++) {
            dsv4_cpu_hadamard128(k + i * dh);
            dsv4_cpu_fake_quant_fp4(k + i * dh, dh);
        }
    }
    int32_t *nk = xmalloc((size_t)n_q * 4);
    for (int i = 0; i < n_q; i++) nk[i] = n_keys - (i * 37) % (n_keys / 2 + 1); /* different visible counts */
    int ld = n_keys + 3;
    uint16_t *dq = dev_bf16(q, (size_t)n_q * nh * dh), *dk = dev_bf16(k, (size_t)n_keys * dh);
    uint16_t *dw = dev_bf16(w, (size_t)n_q * nh);
    int32_t *dnk = dup_to_dev(nk, (size_t)n_q * 4);
    float *dsc = dalloc((size_t)n_q * ld * 4);
    dsv4_cuda_indexer_params p = {n_q, nh, dh, dq, dw, dk, NULL, dnk, n_keys, dsc, ld};
    LAUNCH(dsv4_cuda_indexer_scores(ctx, &p, ERR));
    float *got = xmalloc((size_t)n_q * ld * 4), *ref = xmalloc((size_t)n_keys * 4);
    from_dev(got, dsc, (size_t)n_q * ld * 4);
    ulp_stat tot = {0, 0, 0};
    int tail_ok = 1;
    for (int i = 0; i < n_q; i++) {
        dsv4_cpu_indexer_scores(q + (size_t)i * nh * dh, w + (size_t)i * nh, nh, dh, k, nk[i], ref);
        ulp_stat s = compare_ulp(got + (size_t)i * ld, ref, (size_t)nk[i]);
        tot.n += s.n; tot.n_diff += s.n_diff;
        if (s.max_ulp > tot.max_ulp) tot.max_ulp = s.max_ulp;
        for (int j = nk[i]; j < n_keys; j++) tail_ok &= got[(size_t)i * ld + j] == -INFINITY;
    }
    printf("  indexer scores %s n_q=%d keys=%d: differing=%zu/%zu max_ulp=%ld\n", fp4_inputs ? "fp4" : "bf16", n_q,
           n_keys, tot.n_diff, tot.n, tot.max_ulp);
    CHECK(tail_ok, "invisible keys must score -inf");
    if (fp4_inputs) CHECK(tot.n_diff == 0, "fp4 inputs: scores must be bitwise (%zu differ)", tot.n_diff);
    else CHECK(tot.max_ulp <= 1 && tot.n_diff * 1000 <= tot.n, "bf16 inputs: %zu differ, max %ld ulp", tot.n_diff, tot.max_ulp);
    free(q); free(k); free(w); free(nk); free(got); free(ref);
    dev_free_all();
}
static void test_indexer_scores(void) {
    indexer_case(3, 1000, 1);
    indexer_case(2, 1000, 0);
    indexer_case(1, 100000, 1);
}

/* top-k over scores with many ties (BF16 values of a narrow range), some −inf and NaN. */
static void topk_case(int rows, int n, int k, int varied_n, int specials) {
    int ld = n + 5;
    float *s = xmalloc((size_t)rows * ld * 4);
    for (size_t i = 0; i < (size_t)rows * ld; i++) s[i] = dsv4_bf16_round((float)(test_rng_normal(&rng) * 0.05));
    if (specials)
        for (int r = 0; r < rows; r++) {
            float *x = s + (size_t)r * ld;
            for (int j = 0; j < n / 50 + 1; j++) x[test_rng_u64(&rng) % (uint64_t)n] = -INFINITY;
            for (int j = 0; j < n / 100 + 1; j++) x[test_rng_u64(&rng) % (uint64_t)n] = NAN;
            x[test_rng_u64(&rng) % (uint64_t)n] = -0.0f;
            x[test_rng_u64(&rng) % (uint64_t)n] = 0.0f;
        }
    int32_t *nr = xmalloc((size_t)rows * 4);
    for (int r = 0; r < rows; r++) nr[r] = varied_n ? (int)(1 + test_rng_u64(&rng) % (uint64_t)n) : n;
    if (varied_n && rows > 1) nr[1] = n;
    float *ds = dup_to_dev(s, (size_t)rows * ld * 4);
    int32_t *dnr = dup_to_dev(nr, (size_t)rows * 4), *dout = dalloc((size_t)rows * k * 4);
    LAUNCH(dsv4_cuda_topk(ctx, ds, rows, ld, varied_n ? dnr : NULL, n, k, dout, k, ERR));
    int32_t *got = xmalloc((size_t)rows * k * 4), *ref = xmalloc((size_t)k * 4);
    from_dev(got, dout, (size_t)rows * k * 4);
    int mism = 0;
    for (int r = 0; r < rows; r++) {
        int kk = k < nr[r] ? k : nr[r];
        dsv4_cpu_topk(s + (size_t)r * ld, nr[r], k, ref);
        for (int j = 0; j < k; j++) {
            int32_t want = j < kk ? ref[j] : -1;
            if (got[(size_t)r * k + j] != want) mism++;
        }
    }
    printf("  topk rows=%d n=%d k=%d%s%s: mismatching slots=%d\n", rows, n, k, varied_n ? " varied-n" : "",
           specials ? " +inf/nan/-0" : "", mism);
    CHECK(mism == 0, "top-k differs from dsv4_cpu_topk in %d slots", mism);
    free(s); free(nr); free(got); free(ref);
    dev_free_all();
}
static void test_topk(void) {
    topk_case(3, 10, 4, 0, 0);
    topk_case(4, 300, 512, 1, 1); /* k > n */
    topk_case(8, 1000, 512, 1, 1);
    topk_case(4, 100000, 512, 0, 1);
    topk_case(2, 262144, 1024, 1, 0);
    topk_case(2, 5000, 2048, 0, 1);
}

/* ==== MoE, embedding, argmax =========================================================================== */

static void test_route(void) {
    const int rows = 64, E = 256, k = 6, vocab = 1000;
    float *z = xmalloc((size_t)rows * E * 4), *bias = xmalloc((size_t)E * 4);
    for (size_t i = 0; i < (size_t)rows * E; i++) z[i] = (float)(test_rng_normal(&rng) * 3.0);
    for (int e = 0; e < E; e++) bias[e] = (float)(test_rng_normal(&rng) * 0.1);
    for (int r = 0; r < 4; r++) /* ties: equal logits and no bias differences */
        for (int e = 0; e < 16; e++) z[(size_t)r * E + e * 16] = 5.0f;
    z[5] = 30.0f; z[6] = -90.0f; /* softplus threshold and deep negative */
    int64_t *tid = xmalloc((size_t)vocab * k * 8);
    for (size_t i = 0; i < (size_t)vocab * k; i++) tid[i] = (int64_t)(test_rng_u64(&rng) % E);
    int32_t *tok = rand_pos(rows, vocab);
    float *dz = dup_to_dev(z, (size_t)rows * E * 4), *db = dup_to_dev(bias, (size_t)E * 4);
    int64_t *dtid = dup_to_dev(tid, (size_t)vocab * k * 8);
    int32_t *dtok = dup_to_dev(tok, (size_t)rows * 4), *dex = dalloc((size_t)rows * k * 4);
    float *dw = dalloc((size_t)rows * k * 4);
    int32_t gex[64 * 6], rex[6];
    float gw[64 * 6], rw[6];
    for (int mode = 0; mode < 3; mode++) { /* 0 bias, 1 no bias, 2 hash */
        LAUNCH(dsv4_cuda_route(ctx, dz, rows, E, mode == 0 ? db : NULL, mode == 2 ? dtid : NULL,
                               mode == 2 ? dtok : NULL, k, 1.5f, dex, dw, ERR));
        from_dev(gex, dex, sizeof gex);
        from_dev(gw, dw, sizeof gw);
        int bad_id = 0, bad_w = 0, diff_w = 0;
        for (int r = 0; r < rows; r++) {
            dsv4_cpu_route(z + (size_t)r * E, E, mode == 0 ? bias : NULL, mode == 2 ? tid + (size_t)tok[r] * k : NULL,
                           k, 1.5f, rex, rw);
            for (int i = 0; i < k; i++) {
                bad_id += gex[r * k + i] != rex[i];
                /* glibc's log1pf is not correctly rounded (the GPU's fp64-rounded one is): ≤ 2 FP32 ulps */
                double dw = fabs((double)gw[r * k + i] - rw[i]);
                diff_w += dw != 0.0;
                bad_w += !(dw <= 2.0 * ldexp(fabs(rw[i]), -23));
            }
        }
        printf("  route %s rows=%d E=%d k=%d: wrong ids=%d, weights not bitwise=%d/%d, beyond 2 fp32 ulp=%d\n",
               mode == 0 ? "learned+bias" : (mode == 1 ? "learned" : "hash"), rows, E, k, bad_id, diff_w, rows * k,
               bad_w);
        CHECK(bad_id == 0 && bad_w == 0, "router differs (mode %d)", mode);
    }
    free(z); free(bias); free(tid); free(tok);
    dev_free_all();
}

static void test_swiglu(void) {
    const int rows = 16, n = 2048, ld = 2 * n;
    float *gu = rand_bf16((size_t)rows * ld, 6.0), *wt = xmalloc((size_t)rows * 4);
    for (int r = 0; r < rows; r++) wt[r] = (float)(0.1 + test_rng_uniform(&rng));
    uint16_t *dgu = dev_bf16(gu, (size_t)rows * ld), *dh = dalloc((size_t)rows * n * 2);
    float *dwt = dup_to_dev(wt, (size_t)rows * 4);
    float *ref = xmalloc((size_t)rows * n * 4);
    for (int lim = 0; lim < 2; lim++) {
        LAUNCH(dsv4_cuda_swiglu(ctx, dgu, dgu + n, ld, rows, n, lim ? 10.0f : 0.0f, lim ? dwt : NULL, dh, n, ERR));
        float *got = dev_to_f32_bf16(dh, (size_t)rows * n);
        for (int r = 0; r < rows; r++)
            dsv4_cpu_swiglu(gu + (size_t)r * ld, gu + (size_t)r * ld + n, n, lim ? 10.0f : 0.0f, lim ? wt[r] : 1.0f,
                            ref + (size_t)r * n);
        check_ulp(lim ? "swiglu limit=10 routed weight" : "swiglu no limit, weight 1", got, ref, (size_t)rows * n, 0);
        free(got);
    }
    free(gu); free(wt); free(ref);
    dev_free_all();
}

static void test_embed_argmax(void) {
    const int vocab = 5000, D = 4096, rows = 9;
    float *tab = rand_bf16((size_t)vocab * D, 1.0);
    uint16_t *dt = dev_bf16(tab, (size_t)vocab * D), *dout = dalloc((size_t)rows * D * 2);
    int32_t *tok = rand_pos(rows, vocab);
    tok[0] = vocab - 1;
    int32_t *dtok = dup_to_dev(tok, (size_t)rows * 4);
    LAUNCH(dsv4_cuda_embed(ctx, dt, vocab, D, dtok, rows, dout, ERR));
    float *got = dev_to_f32_bf16(dout, (size_t)rows * D), *ref = xmalloc((size_t)rows * D * 4);
    uint16_t *tb = bf16_of(tab, (size_t)vocab * D);
    for (int r = 0; r < rows; r++) dsv4_cpu_embed(tb, D, tok[r], ref + (size_t)r * D);
    check_ulp("embed rows=9 D=4096", got, ref, (size_t)rows * D, 0);
    free(tab); free(tb); free(tok); free(got); free(ref);
    /* argmax over the real vocab, with ties and NaN */
    const int V = 129280, n = 5;
    float *lg = xmalloc((size_t)n * V * 4);
    for (size_t i = 0; i < (size_t)n * V; i++) lg[i] = (float)test_rng_normal(&rng);
    lg[(size_t)0 * V + 100] = 50.0f; lg[(size_t)0 * V + 90000] = 50.0f;  /* tie: 100 wins */
    lg[(size_t)1 * V + 7] = NAN; lg[(size_t)1 * V + 129279] = 60.0f;     /* NaN never wins */
    for (int v = 0; v < V; v++) lg[(size_t)2 * V + v] = 1.0f;             /* all equal: 0 */
    float *dl = dup_to_dev(lg, (size_t)n * V * 4);
    int32_t *dam = dalloc((size_t)n * 4), am[5];
    LAUNCH(dsv4_cuda_argmax(ctx, dl, n, V, V, dam, ERR));
    from_dev(am, dam, sizeof am);
    int bad = 0;
    for (int r = 0; r < n; r++) {
        int32_t want;
        dsv4_cpu_topk(lg + (size_t)r * V, V, 1, &want);
        bad += am[r] != want;
    }
    printf("  argmax V=%d rows=%d: wrong=%d (row0 %d, row1 %d, row2 %d)\n", V, n, bad, am[0], am[1], am[2]);
    CHECK(bad == 0 && am[0] == 100 && am[1] == 129279 && am[2] == 0, "argmax wrong");
    free(lg);
    dev_free_all();
}

/* ==== timing (informative; printed, not checked) ======================================================= */

static void time_ops(void) {
    /* decode attention, Flash: 64 sequences × 64 heads × 640 keys; indexer over 100000 keys; top-k */
    const int n_q = 64, H = 64, K = 640, n_kv = 64 * 640;
    float *q = rand_bf16((size_t)n_q * H * 512, 1.0), *kv = rand_bf16((size_t)n_kv * 512, 1.0);
    int32_t *idx = xmalloc((size_t)n_q * K * 4);
    for (int i = 0; i < n_q * K; i++) idx[i] = i;
    float sink[128];
    for (int h = 0; h < 128; h++) sink[h] = 0.5f;
    uint16_t *dq = dev_bf16(q, (size_t)n_q * H * 512), *dkv = dev_bf16(kv, (size_t)n_kv * 512);
    int32_t *didx = dup_to_dev(idx, (size_t)n_q * K * 4);
    float *dsink = dup_to_dev(sink, sizeof sink), *dws = dalloc(dsv4_cuda_sparse_attn_ws_bytes(n_q, H, K));
    uint16_t *dout = dalloc((size_t)n_q * H * 512 * 2);
    dsv4_cuda_attn_params p;
    memset(&p, 0, sizeof p);
    p.n_q = n_q; p.H = H; p.hd = 512; p.K = K; p.scale = 1.0f / sqrtf(512.0f);
    p.q = dq; p.kv = dkv; p.idx = didx; p.sink = dsink; p.rope = rope_yarn; p.out = dout; p.ws = dws;
    void *e0, *e1;
    dsv4_err err;
    dsv4_cuda_event_create(&e0, &err);
    dsv4_cuda_event_create(&e1, &err);
    float ms = 0;
    for (int it = 0; it < 3; it++) dsv4_cuda_sparse_attn(ctx, &p, &err);
    dsv4_cuda_event_record(ctx, e0, &err);
    for (int it = 0; it < 20; it++) dsv4_cuda_sparse_attn(ctx, &p, &err);
    dsv4_cuda_event_record(ctx, e1, &err);
    dsv4_cuda_event_elapsed_ms(e0, e1, &ms, &err);
    double us = ms * 1000.0 / 20, bytes = (double)n_q * K * 1024 + n_q * H * 1024 * 2.0;
    double flops = 4.0 * n_q * H * K * 512;
    printf("  time attn decode n_q=%d H=%d K=%d: %.1f us (%.0f GB/s of KV+q+out, %.2f TFLOP/s)\n", n_q, H, K, us,
           bytes / us / 1e3, flops / us / 1e6);
    /* indexer scores over 100000 keys, 4 queries + top-k 512 */
    const int nk = 100000, nqi = 4;
    float *iq = rand_bf16((size_t)nqi * 64 * 128, 1.0), *ik = rand_bf16((size_t)nk * 128, 1.0), *iw = rand_bf16(nqi * 64, 0.05);
    int32_t nks[4] = {nk, nk, nk, nk};
    uint16_t *diq = dev_bf16(iq, (size_t)nqi * 64 * 128), *dik = dev_bf16(ik, (size_t)nk * 128), *diw = dev_bf16(iw, nqi * 64);
    int32_t *dnk = dup_to_dev(nks, sizeof nks), *dti = dalloc((size_t)nqi * 512 * 4);
    float *dsc = dalloc((size_t)nqi * nk * 4);
    dsv4_cuda_indexer_params ip = {nqi, 64, 128, diq, diw, dik, NULL, dnk, nk, dsc, nk};
    for (int it = 0; it < 2; it++) dsv4_cuda_indexer_scores(ctx, &ip, &err);
    dsv4_cuda_event_record(ctx, e0, &err);
    for (int it = 0; it < 10; it++) dsv4_cuda_indexer_scores(ctx, &ip, &err);
    dsv4_cuda_event_record(ctx, e1, &err);
    dsv4_cuda_event_elapsed_ms(e0, e1, &ms, &err);
    us = ms * 100.0;
    printf("  time indexer scores %d queries x %d keys: %.1f us (%.2f TFLOP/s)\n", nqi, nk, us,
           2.0 * nqi * nk * 64 * 128 / us / 1e6);
    dsv4_cuda_event_record(ctx, e0, &err);
    for (int it = 0; it < 10; it++) dsv4_cuda_topk(ctx, dsc, nqi, nk, NULL, nk, 512, dti, 512, &err);
    dsv4_cuda_event_record(ctx, e1, &err);
    dsv4_cuda_event_elapsed_ms(e0, e1, &ms, &err);
    printf("  time topk %d rows x %d, k=512: %.1f us\n", nqi, nk, ms * 100.0);
    dsv4_cuda_event_destroy(e0);
    dsv4_cuda_event_destroy(e1);
    free(q); free(kv); free(idx); free(iq); free(ik); free(iw);
    dev_free_all();
}

int main(void) {
    if (dsv4_cuda_device_count() == 0) {
        test_skip("test_cuda_ops", "no CUDA device");
        return test_finish();
    }
    dsv4_err err;
    dsv4_status st = dsv4_cuda_ctx_create(0, 0, &ctx, &err);
    if (st != DSV4_OK) {
        char why[600];
        snprintf(why, sizeof why, "no usable CUDA device (%s: %s)", dsv4_status_name(st), err.msg);
        test_skip("test_cuda_ops", why);
        return test_finish();
    }
    char desc[256];
    dsv4_cuda_describe(ctx, desc, sizeof desc);
    printf("device: %s\n", desc);
    test_rng_seed(&rng, 20261126);
    dsv4_rope_init(&rope_yarn, 64, 160000.0, 1, 16.0, 65536.0, 32.0, 1.0);
    dsv4_rope_init(&rope_plain, 64, 10000.0, 0, 1.0, 0.0, 32.0, 1.0);
    RUN(test_rmsnorm);
    RUN(test_qnorm_rope);
    RUN(test_rope);
    RUN(test_fake_quant);
    RUN(test_hc);
    RUN(test_attention_tiny);
    RUN(test_attention_flash);
    RUN(test_attention_pro);
    RUN(test_compressor);
    RUN(test_indexer_scores);
    RUN(test_topk);
    RUN(test_route);
    RUN(test_swiglu);
    RUN(test_embed_argmax);
    if (!getenv("DSV4_TEST_NO_TIMING")) time_ops();
    dsv4_cuda_ctx_destroy(ctx);
    return test_finish();
}
#endif
