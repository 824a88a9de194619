/* linear.c — CPU reference of the linear layers (see linear.h; spec §3.1, §3.6): FP8 block-scaled GEMM,
 * FP4-weight GEMM, BF16 GEMM, FP32 GEMM.
 *
 * Owns: the accumulation order of every linear, which is part of the contract (the CUDA backend is
 * compared against it, and results must be bitwise independent of thread count and of M):
 *
 *   A "chunk" is a run of K indices whose products are summed into one FP32 partial P:
 *     FP8 linear: the 128-wide K block (k = 128·kb … 128·kb+127)
 *     FP4 linear: the 32-wide K block
 *     BF16/FP32 linears: consecutive 128-wide pieces of K (the last may be shorter).
 *   Inside a chunk of length L starting at k0: eight lane sums, lane l = Σ over i ≡ l (mod 8), i < L, of
 *   x[k0+i]·w[k0+i], added sequentially in increasing i starting from +0.0 (each product is rounded to FP32
 *   first; for FP8/FP4 the products of codes are exact). Then P = ((l0+l4)+(l2+l6)) + ((l1+l5)+(l3+l7)),
 *   i.e. the pairwise fold (l_i + l_{i+4}), then (a_i + a_{i+2}), then (b_0 + b_1).
 *   Chunks are folded into the FP32 accumulator C (starting at +0.0) in increasing k order:
 *     FP8: C = C + P·(s_x[kb]·s_w[n/128][kb])     FP4: C = C + P·(s_x[kb/4]·s_w[n][kb])
 *     BF16/FP32: C = C + P
 *   The scale product is formed first in FP32 (exact: both are powers of two), as the official kernels do.
 *   Output: y = bf16(C) for FP8/FP4 (and BF16 with DSV4_OUT_BF16), y = C otherwise.
 *   FMA contraction is off (-ffp-contract=off), so every multiply and add above rounds to FP32.
 *
 * How it is fast enough: x is act-quantized once per call into e4m3 values held as floats; the weights of
 * 4 output rows × one chunk are decoded once into a 2 KiB float buffer and reused across all M rows of x;
 * the 8-lane inner loop is written so the compiler vectorizes it without reassociation; output rows are
 * split into tasks of 16 rows over the thread pool (a task owns its outputs, so threads never share a sum).
 * Must not: allocate per task, depend on thread count, or touch x beyond [M, K] / y beyond [M, N]. */
#include "backend/cpu/linear.h"

#include <stdlib.h>
#include <string.h>

#include "backend/cpu/quant.h"
#include "core/numfmt.h"
#include "core/status.h"

enum {
    LANES = 8,       /* lane count of the in-chunk accumulation (part of the numerics contract) */
    NT = 4,          /* output rows per micro-tile (decoded together, one x load feeds all four) */
    ROWS_TASK = 16,  /* output rows per thread-pool task; any value gives the same bits */
    CHUNK = 128      /* widest chunk: FP8 block, BF16/FP32 piece; FP4 uses 4 chunks of 32 per act block */
};

/* e8m0 byte -> FP32 value 2^(c-127), built from bits (255 = NaN, 0 = 2^-127 subnormal). */
static inline float e8m0_f32(uint8_t c) {
    uint32_t u = c == 255 ? 0x7fc00000u : (c == 0 ? 0x00400000u : (uint32_t)c << 23);
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* ============================================================================================== */
/* Micro-kernel: four chunk partials of one x row against four decoded weight rows.                  */
/* ============================================================================================== */

/* Folds eight lanes in the contract's fixed order. */
static inline float fold8(const float l[LANES]) {
    float a0 = l[0] + l[4], a1 = l[1] + l[5], a2 = l[2] + l[6], a3 = l[3] + l[7];
    float b0 = a0 + a2, b1 = a1 + a3;
    return b0 + b1;
}

/* P[j] = chunk sum of x[0..len) · w[j*ldw + 0..len) for j < NT, in the order of the file header.
 * x and w rows need no alignment; len in [1, CHUNK]. The 32 accumulators are named scalars (not an array)
 * so the compiler keeps them in vector registers: lane l of row j is a<j><l>. */
static void dot4(const float *restrict x, const float *restrict w, int ldw, int len, float P[NT]) {
#define LANE_DECL(j) float a##j##0 = 0.0f, a##j##1 = 0.0f, a##j##2 = 0.0f, a##j##3 = 0.0f, \
                           a##j##4 = 0.0f, a##j##5 = 0.0f, a##j##6 = 0.0f, a##j##7 = 0.0f
#define LANE_STEP(j, wr)                                                                         \
    a##j##0 = a##j##0 + x0 * wr[k + 0]; a##j##1 = a##j##1 + x1 * wr[k + 1];                     \
    a##j##2 = a##j##2 + x2 * wr[k + 2]; a##j##3 = a##j##3 + x3 * wr[k + 3];                     \
    a##j##4 = a##j##4 + x4 * wr[k + 4]; a##j##5 = a##j##5 + x5 * wr[k + 5];                     \
    a##j##6 = a##j##6 + x6 * wr[k + 6]; a##j##7 = a##j##7 + x7 * wr[k + 7]
#define LANE_ARR(j) { a##j##0, a##j##1, a##j##2, a##j##3, a##j##4, a##j##5, a##j##6, a##j##7 }
    LANE_DECL(0); LANE_DECL(1); LANE_DECL(2); LANE_DECL(3);
    const float *w0 = w, *w1 = w + ldw, *w2 = w + 2 * ldw, *w3 = w + 3 * ldw;
    int k = 0;
    for (; k + LANES <= len; k += LANES) {
        float x0 = x[k], x1 = x[k + 1], x2 = x[k + 2], x3 = x[k + 3];
        float x4 = x[k + 4], x5 = x[k + 5], x6 = x[k + 6], x7 = x[k + 7];
        LANE_STEP(0, w0); LANE_STEP(1, w1); LANE_STEP(2, w2); LANE_STEP(3, w3);
    }
    float acc[NT][LANES] = {LANE_ARR(0), LANE_ARR(1), LANE_ARR(2), LANE_ARR(3)};
    for (; k < len; k++) { /* tail of a short BF16/FP32 chunk: same lane assignment k mod 8 */
        int l = k % LANES;
        acc[0][l] = acc[0][l] + x[k] * w0[k];
        acc[1][l] = acc[1][l] + x[k] * w1[k];
        acc[2][l] = acc[2][l] + x[k] * w2[k];
        acc[3][l] = acc[3][l] + x[k] * w3[k];
    }
    for (int j = 0; j < NT; j++) P[j] = fold8(acc[j]);
#undef LANE_DECL
#undef LANE_STEP
#undef LANE_ARR
}

/* ============================================================================================== */
/* Shared plumbing                                                                                   */
/* ============================================================================================== */

typedef enum { KIND_FP8, KIND_FP4, KIND_BF16, KIND_F32 } kind_t;

typedef struct {
    kind_t kind;
    int M, K, N;
    const float *x;          /* [M, K] for BF16/FP32: the raw activations */
    float *xq;               /* [M, K] for FP8/FP4: e4m3 codes of act_quant(x) as float values (owned) */
    float *xs;               /* [M, K/128] act scales as FP32 (owned) */
    uint8_t *qtmp;           /* [M, K] codes then [M, K/128] e8m0 scales: act_quant scratch (owned) */
    const void *w;           /* weights, layout per kind */
    const uint8_t *w_scale;  /* FP8: [ceil(N/128), K/128]; FP4: [N, K/32] */
    float *y;                /* [M, N] output; also the FP32 accumulator while a tile is in flight */
    dsv4_out_round out_round;
} job_t;

/* act_quant of one row of x: codes -> exact e4m3 values (unscaled) and the per-128 scales as floats. */
static void quant_row_task(void *vctx, int m) {
    job_t *j = vctx;
    int K = j->K, nb = K / 128;
    uint8_t *q = j->qtmp + (size_t)m * K;
    uint8_t *sc = j->qtmp + (size_t)j->M * K + (size_t)m * nb;
    dsv4_cpu_act_quant_fp8(j->x + (size_t)m * K, (size_t)K, 128, q, sc);
    float *xq = j->xq + (size_t)m * K;
    for (int k = 0; k < K; k++) xq[k] = dsv4_e4m3_table[q[k]];
    for (int b = 0; b < nb; b++) j->xs[(size_t)m * nb + b] = e8m0_f32(sc[b]);
}

/* Decodes weight rows n0..n0+NT-1 (rows >= N become zeros), K range [k0, k0+len), into wb[NT][CHUNK]. */
static void decode_tile(const job_t *j, int n0, int k0, int len, float *restrict wb) {
    for (int r = 0; r < NT; r++) {
        float *dst = wb + r * CHUNK;
        int n = n0 + r;
        if (n >= j->N) {
            for (int i = 0; i < len; i++) dst[i] = 0.0f;
            continue;
        }
        size_t row = (size_t)n * j->K;
        switch (j->kind) {
        case KIND_FP8: {
            const uint8_t *src = (const uint8_t *)j->w + row + k0;
            for (int i = 0; i < len; i++) dst[i] = dsv4_e4m3_table[src[i]];
        } break;
        case KIND_FP4: { /* packed: byte b holds elements 2b (low nibble) and 2b+1 (high nibble) */
            const uint8_t *src = (const uint8_t *)j->w + row / 2 + k0 / 2;
            for (int i = 0; i < len / 2; i++) {
                dst[2 * i] = dsv4_e2m1_table[src[i] & 15];
                dst[2 * i + 1] = dsv4_e2m1_table[src[i] >> 4];
            }
        } break;
        case KIND_BF16: {
            const uint16_t *src = (const uint16_t *)j->w + row + k0;
            for (int i = 0; i < len; i++) dst[i] = dsv4_bf16_to_f32(src[i]);
        } break;
        case KIND_F32:
            memcpy(dst, (const float *)j->w + row + k0, (size_t)len * sizeof(float));
            break;
        }
    }
}

/* One task: output rows [t*ROWS_TASK, min(N, (t+1)*ROWS_TASK)) for all M rows of x. Accumulates into y
 * (zeroed first), chunk by chunk in increasing k, then applies the output rounding. */
static void gemm_task(void *vctx, int t) {
    const job_t *j = vctx;
    const int M = j->M, K = j->K, N = j->N;
    const int nb128 = K / 128;
    int nlo = t * ROWS_TASK, nhi = nlo + ROWS_TASK < N ? nlo + ROWS_TASK : N;
    float wb[NT * CHUNK];
    float P[NT];

    for (int m = 0; m < M; m++)
        for (int n = nlo; n < nhi; n++) j->y[(size_t)m * N + n] = 0.0f;

    for (int n0 = nlo; n0 < nhi; n0 += NT) {
        int nr = nhi - n0 < NT ? nhi - n0 : NT;   /* valid rows of this micro-tile */
        for (int k0 = 0; k0 < K; k0 += CHUNK) {
            int len = K - k0 < CHUNK ? K - k0 : CHUNK;
            decode_tile(j, n0, k0, len, wb);
            for (int m = 0; m < M; m++) {
                float *yr = j->y + (size_t)m * N + n0;
                switch (j->kind) {
                case KIND_FP8: {
                    int kb = k0 / 128;
                    float sx = j->xs[(size_t)m * nb128 + kb];
                    float sw = e8m0_f32(j->w_scale[(size_t)(n0 / 128) * nb128 + kb]); /* NT | 128 */
                    dot4(j->xq + (size_t)m * K + k0, wb, CHUNK, 128, P);
                    float s = sx * sw;
                    for (int r = 0; r < nr; r++) yr[r] = yr[r] + P[r] * s;
                } break;
                case KIND_FP4: {
                    float sx = j->xs[(size_t)m * nb128 + k0 / 128];
                    for (int sb = 0; sb < 4; sb++) {
                        int kb32 = k0 / 32 + sb;
                        dot4(j->xq + (size_t)m * K + k0 + 32 * sb, wb + 32 * sb, CHUNK, 32, P);
                        for (int r = 0; r < nr; r++) {
                            float s = sx * e8m0_f32(j->w_scale[(size_t)(n0 + r) * (K / 32) + kb32]);
                            yr[r] = yr[r] + P[r] * s;
                        }
                    }
                } break;
                case KIND_BF16:
                case KIND_F32:
                    dot4(j->x + (size_t)m * K + k0, wb, CHUNK, len, P);
                    for (int r = 0; r < nr; r++) yr[r] = yr[r] + P[r];
                    break;
                }
            }
        }
    }
    int to_bf16 = j->kind == KIND_FP8 || j->kind == KIND_FP4 || (j->kind == KIND_BF16 && j->out_round == DSV4_OUT_BF16);
    if (to_bf16)
        for (int m = 0; m < M; m++)
            for (int n = nlo; n < nhi; n++) j->y[(size_t)m * N + n] = dsv4_bf16_round(j->y[(size_t)m * N + n]);
}

static void run_gemm(dsv4_threadpool *pool, job_t *j) {
    if (j->M <= 0 || j->N <= 0) return;
    if (j->kind == KIND_FP8 || j->kind == KIND_FP4) {
        DSV4_ASSERT(j->K % 128 == 0 && j->K > 0);
        size_t mk = (size_t)j->M * j->K;
        /* One allocation per call; the void contract of linear.h cannot report NOMEM, so failure aborts. */
        size_t mb = (size_t)j->M * (j->K / 128);
        j->xq = malloc(mk * sizeof(float) + mb * sizeof(float) + mk + mb);
        DSV4_ASSERT(j->xq != NULL);
        j->xs = j->xq + mk;
        j->qtmp = (uint8_t *)(j->xs + mb);
        dsv4_threadpool_run(j->M > 1 ? pool : NULL, quant_row_task, j, j->M);
    }
    int n_tasks = (j->N + ROWS_TASK - 1) / ROWS_TASK;
    dsv4_threadpool_run(pool, gemm_task, j, n_tasks);
    free(j->xq);
}

/* ============================================================================================== */
/* Public entry points (contracts in linear.h)                                                      */
/* ============================================================================================== */

void dsv4_cpu_linear_fp8(dsv4_threadpool *pool, const float *x, int M, int K, const uint8_t *w,
                         const uint8_t *w_scale, int N, float *y) {
    job_t j = {.kind = KIND_FP8, .M = M, .K = K, .N = N, .x = x, .w = w, .w_scale = w_scale, .y = y};
    run_gemm(pool, &j);
}

void dsv4_cpu_linear_fp4(dsv4_threadpool *pool, const float *x, int M, int K, const uint8_t *w,
                         const uint8_t *w_scale, int N, float *y) {
    job_t j = {.kind = KIND_FP4, .M = M, .K = K, .N = N, .x = x, .w = w, .w_scale = w_scale, .y = y};
    run_gemm(pool, &j);
}

void dsv4_cpu_linear_bf16(dsv4_threadpool *pool, const float *x, int M, int K, const uint16_t *w, int N,
                          float *y, dsv4_out_round out_round) {
    job_t j = {.kind = KIND_BF16, .M = M, .K = K, .N = N, .x = x, .w = w, .y = y, .out_round = out_round};
    run_gemm(pool, &j);
}

void dsv4_cpu_linear_f32(dsv4_threadpool *pool, const float *x, int M, int K, const float *w, int N, float *y) {
    job_t j = {.kind = KIND_F32, .M = M, .K = K, .N = N, .x = x, .w = w, .y = y, .out_round = DSV4_OUT_F32};
    run_gemm(pool, &j);
}
