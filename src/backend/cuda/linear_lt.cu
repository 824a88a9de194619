/* linear_lt.cu — every cuBLASLt call of dsv4: the BF16 linear and the FP8 block-scaled linear (cuBLASLt's
 * "DeepSeek" scaling modes, CUDA 12.9+), with one plan per shape kept in the context so that the algorithm
 * heuristic runs once per shape, not once per call (see cuda_linear.h for the contracts).
 *
 * Must not: allocate device memory inside a call (the FP8 path converts its scales into ctx->ws; weight
 * scales prepared at load live in buffers dsv4_cuda_linear_fp8_lt_prepare allocates then), synchronize the
 * stream (except dsv4_cuda_linear_fp8_lt_release, which waits for the calls in flight before it frees a
 * table), or touch the split-K counters.
 *
 * ==== Plans =================================================================================================
 * A plan is the op descriptor, the three matrix layouts and the algorithm cublasLtMatmulAlgoGetHeuristic chose,
 * keyed by (kind, M, N, K). Descriptors are host objects; cuBLASLt reads them when a call is enqueued, so a
 * cached plan replays correctly inside a CUDA graph and the scale pointers of the FP8 op can be set per call.
 * At most LT_MAX_PLANS plans; past that the least recently used one is dropped (prefill passes of many
 * different row counts), which only costs another heuristic query.
 *
 * ==== BF16 linear ===========================================================================================
 * Row-major y[M,N] = x[M,K]·W[N,K]ᵀ is, in cuBLAS's column-major terms, Y(N×M) = Wᵀ-op(K×N stored) · X(K×M):
 * A = W with op T (the "TN" case cuBLAS is fastest at), B = x with op N, ld = K for both, ldc = N. Why cuBLASLt
 * here: BF16 GEMM is what cuBLAS is tuned for, the BF16 linears (compressor wkv/wgate, indexer weights_proj,
 * router gate, wo_a, LM head) are a small share of the bytes, and a hand kernel would only re-derive it.
 *
 * ==== FP8 block-scaled linear ==============================================================================
 * Row-major y[M,N] = x[M,K]·W[N,K]ᵀ is, in cuBLAS's column-major terms, D(N×M) = op(A)·B with A = W (stored
 * K×N, op T) and B = x (stored K×M, op N) — the "TN" layout FP8 cuBLASLt requires. Scale modes:
 *   A (weights):     CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F — one FP32 per 128×128 block, stored
 *                    [N/128][L4] (L4 = K/128 rounded up to a multiple of 4, the padding cuBLASLt expects:
 *                    pytorch/pytorch#166752 documents that an unpadded stride gives silently wrong results
 *                    when (K/128) % 4 != 0);
 *   B (activations): CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F — one FP32 per 1×128 block, stored "MN-major":
 *                    [K/128][M] (the M scales of one K block contiguous).
 * Our scales are e8m0 bytes ([M][K/128] for x, [N/128][K/128] for W); one small kernel per call writes the
 * FP32 copies into ctx->ws (activations always; weights only when the weight was not prepared at load).
 * e8m0 → FP32 is exact (2^(c-127); c = 0 gives the FP32 subnormal 2^-127), so cuBLASLt multiplies by the
 * very scales the CPU reference uses. Numerics: docs/NUMERICS.md "CUDA linear". */
#include <cublasLt.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cuda/cuda_linear.h"

#define LT_MAX_PLANS 256
#define LT_MAX_WEIGHTS 8192 /* prepared FP8 weight-scale tables (open addressing, load factor <= 1/2) */

enum { LT_BF16_OUT_BF16 = 0, LT_BF16_OUT_F32 = 1, LT_FP8 = 2 };

typedef struct lt_plan {
    int kind, M, N, K;
    unsigned long last_use;      /* LRU clock */
    cublasLtMatmulDesc_t op;     /* owned */
    cublasLtMatrixLayout_t la, lb, lc;
    cublasLtMatmulAlgo_t algo;
} lt_plan;

typedef struct lt_weight {
    const uint8_t *ws;  /* key: the e8m0 scale tensor [N/128, K/128] (borrowed) */
    int N, K;
    float *f32;         /* owned device [N/128, L4] */
} lt_weight;

struct dsv4_cuda_lt_cache {
    lt_plan plans[LT_MAX_PLANS];
    int n_plans;
    unsigned long clock;
    long queries, hits;          /* heuristic queries made, plan-cache hits */
    lt_weight wt[2 * LT_MAX_WEIGHTS];
    int n_wt;
};

static int l4_of(int K) { return ((K / 128) + 3) & ~3; }

static void plan_free(lt_plan *p) {
    if (p->lc) cublasLtMatrixLayoutDestroy(p->lc);
    if (p->lb) cublasLtMatrixLayoutDestroy(p->lb);
    if (p->la) cublasLtMatrixLayoutDestroy(p->la);
    if (p->op) cublasLtMatmulDescDestroy(p->op);
    memset(p, 0, sizeof *p);
}

extern "C" void dsv4_cuda_lt_cache_destroy(dsv4_cuda_ctx *ctx) {
    dsv4_cuda_lt_cache *c = ctx ? ctx->lt_cache : NULL;
    if (!c) return;
    for (int i = 0; i < c->n_plans; i++) plan_free(&c->plans[i]);
    for (int i = 0; i < 2 * LT_MAX_WEIGHTS; i++)
        if (c->wt[i].f32) cudaFree(c->wt[i].f32);
    free(c);
    ctx->lt_cache = NULL;
}

static dsv4_status cache_get(dsv4_cuda_ctx *ctx, dsv4_cuda_lt_cache **out, dsv4_err *err) {
    if (!ctx->lt_cache) {
        ctx->lt_cache = (dsv4_cuda_lt_cache *)calloc(1, sizeof(dsv4_cuda_lt_cache));
        if (!ctx->lt_cache) return dsv4_err_set(err, DSV4_ERR_NOMEM, "cuBLASLt plan cache: out of host memory");
    }
    *out = ctx->lt_cache;
    return DSV4_OK;
}

extern "C" void dsv4_cuda_lt_stats_get(const dsv4_cuda_ctx *ctx, dsv4_cuda_lt_stats *s) {
    memset(s, 0, sizeof *s);
    const dsv4_cuda_lt_cache *c = ctx->lt_cache;
    if (!c) return;
    s->plans = c->n_plans;
    s->heuristic_queries = c->queries;
    s->plan_hits = c->hits;
    s->prepared_weights = c->n_wt;
}

/* Builds the descriptors of a plan and asks the heuristic once. On failure the plan is left empty. */
static dsv4_status plan_build(dsv4_cuda_ctx *ctx, dsv4_cuda_lt_cache *c, lt_plan *p, int kind, int M, int N, int K,
                              dsv4_err *err) {
    memset(p, 0, sizeof *p);
    auto body = [&]() -> dsv4_status {
        cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
        cudaDataType_t in_t = kind == LT_FP8 ? CUDA_R_8F_E4M3 : CUDA_R_16BF;
        cudaDataType_t out_t = kind == LT_BF16_OUT_F32 ? CUDA_R_32F : CUDA_R_16BF;
        DSV4_CUDA_CHECK(err, cublasLtMatmulDescCreate(&p->op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
        DSV4_CUDA_CHECK(err, cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
        DSV4_CUDA_CHECK(err, cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
        if (kind == LT_FP8) {
            int32_t am = CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F, bm = CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F;
            int8_t fast = 0; /* per-block promotion in FP32, never the fast (unpromoted) accumulation */
            DSV4_CUDA_CHECK(err, cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_A_SCALE_MODE, &am, sizeof am));
            DSV4_CUDA_CHECK(err, cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_B_SCALE_MODE, &bm, sizeof bm));
            DSV4_CUDA_CHECK(err, cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_FAST_ACCUM, &fast, sizeof fast));
            /* the heuristic may look at the scale pointers' presence: give it valid (workspace) ones */
            const void *sp = ctx->ws;
            DSV4_CUDA_CHECK(err, cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &sp, sizeof sp));
            DSV4_CUDA_CHECK(err, cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &sp, sizeof sp));
        }
        DSV4_CUDA_CHECK(err, cublasLtMatrixLayoutCreate(&p->la, in_t, K, N, K));
        DSV4_CUDA_CHECK(err, cublasLtMatrixLayoutCreate(&p->lb, in_t, K, M, K));
        DSV4_CUDA_CHECK(err, cublasLtMatrixLayoutCreate(&p->lc, out_t, N, M, N));
        cublasLtMatmulPreference_t pref = NULL;
        DSV4_CUDA_CHECK(err, cublasLtMatmulPreferenceCreate(&pref));
        size_t wsb = ctx->lt_ws_bytes;
        cublasStatus_t s1 = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &wsb,
                                                                 sizeof wsb);
        cublasLtMatmulHeuristicResult_t h;
        int found = 0;
        cublasStatus_t s2 = s1 == CUBLAS_STATUS_SUCCESS
                                ? cublasLtMatmulAlgoGetHeuristic((cublasLtHandle_t)ctx->lt, p->op, p->la, p->lb, p->lc,
                                                                 p->lc, pref, 1, &h, &found)
                                : s1;
        cublasLtMatmulPreferenceDestroy(pref);
        c->queries++;
        DSV4_CUDA_CHECK(err, s2);
        if (found < 1)
            return dsv4_err_set(err, DSV4_ERR_UNSUPPORTED, "cuBLASLt: no %s algorithm for M=%d K=%d N=%d",
                                kind == LT_FP8 ? "FP8 block-scaled" : "BF16", M, K, N);
        p->algo = h.algo;
        return DSV4_OK;
    };
    dsv4_status st = body();
    if (st != DSV4_OK) {
        plan_free(p);
        return st;
    }
    p->kind = kind;
    p->M = M;
    p->N = N;
    p->K = K;
    return DSV4_OK;
}

/* The plan of (kind, M, N, K): cached, or built now (evicting the least recently used when full). */
static dsv4_status plan_get(dsv4_cuda_ctx *ctx, int kind, int M, int N, int K, lt_plan **out, dsv4_err *err) {
    dsv4_cuda_lt_cache *c = NULL;
    dsv4_status st = cache_get(ctx, &c, err);
    if (st != DSV4_OK) return st;
    c->clock++;
    for (int i = 0; i < c->n_plans; i++) {
        lt_plan *p = &c->plans[i];
        if (p->kind == kind && p->M == M && p->N == N && p->K == K) {
            p->last_use = c->clock;
            c->hits++;
            *out = p;
            return DSV4_OK;
        }
    }
    int slot = c->n_plans;
    if (slot == LT_MAX_PLANS) { /* full: rebuild the least recently used plan in place */
        slot = 0;
        for (int i = 1; i < LT_MAX_PLANS; i++)
            if (c->plans[i].last_use < c->plans[slot].last_use) slot = i;
        plan_free(&c->plans[slot]); /* an empty plan (M = 0) matches no call */
    }
    st = plan_build(ctx, c, &c->plans[slot], kind, M, N, K, err);
    if (st != DSV4_OK) return st;
    if (slot == c->n_plans) c->n_plans++;
    c->plans[slot].last_use = c->clock;
    *out = &c->plans[slot];
    return DSV4_OK;
}

/* ==== BF16 linear ========================================================================================== */

extern "C" dsv4_status dsv4_cuda_linear_bf16(dsv4_cuda_ctx *ctx, const uint16_t *x, int M, int K, const uint16_t *w,
                                             int N, void *y, dsv4_out_round out_round, dsv4_err *err) {
    if (M < 1 || K < 2 || N < 2 || (K & 1) || (N & 1))
        return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "dsv4_cuda_linear_bf16: M=%d K=%d N=%d", M, K, N);
    lt_plan *p;
    dsv4_status st =
        plan_get(ctx, out_round == DSV4_OUT_BF16 ? LT_BF16_OUT_BF16 : LT_BF16_OUT_F32, M, N, K, &p, err);
    if (st != DSV4_OK) return st;
    const float alpha = 1.0f, beta = 0.0f;
    DSV4_CUDA_CHECK(err, cublasLtMatmul((cublasLtHandle_t)ctx->lt, p->op, &alpha, w, p->la, x, p->lb, &beta, y, p->lc,
                                        y, p->lc, &p->algo, ctx->lt_ws, ctx->lt_ws_bytes, (cudaStream_t)ctx->stream));
    return DSV4_OK;
}

/* ==== FP8 block-scaled linear ============================================================================== */

/* e8m0 exponent byte -> 2^(c-127) (c = 0: the FP32 subnormal 2^-127; 255: NaN), as linear.cu does. */
__device__ __forceinline__ float lt_e8m0_to_f32(uint32_t c) {
    if (c == 0) return 0x1p-127f;
    if (c == 255) return __int_as_float(0x7fc00000);
    return __int_as_float((int)(c << 23));
}

/* Scale conversion, one launch: xs [M][KB] e8m0 -> xf [KB][M] FP32 (element i < M·KB), then, when wf != NULL,
 * ws [NB][KB] e8m0 -> wf [NB][L4] FP32 with the padding columns set to 1 (never read for data; finite). */
__global__ void lt_scales_kernel(const uint8_t *__restrict__ xs, int M, int KB, float *__restrict__ xf,
                                 const uint8_t *__restrict__ ws, int NB, int L4, float *__restrict__ wf) {
    const long nx = (long)M * KB, nw = wf ? (long)NB * L4 : 0;
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < nx + nw; i += (long)gridDim.x * blockDim.x) {
        if (i < nx) {
            long kb = i / M, m = i % M; /* write-coalesced: consecutive threads, consecutive m */
            xf[i] = lt_e8m0_to_f32(xs[m * KB + kb]);
        } else {
            long j = i - nx, nb = j / L4, kb = j % L4;
            wf[j] = kb < KB ? lt_e8m0_to_f32(ws[nb * KB + kb]) : 1.0f;
        }
    }
}

static unsigned long hash_ptr(const void *p) {
    unsigned long v = (unsigned long)(uintptr_t)p;
    v ^= v >> 33;
    v *= 0xff51afd7ed558ccdul;
    v ^= v >> 33;
    return v;
}

/* A released entry keeps this key (a tombstone) so that lookups probe past it; insertion reuses it. */
#define LT_TOMB ((const uint8_t *)(uintptr_t)1)

static lt_weight *weight_find(dsv4_cuda_lt_cache *c, const uint8_t *ws) {
    if (!c || !c->n_wt) return NULL;
    for (unsigned long i = hash_ptr(ws) % (2 * LT_MAX_WEIGHTS), n = 0; n < 2 * LT_MAX_WEIGHTS;
         i = (i + 1) % (2 * LT_MAX_WEIGHTS), n++) {
        if (c->wt[i].ws == ws) return &c->wt[i];
        if (!c->wt[i].ws) return NULL;
    }
    return NULL;
}

extern "C" void dsv4_cuda_linear_fp8_lt_release(dsv4_cuda_ctx *ctx, const uint8_t *ws) {
    lt_weight *w = ws ? weight_find(ctx->lt_cache, ws) : NULL;
    if (!w) return;
    cudaStreamSynchronize((cudaStream_t)ctx->stream); /* calls in flight may still read the table */
    cudaFree(w->f32);
    *w = (lt_weight){LT_TOMB, 0, 0, NULL};
    ctx->lt_cache->n_wt--;
}

extern "C" dsv4_status dsv4_cuda_linear_fp8_lt_prepare(dsv4_cuda_ctx *ctx, const uint8_t *ws, int N, int K,
                                                       dsv4_err *err) {
    if (N < 128 || N % 128 || K < 128 || K % 128)
        return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "dsv4_cuda_linear_fp8_lt_prepare: N=%d K=%d (need multiples of 128)",
                            N, K);
    dsv4_cuda_lt_cache *c = NULL;
    dsv4_status st = cache_get(ctx, &c, err);
    if (st != DSV4_OK) return st;
    lt_weight *have = weight_find(c, ws);
    if (have && have->N == N && have->K == K) return DSV4_OK;
    if (have)
        return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "dsv4_cuda_linear_fp8_lt_prepare: scales already prepared as "
                            "N=%d K=%d, now N=%d K=%d", have->N, have->K, N, K);
    if (c->n_wt >= LT_MAX_WEIGHTS)
        return dsv4_err_set(err, DSV4_ERR_CAPACITY, "dsv4_cuda_linear_fp8_lt_prepare: more than %d weights",
                            LT_MAX_WEIGHTS);
    const int NB = N / 128, KB = K / 128, L4 = l4_of(K);
    float *f32 = NULL;
    DSV4_CUDA_CHECK(err, cudaSetDevice(ctx->device));
    DSV4_CUDA_CHECK(err, cudaMalloc((void **)&f32, sizeof(float) * (size_t)NB * L4));
    long n = (long)NB * L4;
    int blocks = (int)((n + 255) / 256);
    lt_scales_kernel<<<blocks, 256, 0, (cudaStream_t)ctx->stream>>>(NULL, 0, KB, NULL, ws, NB, L4, f32);
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) {
        cudaFree(f32);
        return dsv4_err_set(err, DSV4_ERR_CUDA, "lt_scales_kernel launch: %s (%s:%d)", cudaGetErrorString(e), __FILE__,
                            __LINE__);
    }
    unsigned long i = hash_ptr(ws) % (2 * LT_MAX_WEIGHTS);
    while (c->wt[i].ws && c->wt[i].ws != LT_TOMB) i = (i + 1) % (2 * LT_MAX_WEIGHTS);
    c->wt[i] = (lt_weight){ws, N, K, f32};
    c->n_wt++;
    return DSV4_OK;
}

extern "C" dsv4_status dsv4_cuda_linear_fp8_lt(dsv4_cuda_ctx *ctx, const uint8_t *xq, const uint8_t *xs, int M, int K,
                                               const uint8_t *w, const uint8_t *ws, int N, uint16_t *y,
                                               dsv4_err *err) {
    if (M < 1 || K < 128 || K % 128 || N < 128 || N % 128)
        return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "dsv4_cuda_linear_fp8_lt: M=%d K=%d N=%d (need M>=1, K%%128==0, "
                            "N%%128==0)", M, K, N);
    if (((uintptr_t)xq | (uintptr_t)w | (uintptr_t)y) & 15)
        return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "dsv4_cuda_linear_fp8_lt: xq, w and y must be 16-byte aligned");
    const int KB = K / 128, NB = N / 128, L4 = l4_of(K);
    lt_weight *pw = weight_find(ctx->lt_cache, ws);
    if (pw && (pw->N != N || pw->K != K))
        return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "dsv4_cuda_linear_fp8_lt: weight scales prepared as N=%d K=%d, "
                            "called with N=%d K=%d", pw->N, pw->K, N, K);
    /* ctx->ws: [KB][M] activation scales, then (unprepared weight) [NB][L4] weight scales, 256-byte aligned */
    size_t xbytes = ((sizeof(float) * (size_t)M * KB) + 255) & ~(size_t)255;
    size_t need = xbytes + (pw ? 0 : sizeof(float) * (size_t)NB * L4);
    if (need > ctx->ws_bytes)
        return dsv4_err_set(err, DSV4_ERR_CAPACITY, "dsv4_cuda_linear_fp8_lt: scales need %zu bytes of workspace, "
                            "have %zu", need, ctx->ws_bytes);
    float *xf = (float *)ctx->ws;
    float *wf = pw ? pw->f32 : (float *)((char *)ctx->ws + xbytes);
    long n = (long)M * KB + (pw ? 0 : (long)NB * L4);
    int blocks = (int)((n + 255) / 256);
    if (blocks > 4 * ctx->sm_count) blocks = 4 * ctx->sm_count;
    lt_scales_kernel<<<blocks, 256, 0, (cudaStream_t)ctx->stream>>>(xs, M, KB, xf, ws, NB, L4, pw ? NULL : wf);
    DSV4_CUDA_CHECK_LAUNCH(err);
    lt_plan *p;
    dsv4_status st = plan_get(ctx, LT_FP8, M, N, K, &p, err);
    if (st != DSV4_OK) return st;
    const void *ap = wf, *bp = xf;
    DSV4_CUDA_CHECK(err, cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &ap, sizeof ap));
    DSV4_CUDA_CHECK(err, cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &bp, sizeof bp));
    const float alpha = 1.0f, beta = 0.0f;
    DSV4_CUDA_CHECK(err, cublasLtMatmul((cublasLtHandle_t)ctx->lt, p->op, &alpha, w, p->la, xq, p->lb, &beta, y, p->lc,
                                        y, p->lc, &p->algo, ctx->lt_ws, ctx->lt_ws_bytes, (cudaStream_t)ctx->stream));
    return DSV4_OK;
}
