/* ops_cuda.h — CUDA launchers of every non-GEMM op of DeepSeek V4 (spec §3.2–§4.9), the GPU twins of
 * backend/cpu/ops.h (the oracle) and of the fake-quant parts of backend/cpu/quant.h. Plain C.
 *
 * Conventions (shared with cuda_linear.h):
 *  - Every pointer is a device pointer unless the field says "host". Activations are BF16 bit patterns
 *    (uint16_t); FP32 where the spec keeps FP32 (HC post/comb, router logits/weights, compressor state,
 *    attention sink, indexer scores).
 *  - Ops are batched over rows (tokens, heads, entries): one launch does all of them. Shapes are stated in
 *    each params struct; row strides (`ld*`) are in elements.
 *  - Every launch is enqueued on ctx->stream and returns without waiting. No launcher allocates: the only
 *    workspace (sparse attention's score buffer) is passed in by the caller, sized by the _ws_bytes query.
 *  - RoPE: the dsv4_rope table (inv_freq, from dsv4_rope_init — the very values the CPU uses) travels by
 *    value inside the params struct, i.e. in the kernel's constant bank; cos/sin are computed per element
 *    from angle = (float)pos · ω'_p in FP32, with sin/cos evaluated in fp64 and rounded once to FP32.
 *  - Transcendentals (exp, log1p, sin, cos) are evaluated in fp64 and rounded to FP32, and every FP32
 *    add/mul that the CPU rounds separately is written with __fadd_rn/__fmul_rn (no FMA contraction), so
 *    element-wise ops reproduce the CPU reference bit for bit (see docs/NUMERICS.md, "CUDA ops (non-GEMM)",
 *    for each op's measured agreement and tolerance). Long reductions the CPU does in fp64 are fp64 here
 *    too (different order: agreement to the last FP32 bit in practice, not guaranteed).
 *
 * Sparse attention reads a BF16 KV buffer [n_kv, 512] through int32 row indices (the engine gathers and
 * dequantizes compact cache entries into such a buffer); it does not read kv_schema.h's compact format. */
#ifndef DSV4_BACKEND_CUDA_OPS_CUDA_H
#define DSV4_BACKEND_CUDA_OPS_CUDA_H

#include <stddef.h>
#include <stdint.h>

#include "core/rope.h" /* dsv4_rope */
#include "backend/cuda/cuda_ctx.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ==== RMSNorm, q norm, RoPE, fake-quant ============================================================ */

/* y[r] = bf16(w ⊙ (x[r] · (mean x[r]² + eps)^-1/2)) for r < n_rows; w [n] bf16 or NULL (unweighted).
 * x [n_rows, ld_x], y [n_rows, ld_y] bf16; y may alias x (same ld). n ≥ 1. */
dsv4_status dsv4_cuda_rmsnorm(dsv4_cuda_ctx *ctx, const uint16_t *x, int ld_x, const uint16_t *w, int n_rows,
                              int n, float eps, uint16_t *y, int ld_y, dsv4_err *err);

/* Per-head q normalisation in BF16 arithmetic (dsv4_cpu_rmsnorm_bf16_arith), in place on
 * x [n_rows, n_heads, hd] (row stride n_heads·hd), optionally followed by RoPE on each head's last
 * rope->rope_dim dims at positions[r] (the fused q path of spec §4.3 step 1). positions [n_rows] or NULL
 * (no RoPE; rope ignored). hd ≤ 1024, hd even. */
dsv4_status dsv4_cuda_qnorm_rope(dsv4_cuda_ctx *ctx, uint16_t *x, int n_rows, int n_heads, int hd, float eps,
                                 const int32_t *positions, const dsv4_rope *rope, dsv4_err *err);

/* RoPE (inverse = 1: by the conjugate) in place on x: row r, head h, pair p rotates the two values at
 * x[r·ld + h·head_stride + off + 2p + {0,1}] by positions[r]; p < rope->rope_dim/2. */
dsv4_status dsv4_cuda_rope(dsv4_cuda_ctx *ctx, uint16_t *x, int n_rows, int ld, int n_heads, int head_stride,
                           int off, const int32_t *positions, const dsv4_rope *rope, int inverse, dsv4_err *err);

/* FP8 fake-quant (act_quant in-place mode, spec §3.3) of x[r][0:n] in blocks of `block`, in place;
 * x [n_rows, ld] bf16; n % block == 0, block ∈ {32, 64, 128}. (KV: n = 448, block = 64.) */
dsv4_status dsv4_cuda_fake_quant_fp8(dsv4_cuda_ctx *ctx, uint16_t *x, int n_rows, int ld, int n, int block,
                                     dsv4_err *err);

/* Hadamard-128 rotation then FP4 fake-quant (spec §3.4–§3.5) of n_vec contiguous 128-vectors, in place
 * (indexer q [n_tokens·64, 128] and indexer keys). */
dsv4_status dsv4_cuda_hadamard_fp4(dsv4_cuda_ctx *ctx, uint16_t *x, int n_vec, dsv4_err *err);

/* ==== hyper-connections (§3.9, §4.2, §4.9) ========================================================= */

typedef struct dsv4_cuda_hc_params {
    int n_rows;            /* tokens */
    int hc;                /* streams, ≤ 8 (4) */
    int D;                 /* hidden size */
    int iters;             /* Sinkhorn iterations (20); ignored by hc_head */
    float hc_eps, norm_eps;
    const float *fn;       /* [(2+hc)·hc, hc·D] f32 (hc_head: [hc, hc·D]) */
    const float *base;     /* [(2+hc)·hc] f32 (hc_head: [hc]) */
    const float *scale;    /* [3] f32 (hc_head: [1]) */
} dsv4_cuda_hc_params;

/* X [n_rows, hc, D] bf16 -> x [n_rows, D] bf16, post [n_rows, hc] f32, comb [n_rows, hc·hc] f32. */
dsv4_status dsv4_cuda_hc_pre(dsv4_cuda_ctx *ctx, const dsv4_cuda_hc_params *p, const uint16_t *X, uint16_t *x,
                             float *post, float *comb, dsv4_err *err);
/* X_out[r][k] = bf16(post[r][k]·a[r] + Σ_j comb[r][j][k]·residual[r][j]); a [n_rows, D] bf16,
 * residual, X_out [n_rows, hc, D] bf16 (X_out must not alias residual). Uses p->n_rows, hc, D only. */
dsv4_status dsv4_cuda_hc_post(dsv4_cuda_ctx *ctx, const dsv4_cuda_hc_params *p, const uint16_t *a,
                              const uint16_t *residual, const float *post, const float *comb, uint16_t *X_out,
                              dsv4_err *err);
/* X [n_rows, hc, D] bf16 -> y [n_rows, D] bf16 (final collapse, sigmoid weights). */
dsv4_status dsv4_cuda_hc_head(dsv4_cuda_ctx *ctx, const dsv4_cuda_hc_params *p, const uint16_t *X, uint16_t *y,
                              dsv4_err *err);

/* ==== sparse attention with sink (§3.8) ============================================================ */

typedef struct dsv4_cuda_attn_params {
    int n_q;               /* query rows (tokens; decode: one per sequence) */
    int H;                 /* heads (64 Flash, 128 Pro); processed 64 per CTA */
    int hd;                /* must be 512 */
    int K;                 /* index-list length per query (stride of idx); entries < 0 are empty */
    float scale;           /* 512^-0.5 */
    const uint16_t *q;     /* [n_q, H, hd] bf16 */
    const uint16_t *kv;    /* [n_kv, hd] bf16, K = V rows */
    const int32_t *idx;    /* [n_q, K] rows of kv, −1 = empty; rows may repeat */
    const float *sink;     /* [H] f32 */
    const int32_t *inv_rope_pos; /* [n_q] positions for the fused inverse RoPE on out[..][448:512], or NULL */
    dsv4_rope rope;        /* used when inv_rope_pos != NULL */
    uint16_t *out;         /* [n_q, H, hd] bf16; a head with no valid row gets zeros */
    float *ws;             /* workspace, dsv4_cuda_sparse_attn_ws_bytes bytes (FP32 scores) */
    const int32_t *n_live; /* [n_q] or NULL: query i reads only idx[i][0 : min(n_live[i], K)] (the rest is taken
                            * as empty and never read), so the work follows the live context, not K */
} dsv4_cuda_attn_params;

size_t dsv4_cuda_sparse_attn_ws_bytes(int n_q, int H, int K);
/* One CTA per (query, 64-head group): each gathered KV row is loaded once for all 64 heads. Two passes
 * over the index list: scores (FP32 dots) and their global max, then bf16(exp(s − m)) · V with Z in fp64;
 * the same rounding points as dsv4_cpu_sparse_attn (global max, not the official online blocks). */
dsv4_status dsv4_cuda_sparse_attn(dsv4_cuda_ctx *ctx, const dsv4_cuda_attn_params *p, dsv4_err *err);

/* ==== compressor (§4.5) ============================================================================ */

typedef struct dsv4_cuda_compress_params {
    int n_entries;         /* entries to emit in this launch */
    int n_slots;           /* 8 (ratio 4, gathered prev-A + cur-B) or 128 (ratio 128) */
    int d;                 /* 512 (main) or 128 (indexer) */
    const float *values;   /* f32: entry e, slot s, channel c at e·entry_stride + s·ld + c */
    const float *scores;   /* f32 same layout; −inf = empty slot (ape already added) */
    long entry_stride;
    int ld;
    const int32_t *positions; /* [n_entries] RoPE position of each entry (w·ratio) */
    const uint16_t *norm_w;   /* [d] bf16 compressor norm weight */
    float eps;
    dsv4_rope rope;
    int is_indexer;        /* 1: Hadamard + FP4 (d must be 128); 0: FP8 block 64 on [0, d − rope_dim) */
    uint16_t *out;         /* [n_entries, ld_out] bf16 finished entries */
    int ld_out;
} dsv4_cuda_compress_params;

/* dsv4_cpu_compress_pool followed by dsv4_cpu_compress_finish, one CTA per entry. */
dsv4_status dsv4_cuda_compress(dsv4_cuda_ctx *ctx, const dsv4_cuda_compress_params *p, dsv4_err *err);

/* ==== lightning indexer (§4.6) ===================================================================== */

typedef struct dsv4_cuda_indexer_params {
    int n_q;               /* queries */
    int nh, dh;            /* 64, 128 (dh must be 128; nh ≤ 64) */
    const uint16_t *q;     /* [n_q, nh, dh] bf16 (after RoPE, Hadamard, FP4) */
    const uint16_t *w;     /* [n_q, nh] bf16 head weights, already scaled */
    const uint16_t *keys;  /* [*, dh] bf16 key rows */
    const int32_t *key_start; /* [n_q] first key row of each query's sequence, or NULL (0) */
    const int32_t *n_keys;    /* [n_q] visible keys of each query */
    int max_keys;          /* ≥ every n_keys[i]; grid size and the scores row length */
    float *scores;         /* [n_q, ld_scores] f32 (bf16 values); columns n_keys[i] .. max_keys−1 = −inf */
    int ld_scores;
} dsv4_cuda_indexer_params;

/* scores[i][w] = bf16(Σ_h bf16(w[h] · relu(bf16(q_h · K_w)))), as dsv4_cpu_indexer_scores. */
dsv4_status dsv4_cuda_indexer_scores(dsv4_cuda_ctx *ctx, const dsv4_cuda_indexer_params *p, dsv4_err *err);

/* Per row r < n_rows: the min(k, n[r]) largest of scores[r][0:n[r]] in descending order (equal scores:
 * ascending index; −inf below every finite score, NaN below −inf), exactly dsv4_cpu_topk's output;
 * out [n_rows, ld_out] int32, slots min(k, n[r]) .. k−1 set to −1. n NULL: every row has n_all.
 * k ≤ 2048; n[r] ≤ 2^31 − 1. */
dsv4_status dsv4_cuda_topk(dsv4_cuda_ctx *ctx, const float *scores, int n_rows, long ld_scores, const int32_t *n,
                           int n_all, int k, int32_t *out, int ld_out, dsv4_err *err);

/* ==== MoE, embedding, greedy ======================================================================= */

/* Router per row, as dsv4_cpu_route: logits [n_rows, E] f32; bias [E] f32 or NULL; tid2eid [vocab, k]
 * int64 and tokens [n_rows] int32 for hash layers (both NULL for learned routing). experts [n_rows, k]
 * int32, weights [n_rows, k] f32. E ≤ 1024, k ≤ 16. */
dsv4_status dsv4_cuda_route(dsv4_cuda_ctx *ctx, const float *logits, int n_rows, int E, const float *bias,
                            const int64_t *tid2eid, const int32_t *tokens, int k, float route_scale,
                            int32_t *experts, float *weights, dsv4_err *err);

/* h[r][i] = bf16(silu(min(gate,lim)) · clamp(up,±lim) · weight[r]) for i < n; gate/up rows at
 * gate + r·ld_in, up + r·ld_in (bf16), weight [n_rows] f32 or NULL (1), h [n_rows, ld_out] bf16 (may
 * alias gate or up when the strides match). limit ≤ 0 disables the clamps. */
dsv4_status dsv4_cuda_swiglu(dsv4_cuda_ctx *ctx, const uint16_t *gate, const uint16_t *up, int ld_in, int n_rows,
                             int n, float limit, const float *weight, uint16_t *h, int ld_out, dsv4_err *err);

/* out[r] = table[tokens[r]] (bf16 rows [vocab, D]); tokens outside [0, vocab) give a zero row. */
dsv4_status dsv4_cuda_embed(dsv4_cuda_ctx *ctx, const uint16_t *table, int vocab, int D, const int32_t *tokens,
                            int n_rows, uint16_t *out, dsv4_err *err);

/* out[r] = argmax_v logits[r][v] over v < V (ties: lower index; NaN never wins over a number). */
dsv4_status dsv4_cuda_argmax(dsv4_cuda_ctx *ctx, const float *logits, int n_rows, long ld, int V, int32_t *out,
                             dsv4_err *err);

#ifdef __cplusplus
}
#endif
#endif
