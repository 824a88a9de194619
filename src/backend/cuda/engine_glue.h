/* engine_glue.h — the few device kernels the CUDA forward pass (src/engine/forward_cuda.c) needs beyond the
 * op library (ops_cuda.h, cuda_linear.h): KV-cache traffic in the compact bit-exact formats of kv_schema.h
 * (store / decode entries, window ring), the compressor's tail-state gather and update, the attention index
 * lists, routed experts selected on the device, and graph / pinned-memory helpers. Plain C header; the
 * kernels are in kernels/engine_glue.cu.
 *
 * Everything position-dependent is computed on the device from the step inputs (dsv4_glue_step): the ring
 * slot, window validity, which compressor window completes, how many entries a query sees. The host only
 * knows shapes (rows, sequences, the number of tokens of each sequence), so a decode step can be captured
 * once in a CUDA graph and replayed with new inputs. A sequence whose slot is -1 is padding: nothing of it is
 * written to the KV cache, its attention lists are empty. */
#ifndef DSV4_BACKEND_CUDA_ENGINE_GLUE_H
#define DSV4_BACKEND_CUDA_ENGINE_GLUE_H

#include <stddef.h>
#include <stdint.h>

#include "backend/cuda/cuda_ctx.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Per-step inputs, device pointers (rows = token rows, sequences in step order, rows of a sequence
 * contiguous and in position order). */
typedef struct dsv4_glue_step {
    const int32_t *pos;    /* [rows] position of each row */
    const int32_t *rseq;   /* [rows] sequence index (in the step) of each row */
    const int32_t *sslot;  /* [n_seq] KV slot, -1 = padding */
    const int32_t *spos0;  /* [n_seq] committed length before the step (position of its first row) */
    const int32_t *srow0;  /* [n_seq] first row */
    const int32_t *sn;     /* [n_seq] rows (new tokens) */
    int rows, n_seq;
} dsv4_glue_step;

/* KV arenas on the device and the entry formats (kv_schema.h), one layer's offsets. */
typedef struct dsv4_glue_kv {
    uint8_t *slots;            /* slot arena base */
    size_t slot_bytes;
    uint8_t *blocks;           /* block arena base (NULL without compressed layers) */
    size_t block_bytes;
    const int32_t *bt;         /* [max_requests, bt_ld] device mirror of the block tables */
    int bt_ld;
    /* entry format */
    int nope, rope, rope_off, scale_off, n_scales, entry_bytes;
    /* indexer key format */
    int ik_dim, ik_code_bytes, ik_n_scales;
    /* this layer */
    size_t ring_off;           /* window ring inside a slot */
    int window;
    int ratio, entries_per_block;
    size_t main_off, ikey_off, ikey_scale_off;
} dsv4_glue_kv;

/* One compressor's tail state inside a slot (kv_schema.h dsv4_kv_cmp_schema) and its projections. */
typedef struct dsv4_glue_cmp {
    int ratio, d, overlap, width;            /* width = (overlap ? 2 : 1) * d */
    size_t kv_prev_off, sc_prev_off, kv_cur_off, sc_cur_off;
    const float *proj_kv;                    /* [rows, width] FP32 wkv·x of this step */
    const float *proj_sc;                    /* [rows, width] FP32 wgate·x (ape not yet added) */
    const float *ape;                        /* [ratio, width] */
} dsv4_glue_cmp;

/* Number of emission slots a compressor of ratio r needs for a step: Σ ceil(sn[s] / r) (host-known). */
int dsv4_glue_n_emit(const int32_t *sn_host, int n_seq, int ratio);

dsv4_status dsv4_glue_fill32(dsv4_cuda_ctx *ctx, void *dst, uint32_t pattern, size_t n_words, dsv4_err *err);
/* y [out, in] bf16 = e4m3 w [out, in] · 2^(scale[o/128][c/128] - 127) (the CPU model's wo_a dequant). */
dsv4_status dsv4_glue_dequant_fp8_bf16(dsv4_cuda_ctx *ctx, const uint8_t *w, const uint8_t *scale, int out, int in,
                                       uint16_t *y, dsv4_err *err);
/* X[r][h] = x[r] for h < hc (embedding expanded to the hc streams). */
dsv4_status dsv4_glue_broadcast_hc(dsv4_cuda_ctx *ctx, const uint16_t *x, int rows, int hc, int D, uint16_t *X,
                                   dsv4_err *err);
/* x[i] = bf16(x[i] · s), n elements, in place. */
dsv4_status dsv4_glue_scale_bf16(dsv4_cuda_ctx *ctx, uint16_t *x, long n, float s, dsv4_err *err);

/* Compressor, phase 1: for each emission slot e < n_emit (sequence s, k-th window that may complete in
 * this step) gathers the pooling window (overlap: previous window's first half in slots 0..r-1, this
 * window's second half in r..2r-1; otherwise the r rows) from this step's projections or the tail state:
 * vals/scores [n_emit, n_slots, d] FP32 (scores with ape). e_slot[e] = KV slot or -1 when no window
 * completes there; e_w[e] window index; e_pos[e] = w·ratio (RoPE position). */
dsv4_status dsv4_glue_cmp_gather(dsv4_cuda_ctx *ctx, const dsv4_glue_step *st, const dsv4_glue_kv *kv,
                                 const dsv4_glue_cmp *c, int n_emit, float *vals, float *scores, int32_t *e_slot,
                                 int32_t *e_w, int32_t *e_pos, dsv4_err *err);
/* Compressor, phase 2 (after phase 1 read the old state): the tail state after the step, as the CPU's
 * token-by-token updates leave it. */
dsv4_status dsv4_glue_cmp_update(dsv4_cuda_ctx *ctx, const dsv4_glue_step *st, const dsv4_glue_kv *kv,
                                 const dsv4_glue_cmp *c, dsv4_err *err);
/* Stores finished entries [n_emit, d] bf16 (fake-quantized values) into the block arena in the compact
 * format: main entries (is_indexer 0) or indexer keys (1); e_slot < 0 skipped. */
dsv4_status dsv4_glue_store_entries(dsv4_cuda_ctx *ctx, const dsv4_glue_kv *kv, const uint16_t *entries, int n_emit,
                                    const int32_t *e_slot, const int32_t *e_w, int is_indexer, dsv4_err *err);
/* Writes the last min(n, window) rows of each sequence's kv [rows, nope+rope] bf16 into its window ring. */
dsv4_status dsv4_glue_ring_write(dsv4_cuda_ctx *ctx, const dsv4_glue_step *st, const dsv4_glue_kv *kv,
                                 const uint16_t *fresh, dsv4_err *err);
/* Decodes every ring record of each sequence: out [n_seq * window, nope+rope] bf16. */
dsv4_status dsv4_glue_ring_decode(dsv4_cuda_ctx *ctx, const dsv4_glue_step *st, const dsv4_glue_kv *kv,
                                  uint16_t *out, dsv4_err *err);
/* Decodes entries w < (spos0+sn)/ratio of each sequence (the most any of its rows sees): out
 * [n_seq * max_e, dim] bf16, row s·max_e + w; main entries or indexer keys. */
dsv4_status dsv4_glue_decode_entries(dsv4_cuda_ctx *ctx, const dsv4_glue_step *st, const dsv4_glue_kv *kv,
                                     int is_indexer, int max_e, uint16_t *out, dsv4_err *err);
/* Decodes the main entries chosen by the indexer: sel [rows, topk] (−1 = none) -> out [rows·topk, dim]. */
dsv4_status dsv4_glue_decode_selected(dsv4_cuda_ctx *ctx, const dsv4_glue_step *st, const dsv4_glue_kv *kv,
                                      const int32_t *sel, int topk, uint16_t *out, dsv4_err *err);
/* Attention index lists idx [rows, window + n_comp] into the staging buffer whose rows are
 * [0, rows) fresh kv, ring_base + s·window + p mod window ring, comp_base + ... compressed:
 * kind 1 (CSA): comp_base + r·n_comp + j for sel[r][j] >= 0; kind 2 (HCA): comp_base + s·n_comp + w for
 * w < (pos+1)/ratio; kind 0: n_comp = 0. Order as the CPU's: window oldest first, then compressed.
 * n_live [rows]: the live length of each list (window + min(n_comp, (pos+1)/ratio); 0 for padding); only
 * idx[r][0 : n_live[r]] is written (sparse attention's n_live bound), so the cost follows the context;
 * full = 1 writes the whole list (-1 past n_live: the capacity-sized lists, for A/B benchmarks). */
dsv4_status dsv4_glue_build_idx(dsv4_cuda_ctx *ctx, const dsv4_glue_step *st, int window, int ring_base, int kind,
                                int ratio, int comp_base, int n_comp, const int32_t *sel, int32_t *idx,
                                int32_t *n_live, int full, dsv4_err *err);
/* Indexer visibility per row: n_keys[r] = (pos+1)/ratio (0 for padding), key_start[r] = s·max_e. */
dsv4_status dsv4_glue_csa_meta(dsv4_cuda_ctx *ctx, const dsv4_glue_step *st, int ratio, int max_e, int32_t *n_keys,
                               int32_t *key_start, dsv4_err *err);
/* split = 1: dst[g][r][c] = src[r][g·cols + c]; split = 0: the inverse. bf16, G groups. */
dsv4_status dsv4_glue_regroup(dsv4_cuda_ctx *ctx, const uint16_t *src, uint16_t *dst, int rows, int G, int cols,
                              int split, dsv4_err *err);
/* Routed expert linear for (row, slot) pairs chosen on the device: y[p] = W_{experts[p]-e0} · x[p / in_div]
 * for the ne experts [e0, e0+ne) held here (a rank's expert slice; e0 = 0, ne = E on one GPU); pairs whose
 * expert is elsewhere get y[p] = 0,
 * x act-quantized (xq [*, K] e4m3, xs [*, K/128] e8m0). Weights stacked per expert: w + e·w_stride,
 * s + e·s_stride; fp4: [N, K/2] e2m1 with [N, K/32] e8m0; else FP8 [N, K] with [N/128, K/128]. y [pairs, N]
 * bf16, the block-scaled product of spec §3.6 (FP32 per block, FP32 accumulation). K % 128 == 0. */
dsv4_status dsv4_glue_moe_expert(dsv4_cuda_ctx *ctx, const uint8_t *xq, const uint8_t *xs, int K, int in_div,
                                 const int32_t *experts, int e0, int ne, int n_pairs, const uint8_t *w,
                                 const uint8_t *s, size_t w_stride, size_t s_stride, int fp4, int N, uint16_t *y,
                                 dsv4_err *err);
/* out[r] = bf16(Σ_j ey[r·k + j] (ascending expert id) + sy[r]), FP32 sum, as the CPU. */
dsv4_status dsv4_glue_moe_combine(dsv4_cuda_ctx *ctx, const uint16_t *ey, const int32_t *experts, int rows, int k,
                                  int D, const uint16_t *sy, uint16_t *out, dsv4_err *err);

/* ---- tensor/expert parallelism (docs/MULTI_GPU.md): the halves around the official collective points ---- */
/* part[r] = Σ_j ey[r·k + j] (ascending expert id) over the experts in [e0, e0+ne) only, FP32 — the additions of
 * moe_combine before its shared-expert add; then (after the FP32 all-reduce of part) moe_finish:
 * out[i] = bf16(part[i] + sy[i]). With e0 = 0, ne = E the pair equals moe_combine bit for bit. */
dsv4_status dsv4_glue_moe_partial(dsv4_cuda_ctx *ctx, const uint16_t *ey, const int32_t *experts, int rows, int k,
                                  int D, int e0, int ne, float *part, dsv4_err *err);
dsv4_status dsv4_glue_moe_finish(dsv4_cuda_ctx *ctx, const float *part, const uint16_t *sy, long n, uint16_t *out,
                                 dsv4_err *err);
/* Vocab-split embedding: out[r] = the FP32 row tokens[r] - v0 of table [nv, D] bf16 when this rank owns it,
 * else -0.0 (the identity of IEEE addition: the all-reduce over ranks reproduces the row bit for bit). */
dsv4_status dsv4_glue_embed_part(dsv4_cuda_ctx *ctx, const uint16_t *table, int v0, int nv, int D,
                                 const int32_t *tokens, int rows, float *out, dsv4_err *err);
/* Element-wise conversions (bf16 -> f32 exact; f32 -> bf16 round to nearest even). */
dsv4_status dsv4_glue_bf16_to_f32(dsv4_cuda_ctx *ctx, const uint16_t *x, long n, float *y, dsv4_err *err);
dsv4_status dsv4_glue_f32_to_bf16(dsv4_cuda_ctx *ctx, const float *x, long n, uint16_t *y, dsv4_err *err);
/* After the head's all-gather: all [world][n][nv] (rank-major slices) -> out [n][world·nv] in vocab order. */
dsv4_status dsv4_glue_vocab_interleave(dsv4_cuda_ctx *ctx, const float *all, int world, int n, int nv, float *out,
                                       dsv4_err *err);
/* Makes ctx's device current on the calling host thread (a thread per GPU; the device is per thread). */
dsv4_status dsv4_glue_set_device(dsv4_cuda_ctx *ctx, dsv4_err *err);

/* dst[i] = src[idx[i]], rows of `elems` bf16. */
dsv4_status dsv4_glue_gather_rows(dsv4_cuda_ctx *ctx, const uint16_t *src, int elems, const int32_t *idx, int n,
                                  uint16_t *dst, dsv4_err *err);
/* End of a greedy decode step (n sequences, one row each): hist[*ctr][i] = tok[i] = argmax[i] (while
 * *ctr < cap), pos[i]++, spos0[i]++, then (*ctr)++. */
dsv4_status dsv4_glue_advance(dsv4_cuda_ctx *ctx, const int32_t *argmax, int n, int32_t *tok, int32_t *pos,
                              int32_t *spos0, int32_t *hist, int32_t *ctr, int cap, dsv4_err *err);

/* ---- graphs and pinned host memory ------------------------------------------------------------------ */
dsv4_status dsv4_glue_host_alloc(size_t bytes, void **p, dsv4_err *err);
/* Stream-ordered host-to-device copy that does not wait (src must be pinned and stay untouched until the
 * stream passes the copy; dsv4_cuda_upload waits instead). */
dsv4_status dsv4_glue_upload_async(dsv4_cuda_ctx *ctx, void *dst, const void *src, size_t bytes, dsv4_err *err);
void dsv4_glue_host_free(void *p);
dsv4_status dsv4_glue_capture_begin(dsv4_cuda_ctx *ctx, dsv4_err *err);
/* Ends the capture begun on ctx's stream. ok = 0 aborts it (after a failed enqueue; *exec stays NULL). */
dsv4_status dsv4_glue_capture_end(dsv4_cuda_ctx *ctx, int ok, void **exec, dsv4_err *err);
dsv4_status dsv4_glue_graph_launch(dsv4_cuda_ctx *ctx, void *exec, dsv4_err *err);
void dsv4_glue_graph_destroy(void *exec);

#ifdef __cplusplus
}
#endif
#endif
