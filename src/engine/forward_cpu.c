/* forward_cpu.c — the DeepSeek V4 forward pass over a batch on the CPU reference backend (spec §4).
 *
 * Layout of a step: the tokens of all sequences are stacked into n_rows rows (sequence by sequence, in
 * position order). Row-independent work (GEMMs, norms, hyper-connections, MoE) runs over all rows at once;
 * position-dependent work (compressor state, window ring, attention over a sequence's cache) runs per
 * sequence in position order. Every op is row-independent, so a sequence's results do not depend on its
 * batch neighbours or on how its prompt was chunked.
 *
 * Within a step and layer, for each sequence: (1) compressors consume all its new tokens and emit the
 * entries that complete (visible to later positions), (2) each query attends its window — rows of this
 * step come from the fresh kv, older ones from the ring — plus its compressed entries, (3) the last
 * min(n, window) fresh kv rows are written to the ring.
 *
 * Tensor/expert parallelism (docs/MULTI_GPU.md): with a partitioned model (m->shard.world > 1) this rank
 * computes its heads, groups, index heads, experts and vocab rows only, and joins the other ranks through
 * f->comm at the places the official model does: embedding (all-reduce of zero-masked rows), indexer scores
 * (BF16 all-reduce of the per-rank head sums, before top-k), wo_b (FP32 all-reduce of the BF16 partial
 * outputs, then BF16), routed experts (FP32 all-reduce of the partial sums, before the shared expert is
 * added), head (all-gather of the vocab slices). Loops use the shard's local counts; formulas use global
 * ones. With world = 1 every range is the whole dimension and no collective runs, so the arithmetic is the
 * unpartitioned one, operation for operation. */
#include "engine/forward.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu/linear.h"
#include "backend/cpu/ops.h"
#include "backend/cpu/quant.h"
#include "core/numfmt.h"
#include "core/status.h"
#include "engine/kv_access.h"
#include "kv/kv_cmp_state.h"

/* ==== workspace ========================================================================================= */

typedef struct workspace {
    int cap_rows;
    float *X, *X2;          /* [rows, hc, D] residual state (bf16 values) */
    float *x;               /* [rows, D] normed sub-layer input */
    float *post, *comb;     /* [rows, hc], [rows, hc*hc] */
    float *qa, *qr;         /* [rows, QL] */
    float *q;               /* [rows, H*hd] */
    float *kv;              /* [rows, hd] fresh window kv */
    float *o;               /* [rows, H*hd] attention output */
    float *og;              /* [rows, (H/G)*hd] one group's input, contiguous */
    float *u;               /* [rows, G*R] */
    float *ug;              /* [rows, R] */
    float *a;               /* [rows, D] sub-layer output */
    float *cmp;             /* [rows, 2 * coff*d_max] compressor projections (kv | gate) */
    float *qI;              /* [rows, nIh*dIh] */
    float *wI;              /* [rows, nIh] */
    float *logits_e;        /* [rows, E] router logits */
    int32_t *experts;       /* [rows, k] */
    float *eweights;        /* [rows, k] */
    float *ey;              /* [rows, k, D] routed expert outputs */
    float *ex, *eg, *eu, *eh, *eo; /* [rows, D], [rows, I] x3, [rows, D] per-expert gather buffers */
    int *erow;              /* [rows] rows routed to the current expert */
    int *eslot;             /* [rows] which of the row's k slots */
    float *sy;              /* [rows, D] shared expert output */
    float *head_in;         /* [rows, D] */
    /* per-query scratch, sized by the number of compressed entries a query can see (entry_scratch) */
    const float **rows;     /* [window + max entries] attention row pointers */
    float *dec;             /* [window + max entries, hd] decoded window rows and selected CSA entries */
    float *scores;          /* [max entries] indexer scores */
    uint16_t *scores16;     /* [max entries] the same as bf16 bits, for the all-reduce (world > 1) */
    int32_t *topk;          /* [max(index_topk, max entries)] */
    float *keys;            /* [max entries, dIh] decoded indexer keys of the running sequence and layer */
    float *cdec;            /* [max entries, hd] decoded compressed entries (HCA: all visible ones) */
    int cap_entries;
} workspace;

struct dsv4_forward {
    const dsv4_model *m;
    dsv4_threadpool *pool;  /* borrowed */
    dsv4_layer_hook hook;
    void *hook_user;
    int fault;              /* dsv4_fault; 0 in every real use */
    dsv4_comm *comm;        /* borrowed; required when m->shard.world > 1 */
    workspace ws;
};

/* Row-sized buffers (grown by ws_reserve_rows). */
static void ws_free_rows(workspace *w) {
    void *ptrs[] = {w->X, w->X2, w->x, w->post, w->comb, w->qa, w->qr, w->q, w->kv, w->o, w->og, w->u, w->ug,
                    w->a, w->cmp, w->qI, w->wI, w->logits_e, w->experts, w->eweights, w->ey, w->ex, w->eg,
                    w->eu, w->eh, w->eo, w->erow, w->eslot, w->sy, w->head_in};
    for (size_t i = 0; i < sizeof ptrs / sizeof ptrs[0]; i++) free(ptrs[i]);
    w->X = w->X2 = w->x = w->post = w->comb = w->qa = w->qr = w->q = w->kv = w->o = w->og = w->u = w->ug = NULL;
    w->a = w->cmp = w->qI = w->wI = w->logits_e = w->eweights = w->ey = w->ex = w->eg = w->eu = w->eh = NULL;
    w->eo = w->sy = w->head_in = NULL;
    w->experts = NULL;
    w->erow = w->eslot = NULL;
    w->cap_rows = 0;
}

/* Entry-sized buffers (grown by ws_reserve_entries). */
static void ws_free_entries(workspace *w) {
    void *ptrs[] = {(void *)w->rows, w->dec, w->scores, w->scores16, w->topk, w->keys, w->cdec};
    for (size_t i = 0; i < sizeof ptrs / sizeof ptrs[0]; i++) free(ptrs[i]);
    w->rows = NULL;
    w->dec = w->scores = w->keys = w->cdec = NULL;
    w->scores16 = NULL;
    w->topk = NULL;
    w->cap_entries = 0;
}

static void ws_free(workspace *w) {
    ws_free_rows(w);
    ws_free_entries(w);
}

static size_t at_least_1(long n) { return n > 0 ? (size_t)n : 1; }
#define ALLOC(p, n) (((p) = calloc(at_least_1(n), sizeof *(p))) == NULL)

static dsv4_status ws_reserve_rows(workspace *w, const dsv4_config *c, int rows, dsv4_err *err) {
    if (rows <= w->cap_rows) return DSV4_OK;
    ws_free_rows(w);
    long D = c->dim, hc = c->hc_mult, H = c->n_heads, hd = c->head_dim, QL = c->q_lora_rank;
    long G = c->o_groups, R = c->o_lora_rank, E = c->n_routed_experts, k = c->n_activated_experts;
    long I = c->moe_inter_dim, nI = (long)c->index_n_heads * c->index_head_dim;
    long cmpw = 2 * 2 * (hd > c->index_head_dim ? hd : c->index_head_dim);
    long r = rows;
    int bad = ALLOC(w->X, r * hc * D) | ALLOC(w->X2, r * hc * D) | ALLOC(w->x, r * D) | ALLOC(w->post, r * hc) |
              ALLOC(w->comb, r * hc * hc) | ALLOC(w->qa, r * QL) | ALLOC(w->qr, r * QL) | ALLOC(w->q, r * H * hd) |
              ALLOC(w->kv, r * hd) | ALLOC(w->o, r * H * hd) | ALLOC(w->og, r * (H / G) * hd) |
              ALLOC(w->u, r * G * R) | ALLOC(w->ug, r * R) | ALLOC(w->a, r * D) | ALLOC(w->cmp, r * cmpw) |
              ALLOC(w->qI, r * nI) | ALLOC(w->wI, r * c->index_n_heads) | ALLOC(w->logits_e, r * E) |
              ALLOC(w->experts, r * k) | ALLOC(w->eweights, r * k) | ALLOC(w->ey, r * k * D) |
              ALLOC(w->ex, r * D) | ALLOC(w->eg, r * I) | ALLOC(w->eu, r * I) | ALLOC(w->eh, r * I) |
              ALLOC(w->eo, r * D) | ALLOC(w->erow, r) | ALLOC(w->eslot, r) | ALLOC(w->sy, r * D) |
              ALLOC(w->head_in, r * D);
    if (bad) { ws_free_rows(w); return dsv4_err_set(err, DSV4_ERR_NOMEM, "forward: workspace for %d rows", rows); }
    w->cap_rows = rows;
    return DSV4_OK;
}

static dsv4_status ws_reserve_entries(workspace *w, const dsv4_config *c, int entries, dsv4_err *err) {
    if (entries <= w->cap_entries) return DSV4_OK;
    int n = entries + 1024;
    long hd = c->head_dim, win = c->window_size;
    ws_free_entries(w);
    int bad = ALLOC(w->rows, win + n) | ALLOC(w->dec, (win + n) * hd) | ALLOC(w->scores, n) | ALLOC(w->scores16, n) |
              ALLOC(w->topk, (c->index_topk > n ? c->index_topk : n)) | ALLOC(w->keys, (long)n * c->index_head_dim) |
              ALLOC(w->cdec, (long)n * hd);
    if (bad) { ws_free_entries(w); return dsv4_err_set(err, DSV4_ERR_NOMEM, "forward: scratch for %d entries", n); }
    w->cap_entries = n;
    return DSV4_OK;
}

dsv4_status dsv4_forward_create(const dsv4_model *model, dsv4_threadpool *pool, dsv4_forward **out,
                                dsv4_err *err) {
    *out = NULL;
    if (model->weights_on_device_only)
        return dsv4_err_set(err, DSV4_ERR_UNSUPPORTED, "forward: this synthetic model's weights exist only on the GPU "
                            "(generated there, no host bytes): it runs on the cuda backend only");
    dsv4_forward *f = calloc(1, sizeof *f);
    if (!f) return dsv4_err_set(err, DSV4_ERR_NOMEM, "forward: out of memory");
    f->m = model;
    f->pool = pool;
    *out = f;
    return DSV4_OK;
}

void dsv4_forward_destroy(dsv4_forward *f) {
    if (!f) return;
    ws_free(&f->ws);
    free(f);
}

const char *dsv4_fault_name(int fault) {
    static const char *const names[DSV4_FAULT_COUNT] = {"none", "no-sink", "no-compressed", "rope-pos",
                                                         "no-kv-quant", "mtp-shift"};
    return fault >= 0 && fault < DSV4_FAULT_COUNT ? names[fault] : NULL;
}

void dsv4_forward_set_fault(dsv4_forward *f, int fault) { f->fault = fault; }

void dsv4_forward_set_comm(dsv4_forward *f, dsv4_comm *comm) { f->comm = comm; }

void dsv4_forward_set_hook(dsv4_forward *f, dsv4_layer_hook hook, void *user) {
    f->hook = hook;
    f->hook_user = user;
}

/* ==== step geometry ===================================================================================== */

typedef struct seq_rows {
    int slot;
    int row0, n;            /* rows [row0, row0+n) of the step */
    long pos0;              /* position of the first new token */
    const int32_t *tokens;
} seq_rows;

/* ==== linear helpers ==================================================================================== */

static dsv4_status check_finite(const float *X, int rows, int hc, int D, int layer, const char *op, dsv4_err *err);

static void fp8_linear(dsv4_forward *f, const float *x, int M, const dsv4_fp8_linear *l, float *y) {
    dsv4_cpu_linear_fp8(f->pool, x, M, l->in, l->w, l->scale, l->out, y);
}

static void expert_linear(dsv4_forward *f, const float *x, int M, const dsv4_expert_linear *l, float *y) {
    if (l->is_fp4) dsv4_cpu_linear_fp4(f->pool, x, M, l->in, l->w, l->scale, l->out, y);
    else dsv4_cpu_linear_fp8(f->pool, x, M, l->in, l->w, l->scale, l->out, y);
}

/* In-place FP32 all-reduce of buf[n] over the ranks (no-op on one rank). */
static dsv4_status allreduce_f32(dsv4_forward *f, float *buf, size_t n, dsv4_err *err) {
    if (f->m->shard.world == 1) return DSV4_OK;
    return dsv4_comm_allreduce_sum(f->comm, buf, n, DSV4_COMM_F32, NULL, err);
}

/* ==== attention sub-layer =============================================================================== */

/* Runs the main and (CSA) indexer compressors of one layer over a sequence's new tokens, emitting every
 * entry whose window completes (spec §4.5). x rows are the attn_norm outputs of the sequence. */
static dsv4_status run_compressor(dsv4_forward *f, dsv4_kv_manager *kv, const seq_rows *s, int layer,
                                  const dsv4_compressor_weights *cw, int which, const float *x, dsv4_err *err) {
    const dsv4_config *c = f->m->cfg;
    const int d = cw->d, coff = cw->coff, r = cw->ratio, width = coff * d;
    float *proj = f->ws.cmp; /* [n, 2*width]: kv then gate, reused per token */
    const dsv4_rope *rope = dsv4_model_rope(f->m, layer);
    float entry[1024], vals[8 * 512], scs[8 * 512];
    DSV4_ASSERT(d <= 512 && width <= 1024);
    for (int i = 0; i < s->n; i++) {
        long t = s->pos0 + i;
        /* FP32 projections of one token: c_t = wkv·x, g_t = wgate·x + ape[t mod r]. */
        dsv4_cpu_linear_bf16(NULL, x + (size_t)i * c->dim, 1, c->dim, cw->wkv, width, proj, DSV4_OUT_F32);
        dsv4_cpu_linear_bf16(NULL, x + (size_t)i * c->dim, 1, c->dim, cw->wgate, width, proj + width, DSV4_OUT_F32);
        const float *ape = cw->ape + (size_t)(t % r) * width;
        for (int j = 0; j < width; j++) proj[width + j] += ape[j];
        dsv4_kv_comp_state st = dsv4_kv_access_comp_state(kv, s->slot, layer, which);
        /* The tail state's rule (kv/kv_cmp_state.h, the reference of the device kernels): the token becomes
         * row t mod r of its window; a completed window gives its pooling inputs. */
        const dsv4_kv_cmp_view cv = {r, d, coff == 2, st.prev_val, st.prev_score, st.cur_val, st.cur_score};
        const float *pv, *ps;
        if (!dsv4_kv_cmp_push_view(&cv, t, proj, proj + width, vals, scs, &pv, &ps)) continue;
        long w = t / r;
        dsv4_cpu_compress_pool(pv, ps, coff == 2 ? 2 * r : r, d, d, entry);
        dsv4_cpu_compress_finish(entry, d, cw->norm, (float)c->norm_eps, w * r, rope, which == DSV4_KV_COMP_INDEXER);
        dsv4_status ws_st = which == DSV4_KV_COMP_INDEXER ? dsv4_kv_access_idx_write(kv, s->slot, layer, w, entry)
                                                          : dsv4_kv_access_comp_write(kv, s->slot, layer, w, entry);
        if (ws_st != DSV4_OK)
            return dsv4_err_set(err, ws_st, "forward: non-finite value in layer %d in the %s compressor (entry %ld) "
                                "(a NaN or infinite weight in the checkpoint?)",
                                layer, which == DSV4_KV_COMP_INDEXER ? "indexer" : "attention", w);
    }
    return DSV4_OK;
}

/* Attention for one sequence of one layer: q [n, H*hd] (post norm + RoPE), fresh kv [n, hd];
 * writes o [n, H*hd] (after inverse RoPE). */
static dsv4_status attend_sequence(dsv4_forward *f, dsv4_kv_manager *kv, const seq_rows *s, int layer,
                                   const dsv4_layer_weights *lw, const float *q, const float *fresh_kv,
                                   const float *qI, const float *wI, float *o, dsv4_err *err) {
    const dsv4_config *c = f->m->cfg;
    const dsv4_shard *sh = &f->m->shard;
    const int H = sh->nh, hd = c->head_dim, win = c->window_size, ratio = lw->ratio; /* H: local heads */
    const float scale = 1.0f / sqrtf((float)hd);
    const dsv4_rope *rope = dsv4_model_rope(f->m, layer);
    workspace *ws = &f->ws;
    const int is_csa = ratio && dsv4_config_layer_kind(c, layer) == DSV4_LAYER_CSA;
    /* Entries do not change during attention (the compressors ran first), so the rows every query reads
     * are decoded once per sequence: CSA indexer keys, HCA compressed entries. */
    if (ratio && f->fault != DSV4_FAULT_NO_COMPRESSED) {
        long n_last = (s->pos0 + s->n) / ratio; /* entries visible to the chunk's last query */
        for (long w = 0; w < n_last; w++) {
            if (is_csa) dsv4_kv_access_idx_read(kv, s->slot, layer, w, ws->keys + (size_t)w * c->index_head_dim);
            else dsv4_kv_access_comp_read(kv, s->slot, layer, w, ws->cdec + (size_t)w * hd);
        }
    }
    for (int i = 0; i < s->n; i++) {
        long t = s->pos0 + i;
        int K = 0;
        /* Window: positions max(0, t-win+1) .. t. */
        long p_first = t - win + 1 < 0 ? 0 : t - win + 1;
        for (long p = p_first; p <= t; p++) {
            if (p >= s->pos0) {
                ws->rows[K++] = fresh_kv + (size_t)(p - s->pos0) * hd;
            } else {
                float *dst = ws->dec + (size_t)K * hd;
                dsv4_kv_access_window_read(kv, s->slot, layer, p, dst);
                ws->rows[K++] = dst;
            }
        }
        if (ratio && f->fault != DSV4_FAULT_NO_COMPRESSED) {
            long n_vis = (t + 1) / ratio;
            if (is_csa) {
                const int nIh = sh->nih, dIh = c->index_head_dim; /* local index heads */
                int kcur = (int)(n_vis < c->index_topk ? n_vis : c->index_topk);
                if (kcur > 0) {
                    dsv4_cpu_indexer_scores(qI + (size_t)i * nIh * dIh, wI + (size_t)i * nIh, nIh, dIh, ws->keys,
                                            (int)n_vis, ws->scores);
                    if (sh->world > 1) {
                        /* The official model all-reduces the BF16 head sums of every rank before top-k. */
                        for (long w = 0; w < n_vis; w++) ws->scores16[w] = dsv4_f32_to_bf16(ws->scores[w]);
                        DSV4_TRY(dsv4_comm_allreduce_sum(f->comm, ws->scores16, (size_t)n_vis, DSV4_COMM_BF16, NULL, err));
                        for (long w = 0; w < n_vis; w++) ws->scores[w] = dsv4_bf16_to_f32(ws->scores16[w]);
                    }
                    dsv4_cpu_topk(ws->scores, (int)n_vis, kcur, ws->topk);
                }
                for (int j = 0; j < kcur; j++) {
                    float *dst = ws->dec + (size_t)K * hd;
                    dsv4_kv_access_comp_read(kv, s->slot, layer, ws->topk[j], dst);
                    ws->rows[K++] = dst;
                }
            } else {
                for (long w = 0; w < n_vis; w++) ws->rows[K++] = ws->cdec + (size_t)w * hd;
            }
        }
        float *oi = o + (size_t)i * H * hd;
        float no_sink[H];
        for (int h = 0; h < H; h++) no_sink[h] = -INFINITY;
        dsv4_cpu_sparse_attn(q + (size_t)i * H * hd, H, hd, ws->rows, K,
                             f->fault == DSV4_FAULT_NO_SINK ? no_sink : lw->attn_sink + sh->h0, scale, oi);
        for (int h = 0; h < H; h++) dsv4_cpu_rope(oi + (size_t)h * hd + hd - rope->rope_dim, t, rope, 1);
    }
    /* Window ring: the last min(n, win) fresh rows. */
    for (int i = s->n > win ? s->n - win : 0; i < s->n; i++)
        if (dsv4_kv_access_window_write(kv, s->slot, layer, s->pos0 + i, fresh_kv + (size_t)i * hd) != DSV4_OK)
            return dsv4_err_set(err, DSV4_ERR_FORMAT, "forward: non-finite value in layer %d in the attention KV "
                                "(position %ld) (a NaN or infinite weight in the checkpoint?)",
                                layer, s->pos0 + i);
    return DSV4_OK;
}

static dsv4_status attention_layer(dsv4_forward *f, dsv4_kv_manager *kv, const seq_rows *seqs, int n_seqs,
                                   int rows, int layer, const float *x, float *out, dsv4_err *err) {
    const dsv4_config *c = f->m->cfg;
    const dsv4_layer_weights *lw = dsv4_model_block(f->m, layer);
    const dsv4_shard *sh = &f->m->shard;
    workspace *ws = &f->ws;
    /* H, G: this rank's heads and groups (all of them on one rank); H/G heads per group either way. */
    const int H = sh->nh, hd = c->head_dim, QL = c->q_lora_rank, G = sh->ng, R = c->o_lora_rank;
    const dsv4_rope *rope = dsv4_model_rope(f->m, layer);
    const int rd = rope->rope_dim;
    const float eps = (float)c->norm_eps;

    /* Query: wq_a -> q_norm -> wq_b -> per-head RMS (BF16 arithmetic) -> RoPE. */
    fp8_linear(f, x, rows, &lw->wq_a, ws->qa);
    for (int i = 0; i < rows; i++) dsv4_cpu_rmsnorm(ws->qa + (size_t)i * QL, lw->q_norm, QL, eps, ws->qr + (size_t)i * QL);
    const dsv4_fp8_linear wq_b = dsv4_shard_fp8_rows(&lw->wq_b, sh->h0 * hd, H * hd);
    fp8_linear(f, ws->qr, rows, &wq_b, ws->q);
    /* KV: wkv -> kv_norm -> RoPE -> FP8 fake-quant of the nope dims (block 64). */
    fp8_linear(f, x, rows, &lw->wkv, ws->kv);
    for (const seq_rows *s = seqs; s < seqs + n_seqs; s++) {
        for (int i = 0; i < s->n; i++) {
            long t = s->pos0 + i;
            float *qi = ws->q + (size_t)(s->row0 + i) * H * hd;
            for (int h = 0; h < H; h++) {
                dsv4_cpu_rmsnorm_bf16_arith(qi + (size_t)h * hd, hd, eps);
                dsv4_cpu_rope(qi + (size_t)h * hd + hd - rd, t + (f->fault == DSV4_FAULT_ROPE_POS), rope, 0);
            }
            float *kvi = ws->kv + (size_t)(s->row0 + i) * hd;
            dsv4_cpu_rmsnorm(kvi, lw->kv_norm, hd, eps, kvi);
            dsv4_cpu_rope(kvi + hd - rd, t, rope, 0);
            if (f->fault != DSV4_FAULT_NO_KV_QUANT) dsv4_cpu_fake_quant_fp8(kvi, (size_t)(hd - rd), 64);
        }
    }
    /* Indexer query side (CSA): qI = idx_wq_b(qr) -> RoPE -> Hadamard -> FP4; wI = weights_proj(x)·scale. */
    int is_csa = dsv4_config_layer_kind(c, layer) == DSV4_LAYER_CSA;
    if (is_csa) {
        const int nIh = sh->nih, dIh = c->index_head_dim; /* local index heads; the scale uses the global count */
        const dsv4_fp8_linear idx_wq_b = dsv4_shard_fp8_rows(&lw->idx_wq_b, sh->ih0 * dIh, nIh * dIh);
        fp8_linear(f, ws->qr, rows, &idx_wq_b, ws->qI);
        dsv4_cpu_linear_bf16(f->pool, x, rows, c->dim, lw->idx_weights_proj + (size_t)sh->ih0 * c->dim, nIh, ws->wI,
                             DSV4_OUT_BF16);
        const float wscale = (float)(1.0 / sqrt((double)dIh) / sqrt((double)c->index_n_heads));
        for (const seq_rows *s = seqs; s < seqs + n_seqs; s++)
            for (int i = 0; i < s->n; i++) {
                float *qIi = ws->qI + (size_t)(s->row0 + i) * nIh * dIh;
                for (int h = 0; h < nIh; h++) {
                    float *v = qIi + (size_t)h * dIh;
                    dsv4_cpu_rope(v + dIh - rd, s->pos0 + i, rope, 0);
                    dsv4_cpu_hadamard128(v);
                    dsv4_cpu_fake_quant_fp4(v, (size_t)dIh);
                }
                float *wIi = ws->wI + (size_t)(s->row0 + i) * nIh;
                for (int h = 0; h < nIh; h++) wIi[h] = dsv4_bf16_round(wIi[h] * wscale);
            }
        /* A NaN here would not reach the layer output (it only scores the top-k choice): check it now. */
        DSV4_TRY(check_finite(ws->qI, rows, 1, nIh * dIh, layer, "the indexer query", err));
        DSV4_TRY(check_finite(ws->wI, rows, 1, nIh, layer, "the indexer head weights", err));
    }
    /* Compressors, then attention, per sequence. */
    for (const seq_rows *s = seqs; s < seqs + n_seqs; s++) {
        const float *xs = x + (size_t)s->row0 * c->dim;
        if (is_csa) DSV4_TRY(run_compressor(f, kv, s, layer, &lw->idx_compressor, DSV4_KV_COMP_INDEXER, xs, err));
        if (lw->ratio) DSV4_TRY(run_compressor(f, kv, s, layer, &lw->compressor, DSV4_KV_COMP_MAIN, xs, err));
        const float *qI = is_csa ? ws->qI + (size_t)s->row0 * sh->nih * c->index_head_dim : NULL;
        const float *wI = is_csa ? ws->wI + (size_t)s->row0 * sh->nih : NULL;
        DSV4_TRY(attend_sequence(f, kv, s, layer, lw, ws->q + (size_t)s->row0 * H * hd,
                                 ws->kv + (size_t)s->row0 * hd, qI, wI, ws->o + (size_t)s->row0 * H * hd, err));
    }
    /* Grouped output projection: u_g = wo_a_g · o_g (BF16), then wo_b (FP8). */
    const int gin = (H / G) * hd;
    const uint16_t *wo_a = f->m->wo_a_bf16[layer];
    for (int g = 0; g < G; g++) {
        for (int i = 0; i < rows; i++)
            memcpy(ws->og + (size_t)i * gin, ws->o + (size_t)i * H * hd + (size_t)g * gin, sizeof(float) * gin);
        dsv4_cpu_linear_bf16(f->pool, ws->og, rows, gin, wo_a + (size_t)g * R * gin, R, ws->ug, DSV4_OUT_BF16);
        for (int i = 0; i < rows; i++)
            memcpy(ws->u + (size_t)i * G * R + (size_t)g * R, ws->ug + (size_t)i * R, sizeof(float) * R);
    }
    if (sh->world == 1) {
        fp8_linear(f, ws->u, rows, &lw->wo_b, out);
        return DSV4_OK;
    }
    /* Row-parallel wo_b: this rank's input columns give a BF16 partial; the official model sums the
     * partials in FP32 and rounds the sum to BF16. */
    fp8_linear(f, ws->u, rows, &f->m->wo_b_local[layer], out);
    DSV4_TRY(allreduce_f32(f, out, (size_t)rows * c->dim, err));
    for (size_t i = 0; i < (size_t)rows * c->dim; i++) out[i] = dsv4_bf16_round(out[i]);
    return DSV4_OK;
}

/* ==== MoE sub-layer ===================================================================================== */

static void swiglu_ffn(dsv4_forward *f, const float *x, int M, const dsv4_expert_linear *w1,
                       const dsv4_expert_linear *w3, const dsv4_expert_linear *w2, const float *weights,
                       float *y) {
    workspace *ws = &f->ws;
    const int I = w1->out;
    expert_linear(f, x, M, w1, ws->eg);
    expert_linear(f, x, M, w3, ws->eu);
    for (int i = 0; i < M; i++)
        dsv4_cpu_swiglu(ws->eg + (size_t)i * I, ws->eu + (size_t)i * I, I, (float)f->m->cfg->swiglu_limit,
                        weights ? weights[i] : 1.0f, ws->eh + (size_t)i * I);
    expert_linear(f, ws->eh, M, w2, y);
}

/* Runs expert e over the n gathered rows ws->erow / ws->eslot (n <= rows) and scatters the outputs to ey. */
static void run_expert_rows(dsv4_forward *f, const dsv4_layer_weights *lw, int e, const float *x, int n, int k) {
    workspace *ws = &f->ws;
    const int D = f->m->cfg->dim;
    float wts[n];
    for (int i = 0; i < n; i++) {
        memcpy(ws->ex + (size_t)i * D, x + (size_t)ws->erow[i] * D, sizeof(float) * D);
        wts[i] = ws->eweights[(size_t)ws->erow[i] * k + ws->eslot[i]];
    }
    swiglu_ffn(f, ws->ex, n, &lw->experts_w1[e], &lw->experts_w3[e], &lw->experts_w2[e], wts, ws->eo);
    for (int i = 0; i < n; i++)
        memcpy(ws->ey + ((size_t)ws->erow[i] * k + ws->eslot[i]) * D, ws->eo + (size_t)i * D, sizeof(float) * D);
}

static dsv4_status moe_layer(dsv4_forward *f, const seq_rows *seqs, int n_seqs, int rows, int layer,
                             const float *x, float *out, dsv4_err *err) {
    const dsv4_config *c = f->m->cfg;
    const dsv4_layer_weights *lw = dsv4_model_block(f->m, layer);
    const dsv4_shard *sh = &f->m->shard;
    workspace *ws = &f->ws;
    const int D = c->dim, E = c->n_routed_experts, k = c->n_activated_experts;
    const int e_lo = sh->e0, e_hi = sh->e0 + sh->ne; /* this rank's experts (router is replicated) */
    /* Router: FP32 logits, sqrt-softplus, selection (bias or hash), normalised weights. */
    dsv4_cpu_linear_bf16(f->pool, x, rows, D, lw->gate_w, E, ws->logits_e, DSV4_OUT_F32);
    for (const seq_rows *s = seqs; s < seqs + n_seqs; s++)
        for (int i = 0; i < s->n; i++) {
            int r = s->row0 + i;
            const int64_t *hash = lw->tid2eid ? lw->tid2eid + (size_t)s->tokens[i] * k : NULL;
            dsv4_cpu_route(ws->logits_e + (size_t)r * E, E, lw->gate_bias, hash, k, (float)c->route_scale,
                           ws->experts + (size_t)r * k, ws->eweights + (size_t)r * k);
        }
    /* Routed experts: gather the rows of each expert, run its SwiGLU FFN, scatter to [row, slot]. The gather
     * list holds `rows` entries; a hash-routing table may name one expert twice for a token (the reference
     * then adds both contributions), so a full list is run and the gather goes on (one pass otherwise). */
    for (int e = e_lo; e < e_hi; e++) {
        int n = 0;
        for (int r = 0; r < rows; r++)
            for (int j = 0; j < k; j++) {
                if (ws->experts[(size_t)r * k + j] != e) continue;
                ws->erow[n] = r;
                ws->eslot[n] = j;
                if (++n == rows) {
                    run_expert_rows(f, lw, e, x, n, k);
                    n = 0;
                }
            }
        if (n) run_expert_rows(f, lw, e, x, n, k);
    }
    /* Shared expert (FP8 weights, same clamps, weight 1). */
    dsv4_expert_linear s1 = {lw->shared_w1.w, lw->shared_w1.scale, lw->shared_w1.out, lw->shared_w1.in, 0};
    dsv4_expert_linear s2 = {lw->shared_w2.w, lw->shared_w2.scale, lw->shared_w2.out, lw->shared_w2.in, 0};
    dsv4_expert_linear s3 = {lw->shared_w3.w, lw->shared_w3.scale, lw->shared_w3.out, lw->shared_w3.in, 0};
    swiglu_ffn(f, x, rows, &s1, &s3, &s2, NULL, ws->sy);
    /* y = bf16(Σ routed (ascending expert id) + shared), FP32 accumulator. With several ranks each sums its
     * own experts (ascending), the partial sums are all-reduced in FP32, then the shared expert is added. */
    for (int r = 0; r < rows; r++) {
        int order[64];
        DSV4_ASSERT(k <= 64);
        for (int j = 0; j < k; j++) order[j] = j;
        for (int a = 1; a < k; a++)
            for (int b = a; b > 0 && ws->experts[(size_t)r * k + order[b]] < ws->experts[(size_t)r * k + order[b - 1]]; b--) {
                int tmp = order[b]; order[b] = order[b - 1]; order[b - 1] = tmp;
            }
        float *o = out + (size_t)r * D;
        for (int d = 0; d < D; d++) {
            float acc = 0.0f;
            for (int j = 0; j < k; j++) {
                int e = ws->experts[(size_t)r * k + order[j]];
                if (e >= e_lo && e < e_hi) acc += ws->ey[((size_t)r * k + order[j]) * D + d];
            }
            o[d] = acc;
        }
    }
    DSV4_TRY(allreduce_f32(f, out, (size_t)rows * D, err));
    for (size_t i = 0; i < (size_t)rows * D; i++) out[i] = dsv4_bf16_round(out[i] + ws->sy[i]);
    return DSV4_OK;
}

/* ==== the step ========================================================================================== */

/* Run-time check of activations: a NaN or infinity (from a bad weight the load checks do not scan, or an
 * overflow) fails the step with where it first appeared, instead of flowing on into garbage tokens. One
 * pass over [rows, hc, D] per sub-layer: a few percent of the step's memory traffic on the CPU backend.
 * Returns DSV4_OK or DSV4_ERR_FORMAT naming the layer, the op, the row, the stream and the channel. */
static dsv4_status check_finite(const float *X, int rows, int hc, int D, int layer, const char *op, dsv4_err *err) {
    const size_t n = (size_t)rows * hc * D;
    for (size_t i = 0; i < n; i++) {
        uint32_t b;
        memcpy(&b, &X[i], 4);
        if ((b & 0x7F800000u) != 0x7F800000u) continue;
        const size_t r = i / ((size_t)hc * D), h = i / D % hc, d = i % D;
        if (hc == 1 && !strcmp(op, "the LM head"))
            return dsv4_err_set(err, DSV4_ERR_FORMAT, "forward: non-finite logit (%s) from the LM head: logits row "
                                "%zu, vocab id %zu (a NaN or infinite weight in the checkpoint?)",
                                X[i] != X[i] ? "NaN" : "inf", r, d);
        if (layer < 0)
            return dsv4_err_set(err, DSV4_ERR_FORMAT, "forward: non-finite value (%s) after %s: row %zu, stream %zu, "
                                "channel %zu (a NaN or infinite weight in the checkpoint?)",
                                X[i] != X[i] ? "NaN" : "inf", op, r, h, d);
        return dsv4_err_set(err, DSV4_ERR_FORMAT, "forward: non-finite value (%s) in layer %d after %s: row %zu, "
                            "stream %zu, channel %zu (a NaN or infinite weight in the checkpoint?)",
                            X[i] != X[i] ? "NaN" : "inf", layer, op, r, h, d);
    }
    return DSV4_OK;
}

dsv4_status dsv4_forward_step(dsv4_forward *f, dsv4_kv_manager *kv, const dsv4_seq_step *steps, int n_steps,
                              float *logits, dsv4_err *err) {
    const dsv4_model *m = f->m;
    const dsv4_config *c = m->cfg;
    const int D = c->dim, hc = c->hc_mult;
    const dsv4_shard *sh = &m->shard;
    if (n_steps <= 0) return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "forward: empty batch");
    if (sh->world > 1 && (dsv4_comm_world(f->comm) != sh->world || dsv4_comm_rank(f->comm) != sh->rank))
        return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "forward: model is rank %d of %d but the communicator is "
                            "rank %d of %d", sh->rank, sh->world, dsv4_comm_rank(f->comm), dsv4_comm_world(f->comm));
    for (int i = 0; i < n_steps; i++)
        if (steps[i].want_logits == DSV4_LOGITS_ALL && sh->world > 1)
            return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "forward: logits of every position need one rank");
    int collective = 0;     /* set once this rank may be inside the group's collectives: failures then abort */
    float *head_part = NULL;
    seq_rows *seqs = calloc((size_t)n_steps, sizeof *seqs);
    if (!seqs) return dsv4_err_set(err, DSV4_ERR_NOMEM, "forward: out of memory");
    int rows = 0;
    dsv4_status st = DSV4_OK;
    for (int i = 0; i < n_steps; i++) {
        const dsv4_seq_step *s = &steps[i];
        if (s->n_tokens <= 0 || !s->tokens) {
            st = dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "forward: sequence %d has no tokens", i);
            goto done;
        }
        for (int j = 0; j < s->n_tokens; j++)
            if (s->tokens[j] < 0 || s->tokens[j] >= c->vocab_size) {
                st = dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "forward: token id %d out of range [0, %d)",
                                  s->tokens[j], c->vocab_size);
                goto done;
            }
        for (int j = 0; j < i; j++)
            if (steps[j].slot == s->slot) {
                st = dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "forward: slot %d appears twice in one step", s->slot);
                goto done;
            }
        seqs[i] = (seq_rows){s->slot, rows, s->n_tokens, 0, s->tokens};
        rows += s->n_tokens;
    }
    /* Reserve every block the step needs before touching any state (all-or-nothing). */
    {
        int slots[n_steps], counts[n_steps];
        for (int i = 0; i < n_steps; i++) { slots[i] = steps[i].slot; counts[i] = steps[i].n_tokens; }
        st = dsv4_kv_access_prepare(kv, slots, counts, n_steps, err);
        if (st != DSV4_OK) goto done;
        for (int i = 0; i < n_steps; i++) seqs[i].pos0 = dsv4_kv_access_seq_len(kv, steps[i].slot);
    }
    /* Everything above fails identically on every rank (replicated inputs and KV); from here a failure is
     * rank-local (memory) or a peer's, so it aborts the group instead of leaving peers in a collective. */
    collective = 1;
    if ((st = ws_reserve_rows(&f->ws, c, rows, err)) != DSV4_OK) goto done;
    {
        /* Scratch for the longest list of compressed entries any query of this step can see. */
        int min_ratio = 0;
        for (int l = 0; l < c->n_layers; l++)
            if (c->compress_ratios[l] && (!min_ratio || c->compress_ratios[l] < min_ratio)) min_ratio = c->compress_ratios[l];
        long most = 0;
        for (int i = 0; i < n_steps; i++)
            if (min_ratio && (seqs[i].pos0 + seqs[i].n) / min_ratio > most) most = (seqs[i].pos0 + seqs[i].n) / min_ratio;
        if ((st = ws_reserve_entries(&f->ws, c, (int)most + 1, err)) != DSV4_OK) goto done;
    }
    workspace *ws = &f->ws;
    /* Embedding, expanded to hc identical streams. */
    if (sh->world == 1) {
        for (const seq_rows *s = seqs; s < seqs + n_steps; s++)
            for (int i = 0; i < s->n; i++) {
                float *X = ws->X + (size_t)(s->row0 + i) * hc * D;
                dsv4_cpu_embed(m->w.embed, D, s->tokens[i], X);
                for (int h = 1; h < hc; h++) memcpy(X + (size_t)h * D, X, sizeof(float) * D);
            }
    } else {
        /* Vocab-split table: the owner of a token writes its row, every other rank -0.0 (the identity of
         * IEEE addition, so the all-reduce reproduces the row bit for bit, signed zeros included). */
        for (const seq_rows *s = seqs; s < seqs + n_steps; s++)
            for (int i = 0; i < s->n; i++) {
                float *e = ws->x + (size_t)(s->row0 + i) * D;
                int t = s->tokens[i] - sh->v0;
                if (t >= 0 && t < sh->nv) dsv4_cpu_embed(m->w.embed + (size_t)sh->v0 * D, D, t, e);
                else for (int d = 0; d < D; d++) e[d] = -0.0f;
            }
        if ((st = allreduce_f32(f, ws->x, (size_t)rows * D, err)) != DSV4_OK) goto done;
        for (int r = 0; r < rows; r++)
            for (int h = 0; h < hc; h++)
                memcpy(ws->X + ((size_t)r * hc + h) * D, ws->x + (size_t)r * D, sizeof(float) * D);
    }
    if ((st = check_finite(ws->X, rows, hc, D, -1, "the embedding", err)) != DSV4_OK) goto done;
    const float eps = (float)c->norm_eps, hc_eps = (float)c->hc_eps;
    for (int layer = 0; layer < c->n_layers; layer++) {
        const dsv4_layer_weights *lw = &m->w.layers[layer];
        /* Attention sub-layer. */
        for (int r = 0; r < rows; r++) {
            dsv4_cpu_hc_pre(ws->X + (size_t)r * hc * D, hc, D, lw->hc_attn.fn, lw->hc_attn.base, lw->hc_attn.scale,
                            c->hc_sinkhorn_iters, hc_eps, eps, ws->x + (size_t)r * D, ws->post + (size_t)r * hc,
                            ws->comb + (size_t)r * hc * hc);
            dsv4_cpu_rmsnorm(ws->x + (size_t)r * D, lw->attn_norm, D, eps, ws->x + (size_t)r * D);
        }
        if ((st = attention_layer(f, kv, seqs, n_steps, rows, layer, ws->x, ws->a, err)) != DSV4_OK) goto done;
        for (int r = 0; r < rows; r++)
            dsv4_cpu_hc_post(ws->a + (size_t)r * D, ws->X + (size_t)r * hc * D, ws->post + (size_t)r * hc,
                             ws->comb + (size_t)r * hc * hc, hc, D, ws->X2 + (size_t)r * hc * D);
        if ((st = check_finite(ws->X2, rows, hc, D, layer, "attention", err)) != DSV4_OK) goto done;
        /* MoE sub-layer. */
        for (int r = 0; r < rows; r++) {
            dsv4_cpu_hc_pre(ws->X2 + (size_t)r * hc * D, hc, D, lw->hc_ffn.fn, lw->hc_ffn.base, lw->hc_ffn.scale,
                            c->hc_sinkhorn_iters, hc_eps, eps, ws->x + (size_t)r * D, ws->post + (size_t)r * hc,
                            ws->comb + (size_t)r * hc * hc);
            dsv4_cpu_rmsnorm(ws->x + (size_t)r * D, lw->ffn_norm, D, eps, ws->x + (size_t)r * D);
        }
        if ((st = moe_layer(f, seqs, n_steps, rows, layer, ws->x, ws->a, err)) != DSV4_OK) goto done;
        for (int r = 0; r < rows; r++)
            dsv4_cpu_hc_post(ws->a + (size_t)r * D, ws->X2 + (size_t)r * hc * D, ws->post + (size_t)r * hc,
                             ws->comb + (size_t)r * hc * hc, hc, D, ws->X + (size_t)r * hc * D);
        if ((st = check_finite(ws->X, rows, hc, D, layer, "moe", err)) != DSV4_OK) goto done;
        if (f->hook) f->hook(f->hook_user, layer, ws->X, rows, hc, D);
    }
    /* Head on the last position of every sequence that wants logits (every position: DSV4_LOGITS_ALL). */
    int n_want = 0;
    for (const seq_rows *s = seqs; s < seqs + n_steps; s++)
        for (int r = s->row0; r < s->row0 + s->n; r++) {
            int want = steps[s - seqs].want_logits;
            if (!want || (want != DSV4_LOGITS_ALL && r != s->row0 + s->n - 1)) continue;
            dsv4_cpu_hc_head(ws->X + (size_t)r * hc * D, hc, D, m->w.hc_head.fn, m->w.hc_head.base,
                             m->w.hc_head.scale, hc_eps, eps, ws->head_in + (size_t)n_want * D);
            dsv4_cpu_rmsnorm(ws->head_in + (size_t)n_want * D, m->w.norm, D, eps, ws->head_in + (size_t)n_want * D);
            n_want++;
        }
    if (n_want && sh->world == 1)
        dsv4_cpu_linear_bf16(f->pool, ws->head_in, n_want, D, m->w.head, c->vocab_size, logits, DSV4_OUT_F32);
    if (sh->world > 1) {
        /* Vocab-split head: every rank computes its slice, an all-gather assembles [N][n_want][V/N] and the
         * slices are put in vocab order. Ranks agree on n_want (replicated steps). */
        const size_t nv = (size_t)sh->nv, part = (size_t)n_want * nv;
        if (!(head_part = malloc(sizeof(float) * (part * (size_t)(sh->world + 1) + 1)))) {
            st = dsv4_err_set(err, DSV4_ERR_NOMEM, "forward: out of memory (head all-gather)");
            goto done;
        }
        float *mine = head_part, *all = head_part + part;
        if (n_want)
            dsv4_cpu_linear_bf16(f->pool, ws->head_in, n_want, D, m->w.head + (size_t)sh->v0 * D, sh->nv, mine,
                                 DSV4_OUT_F32);
        if ((st = dsv4_comm_allgather(f->comm, mine, all, sizeof(float) * part, NULL, err)) != DSV4_OK) goto done;
        for (int r = 0; r < sh->world; r++)
            for (int i = 0; i < n_want; i++)
                memcpy(logits + (size_t)i * c->vocab_size + (size_t)r * nv, all + (size_t)r * part + (size_t)i * nv,
                       sizeof(float) * nv);
    }
    /* Non-finite logits fail the step before its positions are committed (the caller may retry or close). */
    if (n_want && (st = check_finite(logits, n_want, 1, c->vocab_size, -1, "the LM head", err)) != DSV4_OK)
        goto done;
    for (int i = 0; i < n_steps; i++) {
        int slot = steps[i].slot, n = steps[i].n_tokens;
        dsv4_kv_access_commit(kv, &slot, &n, 1);
    }
done:
    if (st != DSV4_OK && collective && sh->world > 1) dsv4_comm_abort(f->comm);
    free(head_part);
    free(seqs);
    return st;
}

const dsv4_model *dsv4_forward_model(const dsv4_forward *f) { return f->m; }

void dsv4_forward_hidden(const dsv4_forward *f, int row0, int n, float *dst) {
    const size_t row = (size_t)f->m->cfg->hc_mult * f->m->cfg->dim;
    DSV4_ASSERT(row0 >= 0 && n >= 0 && row0 + n <= f->ws.cap_rows);
    memcpy(dst, f->ws.X + (size_t)row0 * row, sizeof(float) * row * (size_t)n);
}

/* ==== MTP block (spec §4.10) ============================================================================ */

/* One block (attention + MoE sub-layers with their hyper-connections) over ws->X, in place. The main
 * step inlines the same sequence for its layers. */
static dsv4_status run_block(dsv4_forward *f, dsv4_kv_manager *kv, const seq_rows *seqs, int n_seqs, int rows,
                             int layer, dsv4_err *err) {
    const dsv4_config *c = f->m->cfg;
    const dsv4_layer_weights *lw = dsv4_model_block(f->m, layer);
    workspace *ws = &f->ws;
    const int D = c->dim, hc = c->hc_mult;
    const float eps = (float)c->norm_eps, hc_eps = (float)c->hc_eps;
    for (int r = 0; r < rows; r++) {
        dsv4_cpu_hc_pre(ws->X + (size_t)r * hc * D, hc, D, lw->hc_attn.fn, lw->hc_attn.base, lw->hc_attn.scale,
                        c->hc_sinkhorn_iters, hc_eps, eps, ws->x + (size_t)r * D, ws->post + (size_t)r * hc,
                        ws->comb + (size_t)r * hc * hc);
        dsv4_cpu_rmsnorm(ws->x + (size_t)r * D, lw->attn_norm, D, eps, ws->x + (size_t)r * D);
    }
    DSV4_TRY(attention_layer(f, kv, seqs, n_seqs, rows, layer, ws->x, ws->a, err));
    for (int r = 0; r < rows; r++)
        dsv4_cpu_hc_post(ws->a + (size_t)r * D, ws->X + (size_t)r * hc * D, ws->post + (size_t)r * hc,
                         ws->comb + (size_t)r * hc * hc, hc, D, ws->X2 + (size_t)r * hc * D);
    for (int r = 0; r < rows; r++) {
        dsv4_cpu_hc_pre(ws->X2 + (size_t)r * hc * D, hc, D, lw->hc_ffn.fn, lw->hc_ffn.base, lw->hc_ffn.scale,
                        c->hc_sinkhorn_iters, hc_eps, eps, ws->x + (size_t)r * D, ws->post + (size_t)r * hc,
                        ws->comb + (size_t)r * hc * hc);
        dsv4_cpu_rmsnorm(ws->x + (size_t)r * D, lw->ffn_norm, D, eps, ws->x + (size_t)r * D);
    }
    DSV4_TRY(moe_layer(f, seqs, n_seqs, rows, layer, ws->x, ws->a, err));
    for (int r = 0; r < rows; r++)
        dsv4_cpu_hc_post(ws->a + (size_t)r * D, ws->X2 + (size_t)r * hc * D, ws->post + (size_t)r * hc,
                         ws->comb + (size_t)r * hc * hc, hc, D, ws->X + (size_t)r * hc * D);
    return DSV4_OK;
}

dsv4_status dsv4_mtp_check_steps(dsv4_kv_manager *kv, const dsv4_mtp_step *steps, int n_steps, int vocab, int *rows,
                                 dsv4_err *err) {
    if (n_steps <= 0 || !steps) return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "mtp: empty batch");
    int n_rows = 0;
    for (int i = 0; i < n_steps; i++) {
        const dsv4_mtp_step *s = &steps[i];
        if (!dsv4_kv_access_slot_valid(kv, s->slot))
            return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "mtp: slot %d is not admitted", s->slot);
        long len = dsv4_kv_access_seq_len(kv, s->slot);
        if (s->n <= 0 || !s->h || !s->next || s->pos0 < 0)
            return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "mtp: step %d has no rows", i);
        for (int j = 0; j < s->n; j++)
            if (s->next[j] < 0 || s->next[j] >= vocab)
                return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "mtp: token id %d out of range [0, %d)", s->next[j],
                                    vocab);
        for (int j = 0; j < i; j++)
            if (steps[j].slot == s->slot)
                return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "mtp: slot %d appears twice in one step", s->slot);
        long mpos = (long)dsv4_kv_manager_mtp_pos(kv, s->slot);
        if (s->commit && (s->pos0 != mpos || s->pos0 + s->n > len))
            return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "mtp: slot %d: committed rows %ld..%ld, but the MTP "
                                "position is %ld and %ld tokens are committed", s->slot, s->pos0, s->pos0 + s->n - 1,
                                mpos, len);
        n_rows += s->n;
    }
    if (rows) *rows = n_rows;
    return DSV4_OK;
}

dsv4_status dsv4_mtp_check_sync(dsv4_kv_manager *kv, int slot, dsv4_err *err) {
    if (!dsv4_kv_access_slot_valid(kv, slot))
        return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "spec: slot %d is not admitted", slot);
    long len = dsv4_kv_access_seq_len(kv, slot), want = len > 0 ? len - 1 : 0;
    if (dsv4_kv_manager_mtp_pos(kv, slot) != want)
        return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "spec: slot %d: the MTP block is at %lld of %ld tokens (its "
                            "tokens were fed without the MTP step)", slot,
                            (long long)dsv4_kv_manager_mtp_pos(kv, slot), len);
    return DSV4_OK;
}

dsv4_status dsv4_forward_mtp(dsv4_forward *f, dsv4_kv_manager *kv, const dsv4_mtp_step *steps, int n_steps,
                             float *logits, float *h_out, dsv4_err *err) {
    const dsv4_model *m = f->m;
    const dsv4_config *c = m->cfg;
    const dsv4_mtp_weights *mw = m->w.mtp;
    const int D = c->dim, hc = c->hc_mult, layer = c->n_layers;
    if (!mw) return dsv4_err_set(err, DSV4_ERR_UNSUPPORTED, "mtp: the checkpoint has no MTP block (mtp.0.*)");
    if (m->shard.world > 1)
        return dsv4_err_set(err, DSV4_ERR_UNSUPPORTED, "mtp: the MTP block runs on one rank only (no --gpus)");
    int rows = 0;
    DSV4_TRY(dsv4_mtp_check_steps(kv, steps, n_steps, c->vocab_size, &rows, err));
    seq_rows *seqs = calloc((size_t)n_steps, sizeof *seqs);
    if (!seqs) return dsv4_err_set(err, DSV4_ERR_NOMEM, "mtp: out of memory");
    dsv4_status st;
    if ((st = ws_reserve_rows(&f->ws, c, rows, err)) != DSV4_OK || (st = ws_reserve_entries(&f->ws, c, 1, err)) != DSV4_OK) {
        free(seqs);
        return st;
    }
    workspace *ws = &f->ws;
    const float eps = (float)c->norm_eps, hc_eps = (float)c->hc_eps;
    /* Input: e = enorm(embed[next]); Z[h] = bf16(e_proj(e) + h_proj(hnorm(h[h]))) (both BF16-rounded first). */
    int row = 0;
    for (int i = 0; i < n_steps; i++) {
        const dsv4_mtp_step *s = &steps[i];
        seqs[i] = (seq_rows){s->slot, row, s->n, s->pos0, s->next};
        for (int j = 0; j < s->n; j++, row++) {
            float *e = ws->x + (size_t)row * D;
            dsv4_cpu_embed(m->w.embed, D, s->next[j], e);
            dsv4_cpu_rmsnorm(e, mw->enorm, D, eps, e);
            int hj = f->fault == DSV4_FAULT_MTP_SHIFT && j > 0 ? j - 1 : j; /* test-only misalignment */
            for (int h = 0; h < hc; h++)
                dsv4_cpu_rmsnorm(s->h + ((size_t)hj * hc + h) * D, mw->hnorm, D, eps, ws->X2 + ((size_t)row * hc + h) * D);
        }
    }
    fp8_linear(f, ws->x, rows, &mw->e_proj, ws->a);
    fp8_linear(f, ws->X2, rows * hc, &mw->h_proj, ws->X);
    for (int r = 0; r < rows; r++)
        for (int h = 0; h < hc; h++) {
            float *z = ws->X + ((size_t)r * hc + h) * D;
            const float *ep = ws->a + (size_t)r * D;
            for (int d = 0; d < D; d++) z[d] = dsv4_bf16_round(z[d] + ep[d]);
        }
    if ((st = run_block(f, kv, seqs, n_steps, rows, layer, err)) != DSV4_OK) {
        free(seqs);
        return st;
    }
    if (h_out) memcpy(h_out, ws->X, sizeof(float) * (size_t)rows * hc * D);
    int n_want = 0;
    for (int i = 0; i < n_steps; i++)
        for (int r = seqs[i].row0; r < seqs[i].row0 + seqs[i].n; r++) {
            int want = steps[i].want_logits;
            if (!want || (want != DSV4_LOGITS_ALL && r != seqs[i].row0 + seqs[i].n - 1)) continue;
            dsv4_cpu_hc_head(ws->X + (size_t)r * hc * D, hc, D, mw->hc_head.fn, mw->hc_head.base, mw->hc_head.scale,
                             hc_eps, eps, ws->head_in + (size_t)n_want * D);
            dsv4_cpu_rmsnorm(ws->head_in + (size_t)n_want * D, mw->norm, D, eps, ws->head_in + (size_t)n_want * D);
            n_want++;
        }
    if (n_want) dsv4_cpu_linear_bf16(f->pool, ws->head_in, n_want, D, m->w.head, c->vocab_size, logits, DSV4_OUT_F32);
    for (int i = 0; i < n_steps; i++)
        if (steps[i].commit) {
            st = dsv4_kv_manager_mtp_commit(kv, steps[i].slot, steps[i].n, NULL);
            DSV4_ASSERT(st == DSV4_OK);
        }
    free(seqs);
    return DSV4_OK;
}
