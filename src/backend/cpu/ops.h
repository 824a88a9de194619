/* ops.h — CPU reference of every non-GEMM op of DeepSeek V4 (spec §3.2–§4.9), the oracle for the GPU
 * kernels. Per-token contracts; activations are float arrays holding BF16-exact values where the official
 * code holds BF16 (noted per function). None of these allocate or keep state.
 * Implemented in norm_rope.c, hc.c, attention.c, compressor.c, indexer.c, moe.c. Numerics: element-wise
 * steps in FP32 as the official code, BF16 roundings where it has them, long reductions accumulated in
 * fp64 and rounded once to FP32 (see norm_rope.c and docs/NUMERICS.md "CPU ops (non-GEMM)"). */
#ifndef DSV4_BACKEND_CPU_OPS_H
#define DSV4_BACKEND_CPU_OPS_H

#include <stdint.h>

#include "core/rope.h" /* dsv4_rope, dsv4_rope_init */

#ifdef __cplusplus
extern "C" {
#endif

/* ---- RMSNorm (§3.2) ----------------------------------------------------------------------------- */
/* y = bf16(w ⊙ (x · (mean x² + eps)^-1/2)), FP32 math; w may be NULL (unweighted). x and y may alias. */
void dsv4_cpu_rmsnorm(const float *x, const uint16_t *w, int n, float eps, float *y);
/* The per-head q normalisation done in BF16 arithmetic as the official code does (§4.3 step 1). In place.
 * Rounding points: bf16(x²) each, mean → bf16, + eps → bf16, 1/sqrt → bf16, x·r → bf16. */
void dsv4_cpu_rmsnorm_bf16_arith(float *x, int n, float eps);

/* ---- RoPE with YaRN (§3.7) ---------------------------------------------------------------------- */
/* Rotates x[rope_dim] (interleaved pairs) by position pos; inverse = 1 multiplies by the conjugate.
 * FP32 math (angle = (float)pos * ω in FP32), result bf16. In place. */
void dsv4_cpu_rope(float *x, long pos, const dsv4_rope *r, int inverse);

/* ---- hyper-connections (§3.9, §4.2, §4.9) ------------------------------------------------------- */
/* Sinkhorn split of mix[(2+hc)*hc] into pre[hc], post[hc], comb[hc*hc] (row-major [j][k]). scale[3],
 * base[(2+hc)*hc]. hc ≤ 8, iters ≥ 1 (iters column normalisations, iters−1 explicit row ones). */
void dsv4_cpu_hc_sinkhorn(const float *mix, const float *scale, const float *base, int hc, int iters,
                          float eps, float *pre, float *post, float *comb);
/* hc_pre: X [hc, D] (bf16 values) -> x [D] (bf16), post [hc], comb [hc*hc]. fn [(2+hc)*hc, hc*D] FP32,
 * base [(2+hc)*hc], scale [3]. x must not alias X. */
void dsv4_cpu_hc_pre(const float *X, int hc, int D, const float *fn, const float *base, const float *scale,
                     int iters, float hc_eps, float norm_eps, float *x, float *post, float *comb);
/* hc_post: X_out[k] = bf16(post[k]·a + Σ_j comb[j][k]·residual[j]). X_out must not alias residual. */
void dsv4_cpu_hc_post(const float *a, const float *residual, const float *post, const float *comb, int hc,
                      int D, float *X_out);
/* hc_head: y [D] = bf16(Σ_h pre[h]·X[h]), pre = sigmoid(mix·scale[0] + base) + hc_eps. fn [hc, hc*D],
 * base [hc], scale [1]. y must not alias X. */
void dsv4_cpu_hc_head(const float *X, int hc, int D, const float *fn, const float *base, const float *scale,
                      float hc_eps, float norm_eps, float *y);

/* ---- sparse attention with sink (§3.8) ---------------------------------------------------------- */
/* q [H, hd] bf16; rows[K] pointers to kv rows [hd] (bf16 values; NULL = empty slot, skipped);
 * sink [H] f32; out [H, hd] bf16. Probabilities rounded to bf16 before P·V, Z in FP32. hd ≤ 512.
 * Uses the global maximum (not the official kernel's 64-wide online blocks; see attention.c). A head with
 * no valid row gets zeros. Rows may repeat. out must not alias q or a row. */
void dsv4_cpu_sparse_attn(const float *q, int H, int hd, const float *const *rows, int K, const float *sink,
                          float scale, float *out);

/* ---- compressor (§4.5) -------------------------------------------------------------------------- */
/* out[c] = Σ_s softmax_s(scores[s][c]) · values[s][c], FP32; values/scores [n_slots, d] (row stride
 * ld); empty slots have score -inf (value ignored). scores already include ape. A channel with every slot
 * empty gets 0. For r = 4 the caller gathers the 8 slots (previous window's first half, current window's
 * second half) into one [8, d] pair of buffers, since they come from different column offsets. */
void dsv4_cpu_compress_pool(const float *values, const float *scores, int n_slots, int d, int ld, float *out);
/* Entry post-processing, in place on e[d]: bf16 round, RMSNorm(norm_w), RoPE on e[d-rope_dim:d] at pos
 * (= w·ratio, the window's first token); then is_indexer ? (Hadamard-128 + FP4 fake-quant; d must be 128)
 * : (FP8 fake-quant, block 64, on e[0:d-rope_dim]; (d-rope_dim) % 64 == 0). */
void dsv4_cpu_compress_finish(float *e, int d, const uint16_t *norm_w, float eps, long pos, const dsv4_rope *r,
                              int is_indexer);

/* ---- lightning indexer (§4.6) ------------------------------------------------------------------- */
/* scores[w] for w < n_keys: Σ_h wI[h] · ReLU(qI_h · keys[w]), with the official BF16 rounding points.
 * qI [nh, dh], wI [nh] (bf16 values, already scaled), keys [n_keys, dh] (row stride dh). */
void dsv4_cpu_indexer_scores(const float *qI, const float *wI, int nh, int dh, const float *keys, int n_keys,
                             float *scores);
/* The k largest of scores[n] (k <= n; a larger k is clamped to n); ties: lower index wins. Writes
 * out_idx[k] in descending score order (equal scores by ascending index); -inf entries rank below every
 * finite score, NaN below -inf. O(n log k), no allocation (out_idx is the heap). */
void dsv4_cpu_topk(const float *scores, int n, int k, int32_t *out_idx);

/* ---- MoE (§4.8) --------------------------------------------------------------------------------- */
/* Router from FP32 logits[E]: s = sqrt(softplus(logits)); experts = top-k of s + bias (learned) or
 * hash_ids[k] (hash layers, bias ignored); weights = s[e]/Σ s[e] · route_scale. softplus as torch's
 * (z > 20 → z, else log1p(exp(z))). bias may be NULL (no bias). E ≤ 1024. experts[k] in selection order
 * (descending s + bias) or hash order; weights[k] in the same order. */
void dsv4_cpu_route(const float *logits, int E, const float *bias, const int64_t *hash_ids, int k,
                    float route_scale, int32_t *experts, float *weights);
/* h[i] = bf16(silu(min(gate,lim)) · clamp(up,-lim,lim) · weight), gate/up bf16 values, FP32 math.
 * limit <= 0 disables both clamps (official: swiglu_limit = 0). weight = 1 for the shared expert.
 * h may alias gate or up. */
void dsv4_cpu_swiglu(const float *gate, const float *up, int n, float limit, float weight, float *h);

/* ---- embedding ---------------------------------------------------------------------------------- */
/* out[D] = table[token] (bf16 row [vocab, D]) as floats. */
void dsv4_cpu_embed(const uint16_t *table, int D, int token, float *out);

#ifdef __cplusplus
}
#endif
#endif
