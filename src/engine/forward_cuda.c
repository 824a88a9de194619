/* forward_cuda.c — the DeepSeek V4 forward pass on one CUDA device (see forward_cuda.h). Host code only:
 * it enqueues launchers of the op library (ops_cuda.h, cuda_linear.h) and of the forward's glue (cuda_kv_codec.h,
 * cuda_compressor_state.h, cuda_index_lists.h, cuda_moe_pairs.h, cuda_elementwise.h) on the context's stream,
 * in exactly the order of forward_cpu.c.
 *
 * Layout of a device pass: the step's tokens are stacked into rows (sequence by sequence, position order),
 * as on the CPU. The host writes the step inputs (tokens, positions, row -> sequence, per sequence slot /
 * committed length / first row / row count, logits rows) into pinned memory, copies them with one
 * cudaMemcpyAsync into a fixed device buffer, and enqueues the pass — or replays the captured graph of the
 * decode bucket, since every launch of a pass depends only on shapes (rows, sequences, the row count of
 * each sequence), never on positions: the ring slot, window validity, which compressor windows complete, the
 * visible entries and the indexer's key count are computed by the kernels from the positions.
 *
 * KV cache: the manager's arenas live on the device (memory hook below). Writes go straight into the
 * compact bit-exact records (window ring, compressed entries, FP4 indexer keys; kv_schema.h). Reads:
 * attention takes a BF16 staging buffer — per layer the ring of every sequence, the selected (CSA) or all
 * visible (HCA) compressed entries are decoded into it, and the fresh kv rows of the step sit at its start;
 * the attention index lists point into it (decision: gather + decode into a per-step BF16 buffer, since the
 * attention kernel of the op library reads BF16 rows; docs/PERF.md says what it costs). Every loop stops at
 * the live length computed on the device (index lists, attention tiles, indexer keys, decoded entries), so a
 * step's time follows the context, not max_seq_len; only the workspace is sized by capacity.
 *
 * Layer hook (forward_cuda_set_hook): eager passes, X down to the host and back after every layer.
 *
 * Routed experts are chosen on the device. Two paths, picked once at creation by the environment variable
 * DSV4_CUDA_MOE: `scalar` (the default, the path verified on the GPU: one GEMV per (row, expert slot) pair
 * with the weights picked on the device, cuda_moe_pairs.h moe_expert) and `grouped` (cuda_moe.h: the pairs sorted
 * by expert on the device, each selected expert read once per tile of its rows, w1+w3 with SwiGLU fused;
 * written without a GPU, op-tested by tests/unit/test_cuda_moe.c — it becomes the default once a GPU run has
 * verified it end to end, docs/PERF.md). Both keep the decode step capturable: shapes only on the host.
 *
 * The MTP block (spec §4.10) is forward_cuda_mtp.c: its SWA block is L[n_layers], run by dsv4_fcuda_block as
 * the main layers; run_pass hands each committed pass to it while dsv4_forward_cuda_step_mtp drives a step.
 * The types both files share are in forward_cuda_internal.h. */
#include "engine/forward_cuda.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/numfmt.h"
#include "core/status.h"

#ifndef DSV4_HAVE_CUDA

static dsv4_status not_compiled(dsv4_err *err) {
    return dsv4_err_set(err, DSV4_ERR_UNSUPPORTED, "backend cuda not compiled in (build with nvcc present)");
}
dsv4_status dsv4_forward_cuda_create(const dsv4_model *m, const dsv4_forward_cuda_options *opt,
                                     dsv4_forward_cuda **out, dsv4_err *err) {
    (void)m; (void)opt;
    *out = NULL;
    return not_compiled(err);
}
void dsv4_forward_cuda_destroy(dsv4_forward_cuda *f) { (void)f; }
dsv4_status dsv4_forward_cuda_plan_bytes(const dsv4_model *m, const dsv4_forward_cuda_options *opt,
                                         size_t *weight_bytes, size_t *other_bytes, dsv4_err *err) {
    (void)m; (void)opt;
    *weight_bytes = *other_bytes = 0;
    return not_compiled(err);
}
dsv4_kv_manager *dsv4_forward_cuda_kv(dsv4_forward_cuda *f) { (void)f; return NULL; }
void dsv4_forward_cuda_set_graphs(dsv4_forward_cuda *f, int enabled) { (void)f; (void)enabled; }
void dsv4_forward_cuda_set_profile(dsv4_forward_cuda *f, struct dsv4_prof *p) { (void)f; (void)p; }
dsv4_status dsv4_forward_cuda_set_hook(dsv4_forward_cuda *f, dsv4_layer_dump_fn fn, void *user, dsv4_err *err) {
    (void)f; (void)fn; (void)user;
    return not_compiled(err);
}
dsv4_status dsv4_forward_cuda_step(dsv4_forward_cuda *f, const dsv4_seq_step *steps, int n_steps, float *logits,
                                   dsv4_err *err) {
    (void)f; (void)steps; (void)n_steps; (void)logits;
    return not_compiled(err);
}
dsv4_status dsv4_forward_cuda_decode_greedy(dsv4_forward_cuda *f, const int *slots, int n_slots,
                                            const int32_t *first, int n_steps, int32_t *out, double *ms,
                                            dsv4_err *err) {
    (void)f; (void)slots; (void)n_slots; (void)first; (void)n_steps; (void)out; (void)ms;
    return not_compiled(err);
}
void dsv4_forward_cuda_describe(const dsv4_forward_cuda *f, char *buf, size_t n) {
    (void)f;
    snprintf(buf, n, "cuda not compiled in");
}
dsv4_status dsv4_forward_cuda_time_collectives(dsv4_forward_cuda *f, int on, dsv4_err *err) {
    (void)f; (void)on;
    return not_compiled(err);
}
void dsv4_forward_cuda_collective_time(const dsv4_forward_cuda *f, double *ms, int *n_calls) {
    (void)f;
    if (ms) *ms = 0.0;
    if (n_calls) *n_calls = 0;
}

#else /* DSV4_HAVE_CUDA */

#include <math.h>
#include <time.h>

#include "backend/cuda/cuda_compressor_state.h"
#include "backend/cuda/cuda_ctx.h"
#include "backend/cuda/cuda_elementwise.h"
#include "backend/cuda/cuda_index_lists.h"
#include "backend/cuda/cuda_kv_codec.h"
#include "backend/cuda/cuda_linear.h"
#include "backend/cuda/cuda_moe.h"
#include "backend/cuda/cuda_moe_pairs.h"
#include "backend/cuda/cuda_synth.h"
#include "backend/cuda/ops_cuda.h"
#include "engine/kv_access.h"
#include "engine/profile.h"
#include "engine/forward_cuda_internal.h"
#include "kv/kv_schema.h"

/* Bump allocation over one device buffer; a dry pass (base NULL) only measures. */
typedef struct arena {
    dsv4_cuda_ctx *ctx;
    uint8_t *base;
    size_t off, cap;
    size_t uploaded;                 /* weight bytes placed (copied or generated) */
    dsv4_status st;
    dsv4_err *err;
    const dsv4_model *gen;           /* borrowed; non-NULL: a device-only synthetic model, weights generated */
} arena;

/* Puts the weight bytes a host view [src, src + bytes) stands for at dst: a copy, or for a device-only
 * synthetic model (a->gen; model.h) the same bytes generated on the device from the tensor and first element
 * the view's address names (model/synth_ckpt.h) — the values a host-generated copy of the model holds. */
static dsv4_status place(arena *a, void *dst, const void *src, size_t bytes) {
    a->uploaded += bytes;
    if (!a->gen) return dsv4_cuda_upload(a->ctx, dst, src, bytes, a->err);
    dsv4_synth_fill fill;
    uint64_t first;
    dsv4_status st = dsv4_model_synth_locate(a->gen, src, bytes, &fill, &first, a->err);
    if (st != DSV4_OK) return st;
    return dsv4_cuda_synth_fill(a->ctx, &fill, first, bytes / (size_t)fill.elem_bytes, dst, a->err);
}

static void *a_take(arena *a, size_t bytes) {
    size_t at = (a->off + 255) & ~(size_t)255;
    a->off = at + bytes;
    if (!a->base || a->st != DSV4_OK) return NULL;
    DSV4_ASSERT(a->off <= a->cap);
    return a->base + at;
}

static void *a_put(arena *a, const void *src, size_t bytes) {
    if (!src) return NULL;
    void *p = a_take(a, bytes);
    if (p && a->st == DSV4_OK) a->st = place(a, p, src, bytes);
    return p;
}

/* ---- KV memory hook: device arenas ---------------------------------------------------------------- */

static dsv4_status mem_alloc(void *ctx, size_t bytes, void **out) {
    return dsv4_cuda_alloc((dsv4_cuda_ctx *)ctx, bytes, out, NULL);
}
static void mem_release(void *ctx, void *p) { dsv4_cuda_free((dsv4_cuda_ctx *)ctx, p); }
/* kv_rollback's copies of single cache regions (stream-ordered, then waits: the copy is done on return). */
static dsv4_status mem_copy(void *ctx, void *dst, const void *src, size_t bytes, int to_mem) {
    dsv4_status st = dsv4_glue_set_device((dsv4_cuda_ctx *)ctx, NULL);
    if (st != DSV4_OK) return st;
    return to_mem ? dsv4_cuda_upload((dsv4_cuda_ctx *)ctx, dst, src, bytes, NULL)
                  : dsv4_cuda_download((dsv4_cuda_ctx *)ctx, dst, src, bytes, NULL);
}
static dsv4_status mem_fill32(void *ctx, void *dst, uint32_t pattern, size_t n) {
    /* called by the KV manager on admission, possibly from a thread whose current device is another rank's */
    dsv4_status st = dsv4_glue_set_device((dsv4_cuda_ctx *)ctx, NULL);
    return st != DSV4_OK ? st : dsv4_glue_fill32((dsv4_cuda_ctx *)ctx, dst, pattern, n, NULL);
}

/* ---- weights ------------------------------------------------------------------------------------- */

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static size_t fp8_scale_bytes(int out, int in) { return (size_t)((out + 127) / 128) * (size_t)((in + 127) / 128); }

static dlin put_lin(arena *a, const dsv4_fp8_linear *l) {
    dlin d = {0};
    d.out = l->out;
    d.in = l->in;
    d.w = a_put(a, l->w, (size_t)l->out * l->in);
    d.s = a_put(a, l->scale, fp8_scale_bytes(l->out, l->in));
    return d;
}

static dhc put_hc(arena *a, const dsv4_hc_weights *h, int mix, int hcD, int n_scale) {
    dhc d;
    d.fn = a_put(a, h->fn, sizeof(float) * (size_t)mix * hcD);
    d.base = a_put(a, h->base, sizeof(float) * (size_t)mix);
    d.scale = a_put(a, h->scale, sizeof(float) * (size_t)n_scale);
    return d;
}

static dcmp put_cmp(arena *a, const dsv4_compressor_weights *cw, int D) {
    dcmp d = {0};
    if (!cw->wkv) return d;
    d.ratio = cw->ratio;
    d.d = cw->d;
    d.coff = cw->coff;
    size_t width = (size_t)cw->coff * cw->d;
    d.wkv = a_put(a, cw->wkv, 2 * width * D);
    d.wgate = a_put(a, cw->wgate, 2 * width * D);
    d.ape = a_put(a, cw->ape, sizeof(float) * width * cw->ratio);
    d.norm = a_put(a, cw->norm, 2 * (size_t)cw->d);
    return d;
}

/* Stacks the E experts' matrices into one [E][...] region so that the device picks expert e by offset. */
static dexp put_experts(arena *a, const dsv4_expert_linear *ex, int E) {
    dexp d = {0};
    d.out = ex[0].out;
    d.in = ex[0].in;
    d.fp4 = ex[0].is_fp4;
    d.w_stride = d.fp4 ? (size_t)d.out * d.in / 2 : (size_t)d.out * d.in;
    d.s_stride = d.fp4 ? (size_t)d.out * d.in / 32 : fp8_scale_bytes(d.out, d.in);
    d.w = a_take(a, d.w_stride * E);
    d.s = a_take(a, d.s_stride * E);
    if (d.w && a->st == DSV4_OK)
        for (int e = 0; e < E && a->st == DSV4_OK; e++) {
            a->st = place(a, d.w + e * d.w_stride, ex[e].w, d.w_stride);
            if (a->st == DSV4_OK) a->st = place(a, d.s + e * d.s_stride, ex[e].scale, d.s_stride);
        }
    return d;
}

/* The MTP block's input projections, norms and hc_head (its SWA block is L[n_layers], uploaded with the
 * layers). Nothing without an MTP block on this forward. */
static void put_mtp_head(dsv4_forward_cuda *f, arena *a) {
    const dsv4_mtp_weights *mw = f->mtp.w;
    const int D = f->c->dim, hc = f->c->hc_mult;
    if (!mw) return;
    f->mtp.e_proj = put_lin(a, &mw->e_proj);
    f->mtp.h_proj = put_lin(a, &mw->h_proj);
    f->mtp.enorm = a_put(a, mw->enorm, 2 * (size_t)D);
    f->mtp.hnorm = a_put(a, mw->hnorm, 2 * (size_t)D);
    f->mtp.norm = a_put(a, mw->norm, 2 * (size_t)D);
    f->mtp.hc_head = put_hc(a, &mw->hc_head, hc, hc * D, 1);
}

/* One pass over every weight: measures (a->base NULL) or uploads. wo_a goes through tmp (FP8 + scales,
 * device) and is dequantized to BF16 in place in the arena. */
static void put_weights(dsv4_forward_cuda *f, arena *a, uint8_t *tmp, int verbose) {
    const dsv4_config *c = f->c;
    const dsv4_model_weights *w = &f->m->w;
    const int D = c->dim, hc = c->hc_mult, mix = (2 + hc) * hc, V = c->vocab_size, E = c->n_routed_experts;
    const int k = c->n_activated_experts;
    const dsv4_shard *sh = &f->sh;   /* whole model on one GPU: every slice below is the whole tensor */
    (void)V;
    f->embed = a_put(a, w->embed + (size_t)sh->v0 * D, 2 * (size_t)sh->nv * D);
    f->head = a_put(a, w->head + (size_t)sh->v0 * D, 2 * (size_t)sh->nv * D);
    f->norm = a_put(a, w->norm, 2 * (size_t)D);
    f->hc_head = put_hc(a, &w->hc_head, hc, hc * D, 1);
    double t0 = now_s();
    for (int l = 0; l < f->n_blocks; l++) {   /* the main layers, then the MTP block (l = n_layers) */
        const dsv4_layer_weights *lw = dsv4_model_block(f->m, l);
        dlayer *d = &f->L[l];
        d->ratio = lw->ratio;
        d->kind = dsv4_config_layer_kind(c, l);
        d->attn_norm = a_put(a, lw->attn_norm, 2 * (size_t)D);
        d->ffn_norm = a_put(a, lw->ffn_norm, 2 * (size_t)D);
        d->hc_attn = put_hc(a, &lw->hc_attn, mix, hc * D, 3);
        d->hc_ffn = put_hc(a, &lw->hc_ffn, mix, hc * D, 3);
        d->wq_a = put_lin(a, &lw->wq_a);
        d->q_norm = a_put(a, lw->q_norm, 2 * (size_t)c->q_lora_rank);
        const int hd = c->head_dim, dIh = c->index_head_dim, Rl = c->o_lora_rank;
        const dsv4_fp8_linear wq_b = dsv4_shard_fp8_rows(&lw->wq_b, sh->h0 * hd, sh->nh * hd);
        d->wq_b = put_lin(a, &wq_b);
        d->wkv = put_lin(a, &lw->wkv);
        d->kv_norm = a_put(a, lw->kv_norm, 2 * (size_t)c->head_dim);
        /* Row-parallel wo_b: the rank's input columns, copied at load (model.h wo_b_local) when split. */
        d->wo_b = put_lin(a, f->m->wo_b_local ? &f->m->wo_b_local[l] : &lw->wo_b);
        d->sink = a_put(a, lw->attn_sink ? lw->attn_sink + sh->h0 : NULL, sizeof(float) * (size_t)sh->nh);
        d->cmp = put_cmp(a, &lw->compressor, D);
        d->icmp = put_cmp(a, &lw->idx_compressor, D);
        if (lw->idx_wq_b.w) {
            const dsv4_fp8_linear iq = dsv4_shard_fp8_rows(&lw->idx_wq_b, sh->ih0 * dIh, sh->nih * dIh);
            d->idx_wq_b = put_lin(a, &iq);
        }
        d->idx_wproj = a_put(a, lw->idx_weights_proj ? lw->idx_weights_proj + (size_t)sh->ih0 * D : NULL,
                             2 * (size_t)sh->nih * D);
        d->gate_w = a_put(a, lw->gate_w, 2 * (size_t)E * D);
        d->gate_bias = a_put(a, lw->gate_bias, sizeof(float) * (size_t)E);
        d->tid2eid = a_put(a, lw->tid2eid, sizeof(int64_t) * (size_t)V * k);
        d->e1 = put_experts(a, lw->experts_w1 + sh->e0, sh->ne);
        d->e2 = put_experts(a, lw->experts_w2 + sh->e0, sh->ne);
        d->e3 = put_experts(a, lw->experts_w3 + sh->e0, sh->ne);
        d->sh1 = put_lin(a, &lw->shared_w1);
        d->sh2 = put_lin(a, &lw->shared_w2);
        d->sh3 = put_lin(a, &lw->shared_w3);
        /* wo_a: FP8 to the scratch, BF16 into the arena (the only dequantized copy, as the CPU model). */
        /* The rank's output groups [g0, g0+ng) are rows [g0*R, (g0+ng)*R) (multiples of 128: shard.c). */
        const dsv4_fp8_linear wa_rows = dsv4_shard_fp8_rows(&lw->wo_a, sh->g0 * Rl, sh->ng * Rl);
        const dsv4_fp8_linear *wa = &wa_rows;
        size_t wb = (size_t)wa->out * wa->in;
        d->wo_a = a_take(a, 2 * wb);
        if (d->wo_a && a->st == DSV4_OK) {
            a->st = place(a, tmp, wa->w, wb);
            if (a->st == DSV4_OK) a->st = place(a, tmp + wb, wa->scale, fp8_scale_bytes(wa->out, wa->in));
            if (a->st == DSV4_OK)
                a->st = dsv4_glue_dequant_fp8_bf16(a->ctx, tmp, tmp + wb, wa->out, wa->in, d->wo_a, a->err);
            /* the scratch is reused by the next layer: wait for the dequant (load time only) */
            if (a->st == DSV4_OK) a->st = dsv4_cuda_sync(a->ctx, a->err);
        }
        if (a->base && verbose) {
            double dt = now_s() - t0;
            fprintf(stderr, "\rcuda: %s weights: layer %d/%d, %.2f GB, %.2f GB/s   ",
                    a->gen ? "generating" : "uploading", l + 1, f->n_blocks,
                    a->uploaded / 1e9, dt > 0 ? a->uploaded / 1e9 / dt : 0.0);
        }
    }
    put_mtp_head(f, a);
}

/* ---- workspace ----------------------------------------------------------------------------------- */

#define TAKE(a, p, n) ((p) = a_take((a), (size_t)(n) * sizeof *(p)))

static void take_workspace(dsv4_forward_cuda *f, arena *a) {
    const dsv4_config *c = f->c;
    const long R = f->R, S = f->S, D = c->dim, hc = c->hc_mult, H = c->n_heads, hd = c->head_dim;
    const long QL = c->q_lora_rank, G = c->o_groups, Rl = c->o_lora_rank, E = c->n_routed_experts;
    const long k = c->n_activated_experts, I = c->moe_inter_dim, V = c->vocab_size, win = c->window_size;
    const long nI = (long)c->index_n_heads * c->index_head_dim;
    long wmax = 1, gmax = 1, emax_all = 1, dmax = 1, comp_rows = 0;
    for (int l = 0; l < c->n_layers; l++) {
        const dlayer *d = &f->L[l];
        const dcmp *cs[2] = {&d->cmp, &d->icmp};
        for (int i = 0; i < 2; i++) {
            if (!cs[i]->ratio) continue;
            long r = cs[i]->ratio, width = (long)cs[i]->coff * cs[i]->d, emax = (R + S * (r - 1)) / r + 1;
            long slots = cs[i]->coff == 2 ? 2 * r : r;
            if (width > wmax) wmax = width;
            if (emax * slots * cs[i]->d > gmax) gmax = emax * slots * cs[i]->d;
            if (emax > emax_all) emax_all = emax;
            if (cs[i]->d > dmax) dmax = cs[i]->d;
        }
        long rows = d->kind == DSV4_LAYER_CSA ? R * d->n_comp : S * d->n_comp;
        if (rows > comp_rows) comp_rows = rows;
    }
    long kq2 = QL;
    if (G * Rl > kq2) kq2 = G * Rl;
    if (I > kq2) kq2 = I;
    f->staging_ring = (int)R;
    f->staging_comp = (int)(R + S * win);
    TAKE(a, f->in, 3 * R + 5 * S);
    TAKE(a, f->hist, (long)HIST_CAP * S);
    TAKE(a, f->ctr, 1);
    TAKE(a, f->X, R * hc * D); TAKE(a, f->X2, R * hc * D);
    TAKE(a, f->x, R * D); TAKE(a, f->a, R * D);
    TAKE(a, f->post, R * hc); TAKE(a, f->comb, R * hc * hc);
    TAKE(a, f->qa, R * QL); TAKE(a, f->qr, R * QL);
    TAKE(a, f->q, R * H * hd); TAKE(a, f->o, R * H * hd); TAKE(a, f->og, R * H * hd);
    TAKE(a, f->ug, R * G * Rl); TAKE(a, f->u, R * G * Rl);
    TAKE(a, f->staging, (R + S * win + comp_rows) * hd);
    TAKE(a, f->idx, R * f->Kmax); TAKE(a, f->nlive, R);
    TAKE(a, f->attn_ws, dsv4_cuda_sparse_attn_ws_bytes((int)R, (int)H, f->Kmax) / sizeof(float));
    TAKE(a, f->aq1, R * D); TAKE(a, f->as1, R * D / 128);
    TAKE(a, f->aq2, R * k * kq2); TAKE(a, f->as2, R * k * kq2 / 128);
    TAKE(a, f->cproj, R * wmax); TAKE(a, f->gproj, R * wmax);
    TAKE(a, f->gv, gmax); TAKE(a, f->gs, gmax);
    TAKE(a, f->e_slot, emax_all); TAKE(a, f->e_w, emax_all); TAKE(a, f->e_pos, emax_all);
    TAKE(a, f->ent, emax_all * dmax);
    if (f->max_e_csa) {
        TAKE(a, f->qI, R * nI); TAKE(a, f->wI, R * c->index_n_heads);
        TAKE(a, f->ikeys, S * (long)f->max_e_csa * c->index_head_dim);
        TAKE(a, f->scores, R * (long)f->max_e_csa);
        TAKE(a, f->sel, R * (long)c->index_topk);
        TAKE(a, f->nkeys, R); TAKE(a, f->kstart, R);
    }
    TAKE(a, f->logits_e, R * E); TAKE(a, f->experts, R * k); TAKE(a, f->eweights, R * k);
    TAKE(a, f->eg, R * k * I);
    if (!f->moe_grouped) TAKE(a, f->eu, R * k * I); /* scalar path's up projection (grouped: in registers) */
    TAKE(a, f->ey, R * k * D);
    if (f->moe_grouped) TAKE(a, f->moe_ws, dsv4_cuda_moe_layout_bytes((int)(R * k), f->sh.ne));
    TAKE(a, f->sg, R * I); TAKE(a, f->su, R * I); TAKE(a, f->sy, R * D);
    TAKE(a, f->Xh, S * hc * D); TAKE(a, f->hin, S * D);
    TAKE(a, f->logits, S * V); TAKE(a, f->amax, S);
    if (f->mtp.w) {  /* only with the MTP block (forward_cuda_internal.h: the MTP rows' buffers) */
        TAKE(a, f->mtp_hl, (S + R) * hc * D); TAKE(a, f->mtp_hin, R * hc * D);
        TAKE(a, f->mtp_z, hc * R * D); TAKE(a, f->mtp_y, R * D); TAKE(a, f->mtp_e32, R * D);
        TAKE(a, f->mtp_hidx, R);
    }
    if (f->comm) {   /* only with a communicator: the single-GPU workspace is unchanged */
        TAKE(a, f->red, R * D);
        if (f->max_e_csa) TAKE(a, f->sc16, R * (long)f->max_e_csa);
        TAKE(a, f->lgath, (long)f->sh.world * S * f->sh.nv);
    }
}

/* ---- create / destroy ---------------------------------------------------------------------------- */

void dsv4_forward_cuda_destroy(dsv4_forward_cuda *f) {
    if (!f) return;
    if (f->ctx) (void)dsv4_glue_set_device(f->ctx, NULL);
    if (f->ctx) (void)dsv4_cuda_sync(f->ctx, NULL);
    for (int i = 0; i < f->n_buckets; i++) dsv4_glue_graph_destroy(f->buckets[i].exec);
    if (f->coll_ev) {
        for (int i = 0; i < 2 * MAX_COLL_EVENTS; i++) dsv4_cuda_event_destroy(f->coll_ev[i]);
        free(f->coll_ev);
    }
    if (f->kv) dsv4_kv_manager_destroy(f->kv);
    if (f->ctx) {
        dsv4_cuda_free(f->ctx, f->wbuf);
        dsv4_cuda_free(f->ctx, f->wsbuf);
        dsv4_cuda_free(f->ctx, f->d_bt);
    }
    dsv4_glue_host_free(f->h_in);
    dsv4_glue_host_free(f->h_bt);
    dsv4_glue_host_free(f->h_hidx);
    free(f->h_hbf);
    free(f->mtp_dst);
    free(f->mtp_first);
    free(f->mtp_hlen);
    free(f->bt_shadow);
    free(f->hook_f);
    free(f->hook_b);
    free(f->L);
    dsv4_cuda_ctx_destroy(f->ctx);
    free(f);
}

dsv4_kv_manager *dsv4_forward_cuda_kv(dsv4_forward_cuda *f) { return f->kv; }
void dsv4_forward_cuda_set_graphs(dsv4_forward_cuda *f, int enabled) { f->use_graphs = enabled; }
void dsv4_forward_cuda_set_profile(dsv4_forward_cuda *f, dsv4_prof *p) { f->prof = p; }

dsv4_status dsv4_forward_cuda_set_hook(dsv4_forward_cuda *f, dsv4_layer_dump_fn fn, void *user, dsv4_err *err) {
    if (fn && !f->hook_f) {
        size_t n = (size_t)f->R * (size_t)f->c->hc_mult * (size_t)f->c->dim;
        f->hook_f = malloc(sizeof(float) * n);
        f->hook_b = malloc(sizeof(uint16_t) * n);
        if (!f->hook_f || !f->hook_b) {
            free(f->hook_f);
            free(f->hook_b);
            f->hook_f = NULL;
            f->hook_b = NULL;
            return dsv4_err_set(err, DSV4_ERR_NOMEM, "cuda forward: out of memory (layer hook staging)");
        }
    }
    f->hook = fn;
    f->hook_user = user;
    return DSV4_OK;
}

dsv4_status dsv4_forward_cuda_time_collectives(dsv4_forward_cuda *f, int on, dsv4_err *err) {
    if (on && !f->comm) return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "cuda forward: no communicator to time");
    if (on && !f->coll_ev) {
        dsv4_status sd = dsv4_glue_set_device(f->ctx, err);   /* events belong to the device current at creation */
        if (sd != DSV4_OK) return sd;
        void **ev = calloc(2 * MAX_COLL_EVENTS, sizeof *ev);
        if (!ev) return dsv4_err_set(err, DSV4_ERR_NOMEM, "cuda forward: out of memory (timing events)");
        for (int i = 0; i < 2 * MAX_COLL_EVENTS; i++) {
            dsv4_status st = dsv4_cuda_event_create(&ev[i], err);
            if (st != DSV4_OK) {
                for (int j = 0; j < i; j++) dsv4_cuda_event_destroy(ev[j]);
                free(ev);
                return st;
            }
        }
        f->coll_ev = ev;
    }
    f->time_coll = on != 0;
    return DSV4_OK;
}

void dsv4_forward_cuda_collective_time(const dsv4_forward_cuda *f, double *ms, int *n_calls) {
    if (ms) *ms = f->coll_ms;
    if (n_calls) *n_calls = f->coll_calls;
}

void dsv4_forward_cuda_describe(const dsv4_forward_cuda *f, char *buf, size_t n) {
    char dev[256];
    dsv4_cuda_describe(f->ctx, dev, sizeof dev);
    snprintf(buf, n, "%s; weights %.3f GB %s at %.2f GB/s", dev, f->upload_gb,
             f->m->weights_on_device_only ? "generated on the device" : "uploaded", f->upload_gbps);
}

/* Rows per pass, sequences and the longest sequence, from the options (defaults in forward_cuda.h). */
static void set_sizes(dsv4_forward_cuda *f, const dsv4_forward_cuda_options *opt) {
    f->S = opt && opt->max_seqs > 0 ? opt->max_seqs : 8;
    f->msl = opt && opt->max_tokens > 0 ? opt->max_tokens : (long)f->S * 4096;
    f->R = opt && opt->max_rows > 0 ? opt->max_rows : 512;
    if (f->R < f->S) f->R = f->S;
}

/* Per-layer attention list geometry (after put_weights set each layer's ratio and kind). */
static void attention_geometry(dsv4_forward_cuda *f) {
    const dsv4_config *c = f->c;
    f->Kmax = c->window_size;
    for (int l = 0; l < c->n_layers; l++) {
        dlayer *d = &f->L[l];
        d->max_e = d->ratio ? (int)(f->msl / d->ratio) : 0;
        d->n_comp = d->kind == DSV4_LAYER_CSA ? c->index_topk : d->kind == DSV4_LAYER_HCA ? d->max_e : 0;
        if (d->kind == DSV4_LAYER_CSA) f->max_e_csa = d->max_e;
        if (c->window_size + d->n_comp > f->Kmax) f->Kmax = c->window_size + d->n_comp;
    }
}

/* Largest wo_a (FP8 + scales): the device scratch its dequantization goes through at placement. */
static size_t wo_a_scratch_bytes(const dsv4_forward_cuda *f) {
    size_t wmax = 0;
    for (int l = 0; l < f->n_blocks; l++) {   /* the main layers, then the MTP block */
        const dsv4_fp8_linear *wa = &dsv4_model_block(f->m, l)->wo_a;
        size_t b = (size_t)wa->out * wa->in + fp8_scale_bytes(wa->out, wa->in);
        if (b > wmax) wmax = b;
    }
    return wmax;
}

dsv4_status dsv4_forward_cuda_plan_bytes(const dsv4_model *m, const dsv4_forward_cuda_options *opt,
                                         size_t *weight_bytes, size_t *other_bytes, dsv4_err *err) {
    const dsv4_config *c = m->cfg;
    dsv4_forward_cuda *f = calloc(1, sizeof *f);
    if (f) {   /* the blocks as dsv4_forward_cuda_create counts them (the MTP block on one GPU) */
        f->mtp.w = m->w.mtp && m->shard.world == 1 ? m->w.mtp : NULL;
        f->n_blocks = c->n_layers + (f->mtp.w ? 1 : 0);
    }
    if (!f || !(f->L = calloc((size_t)f->n_blocks, sizeof *f->L))) {
        free(f);
        return dsv4_err_set(err, DSV4_ERR_NOMEM, "cuda forward plan: out of memory");
    }
    f->m = m;
    f->c = c;
    f->sh = m->shard;
    set_sizes(f, opt);
    const char *moe_env = getenv("DSV4_CUDA_MOE");
    f->moe_grouped = moe_env && strcmp(moe_env, "grouped") == 0;
    arena a = {NULL, NULL, 0, 0, 0, DSV4_OK, err, NULL};   /* dry passes: sizes only, no device call */
    put_weights(f, &a, NULL, 0);
    *weight_bytes = a.off + wo_a_scratch_bytes(f);
    attention_geometry(f);
    arena w = {NULL, NULL, 0, 0, 0, DSV4_OK, err, NULL};
    take_workspace(f, &w);
    dsv4_kv_schema ks;
    dsv4_status st = dsv4_kv_schema_init(&ks, c, 0, err);
    if (st == DSV4_OK) {
        /* the KV manager's arenas (kv_manager.c: blocks for max_tokens + one per request) and block tables */
        int64_t nb = ks.block_bytes ? dsv4_kv_schema_blocks_for_tokens(&ks, f->msl) + f->S : 0;
        int64_t bt = (int64_t)f->S * (dsv4_kv_schema_blocks_for_tokens(&ks, f->msl) + 1);
        *other_bytes = w.off + (size_t)nb * ks.block_bytes + (size_t)f->S * ks.slot_bytes + (size_t)bt * 4 +
                       ((size_t)96 << 20);   /* the context's cuBLASLt + split-K workspaces (cuda_ctx.h) */
    }
    free(f->L);
    free(f);
    return st;
}

/* Shapes the kernels take (the op library states its own limits; these are the engine's). */
static dsv4_status check_shapes(const dsv4_config *c, dsv4_err *err) {
    if (c->head_dim != 512)
        return dsv4_err_set(err, DSV4_ERR_CONFIG, "cuda: head_dim %d (the attention kernel takes 512)", c->head_dim);
    if (c->n_activated_experts > 16)
        return dsv4_err_set(err, DSV4_ERR_CONFIG, "cuda: %d experts per token (at most 16)", c->n_activated_experts);
    for (int l = 0; l < c->n_layers; l++)
        if (dsv4_config_layer_kind(c, l) == DSV4_LAYER_CSA && (c->index_head_dim != 128 || c->index_n_heads > 64))
            return dsv4_err_set(err, DSV4_ERR_CONFIG, "cuda: indexer needs head dim 128 and <= 64 heads");
    return DSV4_OK;
}

dsv4_status dsv4_forward_cuda_create(const dsv4_model *m, const dsv4_forward_cuda_options *opt,
                                     dsv4_forward_cuda **out, dsv4_err *err) {
    *out = NULL;
    const dsv4_config *c = m->cfg;
    dsv4_status st = check_shapes(c, err);
    if (st != DSV4_OK) return st;
    if (dsv4_cuda_device_count() <= 0)
        return dsv4_err_set(err, DSV4_ERR_UNSUPPORTED, "cuda: no CUDA device visible");
    dsv4_comm *comm = opt ? opt->comm : NULL;
    if (m->shard.world > 1 && !comm)
        return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "cuda forward: the model is rank %d of %d but no communicator "
                            "was given", m->shard.rank, m->shard.world);
    if (comm && (dsv4_comm_world(comm) != m->shard.world || dsv4_comm_rank(comm) != m->shard.rank))
        return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "cuda forward: the model is rank %d of %d but the communicator "
                            "is rank %d of %d", m->shard.rank, m->shard.world, dsv4_comm_rank(comm),
                            dsv4_comm_world(comm));
    /* DSV4_CUDA_MOE: grouped | scalar (default scalar until a GPU run verifies grouped; docs/PERF.md) */
    const char *moe_env = getenv("DSV4_CUDA_MOE");
    if (moe_env && *moe_env && strcmp(moe_env, "scalar") != 0 && strcmp(moe_env, "grouped") != 0)
        return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "DSV4_CUDA_MOE=%s: expected grouped or scalar", moe_env);
    const int moe_grouped = moe_env && strcmp(moe_env, "grouped") == 0;
    if (moe_grouped && (c->dim % 128 || c->moe_inter_dim % 128 || m->shard.ne > DSV4_CUDA_MOE_MAX_EXPERTS))
        return dsv4_err_set(err, DSV4_ERR_CONFIG, "DSV4_CUDA_MOE=grouped: needs dim and moe_inter_dim multiples of 128 "
                            "and at most %d experts per device (dim %d, inter %d, experts %d)",
                            DSV4_CUDA_MOE_MAX_EXPERTS, c->dim, c->moe_inter_dim, m->shard.ne);
    /* DSV4_CUDA_FP8_GEMM: mma | cublaslt, the FP8 linears at M > 16 (default mma until a GPU run picks;
     * docs/PERF.md); cublaslt prepares every FP8 weight's FP32 scale table at load */
    const char *gemm_env = getenv("DSV4_CUDA_FP8_GEMM");
    if (gemm_env && *gemm_env && strcmp(gemm_env, "mma") != 0 && strcmp(gemm_env, "cublaslt") != 0)
        return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "DSV4_CUDA_FP8_GEMM=%s: expected mma or cublaslt", gemm_env);
    const int fp8_lt = gemm_env && strcmp(gemm_env, "cublaslt") == 0;
    dsv4_forward_cuda *f = calloc(1, sizeof *f);
    if (!f) return dsv4_err_set(err, DSV4_ERR_NOMEM, "cuda forward: out of memory");
    f->m = m;
    f->c = c;
    f->comm = comm;
    f->sh = m->shard;
    set_sizes(f, opt);
    f->use_graphs = !(opt && opt->no_graphs);
    f->capacity_lists = opt && opt->capacity_lists;
    f->moe_grouped = moe_grouped;
    int verbose = opt && opt->verbose;
    /* The MTP block runs on one GPU holding the whole model (forward_cuda_mtp.c); with a communicator its
     * weights stay on the host and dsv4_forward_cuda_mtp answers UNSUPPORTED. */
    f->mtp.w = m->w.mtp && m->shard.world == 1 ? m->w.mtp : NULL;
    f->n_blocks = c->n_layers + (f->mtp.w ? 1 : 0);
    f->L = calloc((size_t)f->n_blocks, sizeof *f->L);
    if (!f->L) { free(f); return dsv4_err_set(err, DSV4_ERR_NOMEM, "cuda forward: out of memory"); }
    if ((st = dsv4_cuda_ctx_create(opt ? opt->device : 0, 0, &f->ctx, err)) != DSV4_OK) goto fail;

    /* Weights: measure, allocate once, upload. */
    {
        arena a = {f->ctx, NULL, 0, 0, 0, DSV4_OK, err, NULL};
        put_weights(f, &a, NULL, 0);
        size_t wmax = wo_a_scratch_bytes(f);
        void *tmp = NULL;
        if ((st = dsv4_cuda_alloc(f->ctx, a.off, &f->wbuf, err)) != DSV4_OK) goto fail;
        if ((st = dsv4_cuda_alloc(f->ctx, wmax, &tmp, err)) != DSV4_OK) goto fail;
        arena b = {f->ctx, f->wbuf, 0, a.off, 0, DSV4_OK, err, m->weights_on_device_only ? m : NULL};
        double t0 = now_s();
        put_weights(f, &b, tmp, verbose);
        if (b.st == DSV4_OK) b.st = dsv4_cuda_sync(f->ctx, err);
        double dt = now_s() - t0;
        dsv4_cuda_free(f->ctx, tmp);
        if ((st = b.st) != DSV4_OK) goto fail;
        f->upload_gb = b.uploaded / 1e9;
        f->upload_gbps = dt > 0 ? f->upload_gb / dt : 0.0;
        if (verbose)
            fprintf(stderr, "\rcuda: weights on the device: %.3f GB %s in %.2f s (%.2f GB/s)                 \n",
                    f->upload_gb, m->weights_on_device_only ? "generated" : "uploaded", dt, f->upload_gbps);
    }
    if (fp8_lt) {
        f->ctx->fp8_gemm = DSV4_CUDA_FP8_GEMM_CUBLASLT;
        for (int l = 0; l < f->n_blocks && st == DSV4_OK; l++) {
            const dlayer *d = &f->L[l];
            const dlin *ls[] = {&d->wq_a, &d->wq_b, &d->wkv, &d->wo_b, &d->idx_wq_b, &d->sh1, &d->sh2, &d->sh3};
            for (int i = 0; i < 8 && st == DSV4_OK; i++)
                if (ls[i]->w) st = dsv4_cuda_linear_fp8_lt_prepare(f->ctx, ls[i]->s, ls[i]->out, ls[i]->in, err);
        }
        if (st == DSV4_OK) st = dsv4_cuda_sync(f->ctx, err);
        if (st != DSV4_OK) goto fail;
    }

    /* KV manager on device memory. */
    {
        f->mem = (dsv4_kv_mem_ops){f->ctx, mem_alloc, mem_release, mem_fill32, 0, mem_copy};
        dsv4_kv_manager_params p = {0};
        p.max_requests = f->S;
        p.max_total_tokens = f->msl;
        p.max_seq_len = f->msl;
        p.mem = &f->mem;
        if ((st = dsv4_kv_manager_create(c, &p, &f->kv, err)) != DSV4_OK) goto fail;
        f->schema = dsv4_kv_manager_schema(f->kv);
        /* Arena bases, from the views of a temporarily admitted slot. */
        int slot;
        if ((st = dsv4_kv_manager_admit(f->kv, 0, &slot, err)) != DSV4_OK) goto fail;
        dsv4_kv_layer_view v;
        for (int l = 0; l < c->n_layers; l++) {
            (void)dsv4_kv_manager_view(f->kv, slot, l, &v, NULL);
            if (l == 0) f->slots_base = v.ring - (size_t)slot * f->schema->slot_bytes - f->schema->layer[0].ring_off;
            if (v.block_arena) f->blocks_base = v.block_arena;
        }
        (void)dsv4_kv_manager_release(f->kv, slot, NULL);
        const int32_t *tables = dsv4_kv_manager_block_tables(f->kv, &f->bt_ld);
        (void)tables;
        size_t bt_n = (size_t)f->S * (size_t)(f->bt_ld > 0 ? f->bt_ld : 1);
        f->bt_shadow = malloc(bt_n * sizeof(int32_t));
        if (!f->bt_shadow) { st = dsv4_err_set(err, DSV4_ERR_NOMEM, "cuda forward: out of memory"); goto fail; }
        for (size_t i = 0; i < bt_n; i++) f->bt_shadow[i] = -1;
        if ((st = dsv4_cuda_alloc(f->ctx, bt_n * sizeof(int32_t), (void **)&f->d_bt, err)) != DSV4_OK) goto fail;
        if ((st = dsv4_glue_fill32(f->ctx, f->d_bt, 0xffffffffu, bt_n, err)) != DSV4_OK) goto fail;
        if ((st = dsv4_glue_host_alloc((size_t)f->S * (size_t)(f->bt_ld > 0 ? f->bt_ld : 1) * sizeof(int32_t),
                                       (void **)&f->h_bt, err)) != DSV4_OK)
            goto fail;
    }

    attention_geometry(f);

    /* Workspace: measure, allocate once. */
    {
        arena a = {f->ctx, NULL, 0, 0, 0, DSV4_OK, err, NULL};
        take_workspace(f, &a);
        if ((st = dsv4_cuda_alloc(f->ctx, a.off, &f->wsbuf, err)) != DSV4_OK) goto fail;
        arena b = {f->ctx, f->wsbuf, 0, a.off, 0, DSV4_OK, err, NULL};
        take_workspace(f, &b);
        /* Poison once so that a read of something never written shows up as NaN, not as a plausible 0. */
        if ((st = dsv4_cuda_memset(f->ctx, f->wsbuf, 0xff, a.off, err)) != DSV4_OK) goto fail;
        if ((st = dsv4_cuda_memset(f->ctx, f->ctr, 0, sizeof(int32_t), err)) != DSV4_OK) goto fail;
        if ((st = dsv4_glue_host_alloc(sizeof(int32_t) * (3 * (size_t)f->R + 5 * (size_t)f->S), (void **)&f->h_in,
                                       err)) != DSV4_OK)
            goto fail;
        if (f->mtp.w) {
            const size_t hrow = (size_t)c->hc_mult * (size_t)c->dim;
            if ((st = dsv4_glue_host_alloc(sizeof(int32_t) * (size_t)f->R, (void **)&f->h_hidx, err)) != DSV4_OK)
                goto fail;
            f->h_hbf = malloc(sizeof(uint16_t) * hrow * (size_t)f->R);
            f->mtp_dst = calloc((size_t)f->S, sizeof *f->mtp_dst);
            f->mtp_first = calloc((size_t)f->S, sizeof *f->mtp_first);
            f->mtp_hlen = calloc((size_t)f->S, sizeof *f->mtp_hlen);
            if (!f->h_hbf || !f->mtp_dst || !f->mtp_first || !f->mtp_hlen) {
                st = dsv4_err_set(err, DSV4_ERR_NOMEM, "cuda forward: out of memory (MTP staging)");
                goto fail;
            }
        }
        if ((st = dsv4_cuda_sync(f->ctx, err)) != DSV4_OK) goto fail;
    }
    *out = f;
    return DSV4_OK;
fail:
    dsv4_forward_cuda_destroy(f);
    return st;
}

/* ==== one device pass =================================================================================== */

/* Views of the step inputs inside f->in (device) and f->h_in (host); the type is in forward_cuda_internal.h. */
static inputs inputs_of(const dsv4_forward_cuda *f, int32_t *base) {
    inputs v;
    v.tok = base;
    v.pos = base + f->R;
    v.rseq = base + 2 * f->R;
    v.sslot = base + 3 * f->R;
    v.spos0 = v.sslot + f->S;
    v.srow0 = v.sslot + 2 * f->S;
    v.sn = v.sslot + 3 * f->S;
    v.head = v.sslot + 4 * f->S;
    return v;
}

static dsv4_glue_kv kv_of(const dsv4_forward_cuda *f, int layer) {
    const dsv4_kv_schema *s = f->schema;
    const dsv4_kv_layer_schema *L = &s->layer[layer];
    dsv4_glue_kv k;
    memset(&k, 0, sizeof k);
    k.slots = f->slots_base;
    k.slot_bytes = s->slot_bytes;
    k.blocks = f->blocks_base;
    k.block_bytes = s->block_bytes;
    k.bt = f->d_bt;
    k.bt_ld = (int)f->bt_ld;
    k.nope = s->entry.nope;
    k.rope = s->entry.rope;
    k.rope_off = s->entry.rope_off;
    k.scale_off = s->entry.scale_off;
    k.n_scales = s->entry.n_scales;
    k.entry_bytes = s->entry.bytes;
    k.ik_dim = s->ikey.dim;
    k.ik_code_bytes = s->ikey.code_bytes;
    k.ik_n_scales = s->ikey.n_scales;
    k.ring_off = L->ring_off;
    k.window = s->window;
    k.ratio = L->ratio;
    k.entries_per_block = L->entries_per_block;
    k.main_off = L->main_off;
    k.ikey_off = L->ikey_off;
    k.ikey_scale_off = L->ikey_scale_off;
    return k;
}

#define T(expr) do { dsv4_status s__ = (expr); if (s__ != DSV4_OK) return s__; } while (0)

/* ---- per-op profile (engine/profile.h): an event after each op group, only while f->prof is set -------- */
#define PM(name, bytes, flops)                                                                                \
    do {                                                                                                      \
        if (f->prof) T(dsv4_prof_mark(f->prof, f->ctx, (name), (double)(bytes), (double)(flops), err));     \
    } while (0)
/* T(expr), then the op's mark (bytes and FLOPs unknown) */
#define TP(name, expr) \
    do {               \
        T(expr);       \
        PM(name, 0, 0); \
    } while (0)

/* FP8 linear on an already quantized activation (act_quant is its own op). Profile bytes: weight + scales,
 * activation codes + scales, BF16 output. */
static dsv4_status lin8(dsv4_forward_cuda *f, const char *name, const uint8_t *xq, const uint8_t *xs, int M,
                        const dlin *l, uint16_t *y, dsv4_err *err) {
    T(dsv4_cuda_linear_fp8(f->ctx, xq, xs, M, l->in, l->w, l->s, l->out, y, err));
    PM(name, (double)l->out * l->in + (double)fp8_scale_bytes(l->out, l->in) + (double)M * l->in * (1.0 + 1.0 / 128) +
                 2.0 * M * l->out,
       2.0 * M * l->out * l->in);
    return DSV4_OK;
}

/* BF16 linear (cuBLASLt) with its profile mark: weight, input, output bytes. */
static dsv4_status linbf(dsv4_forward_cuda *f, const char *name, const uint16_t *x, int M, int K, const uint16_t *w,
                         int N, void *y, dsv4_out_round r, dsv4_err *err) {
    T(dsv4_cuda_linear_bf16(f->ctx, x, M, K, w, N, y, r, err));
    PM(name, 2.0 * N * K + 2.0 * M * K + (r == DSV4_OUT_BF16 ? 2.0 : 4.0) * M * N, 2.0 * M * N * K);
    return DSV4_OK;
}

/* ---- collectives (tensor parallel): on this forward's stream, so decode graphs capture them ---------- */

static dsv4_status coll_mark(dsv4_forward_cuda *f, int end, dsv4_err *err) {
    if (!f->time_coll || f->n_coll >= MAX_COLL_EVENTS) return DSV4_OK;
    T(dsv4_cuda_event_record(f->ctx, f->coll_ev[2 * f->n_coll + end], err));
    if (end) f->n_coll++;
    return DSV4_OK;
}

static dsv4_status allreduce(dsv4_forward_cuda *f, void *buf, size_t n, dsv4_comm_dtype dt, dsv4_err *err) {
    T(coll_mark(f, 0, err));
    T(dsv4_comm_allreduce_sum(f->comm, buf, n, dt, f->ctx->stream, err));
    return coll_mark(f, 1, err);
}

/* In place: this rank's bytes sit at recv + rank * bytes. */
static dsv4_status allgather(dsv4_forward_cuda *f, void *recv, size_t bytes, dsv4_err *err) {
    T(coll_mark(f, 0, err));
    T(dsv4_comm_allgather(f->comm, (char *)recv + (size_t)f->sh.rank * bytes, recv, bytes, f->ctx->stream, err));
    return coll_mark(f, 1, err);
}

/* bf16 [n] partial sums -> FP32 all-reduce -> bf16 (round to nearest even), in place: the official
 * RowParallelLinear reduction (y.float(), all_reduce, type_as). */
static dsv4_status allreduce_bf16_via_f32(dsv4_forward_cuda *f, uint16_t *x, long n, dsv4_err *err) {
    T(dsv4_glue_bf16_to_f32(f->ctx, x, n, f->red, err));
    T(allreduce(f, f->red, (size_t)n, DSV4_COMM_F32, err));
    return dsv4_glue_f32_to_bf16(f->ctx, f->red, n, x, err);
}

/* A compressor of one layer over the step's rows: projections, gather of the windows that complete, pool +
 * norm + RoPE + quant (op library), store into the block arena, tail-state update. */
static dsv4_status run_compressor(dsv4_forward_cuda *f, const dsv4_glue_step *gs, const dsv4_glue_kv *kv,
                                  int layer, int is_indexer, const dsv4_rope *rope, dsv4_err *err) {
    const dsv4_config *c = f->c;
    const dcmp *cw = is_indexer ? &f->L[layer].icmp : &f->L[layer].cmp;
    const dsv4_kv_cmp_schema *cs = is_indexer ? &f->schema->layer[layer].icmp : &f->schema->layer[layer].cmp;
    DSV4_ASSERT(cs->present && cs->ratio == cw->ratio && cs->d == cw->d);
    const int rows = gs->rows, width = cw->coff * cw->d;
    T(linbf(f, is_indexer ? "bf16 indexer cmp.wkv" : "bf16 cmp.wkv", f->x, rows, c->dim, cw->wkv, width, f->cproj,
            DSV4_OUT_F32, err));
    T(linbf(f, is_indexer ? "bf16 indexer cmp.wgate" : "bf16 cmp.wgate", f->x, rows, c->dim, cw->wgate, width, f->gproj,
            DSV4_OUT_F32, err));
    dsv4_glue_cmp g = {cw->ratio, cw->d, cw->coff == 2, width, cs->kv_prev_off, cs->sc_prev_off, cs->kv_cur_off,
                       cs->sc_cur_off, f->cproj, f->gproj, cw->ape};
    const int32_t *sn_host = inputs_of(f, f->h_in).sn;
    int n_emit = dsv4_glue_n_emit(sn_host, gs->n_seq, cw->ratio);
    TP("compressor gather",
       dsv4_glue_cmp_gather(f->ctx, gs, kv, &g, n_emit, f->gv, f->gs, f->e_slot, f->e_w, f->e_pos, err));
    dsv4_cuda_compress_params p;
    memset(&p, 0, sizeof p);
    p.n_entries = n_emit;
    p.n_slots = g.overlap ? 2 * cw->ratio : cw->ratio;
    p.d = cw->d;
    p.values = f->gv;
    p.scores = f->gs;
    p.entry_stride = (long)p.n_slots * cw->d;
    p.ld = cw->d;
    p.positions = f->e_pos;
    p.norm_w = cw->norm;
    p.eps = (float)c->norm_eps;
    p.rope = *rope;
    p.is_indexer = is_indexer;
    p.out = f->ent;
    p.ld_out = cw->d;
    TP("compressor pool+norm+rope", dsv4_cuda_compress(f->ctx, &p, err));
    TP("compressor store", dsv4_glue_store_entries(f->ctx, kv, f->ent, n_emit, f->e_slot, f->e_w, is_indexer, err));
    TP("compressor state update", dsv4_glue_cmp_update(f->ctx, gs, kv, &g, err));
    return DSV4_OK;
}

static dsv4_status attention_layer(dsv4_forward_cuda *f, const dsv4_glue_step *gs, const inputs *in, int layer,
                                   dsv4_err *err) {
    const dsv4_config *c = f->c;
    const dlayer *d = &f->L[layer];
    /* H, G, nIh: this rank's heads, groups and index heads (all of them on one GPU); H/G heads per group. */
    const int rows = gs->rows, H = f->sh.nh, hd = c->head_dim, QL = c->q_lora_rank, D = c->dim;
    const int G = f->sh.ng, Rl = c->o_lora_rank, gin = H / G * hd, win = c->window_size;
    const dsv4_rope *rope = dsv4_model_rope(f->m, layer);
    const int rd = rope->rope_dim;
    const float eps = (float)c->norm_eps;
    const dsv4_glue_kv kv = kv_of(f, layer);
    uint16_t *fresh = f->staging; /* rows [0, rows) of the staging buffer */

    /* Query: wq_a -> q_norm -> wq_b -> per-head BF16 RMS + RoPE. */
    TP("act_quant", dsv4_cuda_act_quant_fp8(f->ctx, f->x, rows, D, f->aq1, f->as1, err));
    T(lin8(f, "fp8 wq_a", f->aq1, f->as1, rows, &d->wq_a, f->qa, err));
    TP("rmsnorm", dsv4_cuda_rmsnorm(f->ctx, f->qa, QL, d->q_norm, rows, QL, eps, f->qr, QL, err));
    TP("act_quant", dsv4_cuda_act_quant_fp8(f->ctx, f->qr, rows, QL, f->aq2, f->as2, err));
    T(lin8(f, "fp8 wq_b", f->aq2, f->as2, rows, &d->wq_b, f->q, err));
    TP("q head norm + rope", dsv4_cuda_qnorm_rope(f->ctx, f->q, rows, H, hd, eps, in->pos, rope, err));
    /* KV: wkv -> kv_norm -> RoPE -> FP8 fake-quant of the nope dims. */
    T(lin8(f, "fp8 wkv", f->aq1, f->as1, rows, &d->wkv, fresh, err));
    TP("rmsnorm", dsv4_cuda_rmsnorm(f->ctx, fresh, hd, d->kv_norm, rows, hd, eps, fresh, hd, err));
    TP("rope", dsv4_cuda_rope(f->ctx, fresh, rows, hd, 1, hd, hd - rd, in->pos, rope, 0, err));
    TP("kv fp8 fake-quant", dsv4_cuda_fake_quant_fp8(f->ctx, fresh, rows, hd, hd - rd, 64, err));
    const int is_csa = d->kind == DSV4_LAYER_CSA;
    if (is_csa) {
        const int nIh = f->sh.nih, dIh = c->index_head_dim;
        T(lin8(f, "fp8 indexer wq_b", f->aq2, f->as2, rows, &d->idx_wq_b, f->qI, err));
        TP("rope", dsv4_cuda_rope(f->ctx, f->qI, rows, nIh * dIh, nIh, dIh, dIh - rd, in->pos, rope, 0, err));
        TP("indexer q hadamard", dsv4_cuda_hadamard_fp4(f->ctx, f->qI, rows * nIh, err));
        T(linbf(f, "bf16 indexer wproj", f->x, rows, D, d->idx_wproj, nIh, f->wI, DSV4_OUT_BF16, err));
        const float wscale = (float)(1.0 / sqrt((double)dIh) / sqrt((double)c->index_n_heads)); /* global count */
        TP("indexer weight scale", dsv4_glue_scale_bf16(f->ctx, f->wI, (long)rows * nIh, wscale, err));
    }
    /* Compressors (indexer first, as the CPU), then the entries each query can see. */
    if (is_csa) T(run_compressor(f, gs, &kv, layer, 1, rope, err));
    if (d->ratio) T(run_compressor(f, gs, &kv, layer, 0, rope, err));
    TP("window ring decode", dsv4_glue_ring_decode(f->ctx, gs, &kv, f->staging + (size_t)f->staging_ring * hd, err));
    uint16_t *comp = f->staging + (size_t)f->staging_comp * hd;
    if (is_csa) {
        const int nIh = f->sh.nih, dIh = c->index_head_dim, topk = c->index_topk;
        TP("decode compressed entries", dsv4_glue_decode_entries(f->ctx, gs, &kv, 1, d->max_e, f->ikeys, err));
        TP("csa meta", dsv4_glue_csa_meta(f->ctx, gs, d->ratio, d->max_e, f->nkeys, f->kstart, err));
        dsv4_cuda_indexer_params ip = {rows, nIh, dIh, f->qI, f->wI, f->ikeys, f->kstart, f->nkeys, d->max_e,
                                       f->scores, d->max_e};
        TP("indexer scores", dsv4_cuda_indexer_scores(f->ctx, &ip, err));
        if (f->comm) {
            /* The official model all-reduces the BF16 head sums of every rank before top-k. The scores are
             * bf16 values (−inf past a row's visible keys), so both conversions are exact on one rank. The
             * count is the capacity [rows, max_e], fixed for the graph (docs/MULTI_GPU.md: its cost). */
            const long n = (long)rows * d->max_e;
            TP("convert f32->bf16", dsv4_glue_f32_to_bf16(f->ctx, f->scores, n, f->sc16, err));
            TP("allreduce", allreduce(f, f->sc16, (size_t)n, DSV4_COMM_BF16, err));
            TP("convert bf16->f32", dsv4_glue_bf16_to_f32(f->ctx, f->sc16, n, f->scores, err));
        }
        TP("indexer top-k", dsv4_cuda_topk(f->ctx, f->scores, rows, d->max_e, f->nkeys, 0, topk, f->sel, topk, err));
        TP("decode selected entries", dsv4_glue_decode_selected(f->ctx, gs, &kv, f->sel, topk, comp, err));
    } else if (d->ratio) {
        TP("decode compressed entries", dsv4_glue_decode_entries(f->ctx, gs, &kv, 0, d->max_e, comp, err));
    }
    const int kind = is_csa ? 1 : d->ratio ? 2 : 0;
    const int K = win + d->n_comp;
    TP("attention index lists",
       dsv4_glue_build_idx(f->ctx, gs, win, f->staging_ring, kind, d->ratio ? d->ratio : 1, f->staging_comp, d->n_comp,
                           f->sel, f->idx, f->nlive, f->capacity_lists, err));
    dsv4_cuda_attn_params ap;
    memset(&ap, 0, sizeof ap);
    ap.n_q = rows;
    ap.H = H;
    ap.hd = hd;
    ap.K = K;
    ap.scale = 1.0f / sqrtf((float)hd);
    ap.q = f->q;
    ap.kv = f->staging;
    ap.idx = f->idx;
    ap.sink = d->sink;
    ap.inv_rope_pos = in->pos;
    ap.rope = *rope;
    ap.out = f->o;
    ap.ws = f->attn_ws;
    ap.n_live = f->capacity_lists ? NULL : f->nlive;
    TP("sparse attention", dsv4_cuda_sparse_attn(f->ctx, &ap, err));
    /* The window ring gets the last min(n, window) fresh rows (after this layer's ring was decoded). */
    TP("window ring write", dsv4_glue_ring_write(f->ctx, gs, &kv, fresh, err));
    /* Grouped output projection: u_g = wo_a_g · o_g (BF16), then wo_b (FP8). */
    TP("regroup (wo_a)", dsv4_glue_regroup(f->ctx, f->o, f->og, rows, G, gin, 1, err));
    for (int g = 0; g < G; g++)
        T(linbf(f, "bf16 wo_a (per group)", f->og + (size_t)g * rows * gin, rows, gin, d->wo_a + (size_t)g * Rl * gin,
                Rl, f->ug + (size_t)g * rows * Rl, DSV4_OUT_BF16, err));
    TP("regroup (wo_a)", dsv4_glue_regroup(f->ctx, f->ug, f->u, rows, G, Rl, 0, err));
    TP("act_quant", dsv4_cuda_act_quant_fp8(f->ctx, f->u, rows, G * Rl, f->aq2, f->as2, err));
    T(lin8(f, "fp8 wo_b", f->aq2, f->as2, rows, &d->wo_b, f->a, err));
    /* Row-parallel wo_b: the BF16 partial of this rank's input columns, summed over ranks in FP32. */
    if (f->comm) TP("allreduce (wo_b, f32)", allreduce_bf16_via_f32(f, f->a, (long)rows * D, err));
    return DSV4_OK;
}

static dsv4_status moe_layer(dsv4_forward_cuda *f, const inputs *in, int rows, int layer, dsv4_err *err) {
    const dsv4_config *c = f->c;
    const dlayer *d = &f->L[layer];
    const int D = c->dim, E = c->n_routed_experts, k = c->n_activated_experts, I = c->moe_inter_dim;
    const float lim = (float)c->swiglu_limit;
    T(linbf(f, "bf16 router gate", f->x, rows, D, d->gate_w, E, f->logits_e, DSV4_OUT_F32, err));
    TP("route (top-k)",
       dsv4_cuda_route(f->ctx, f->logits_e, rows, E, d->gate_bias, d->tid2eid, d->tid2eid ? in->tok : NULL, k,
                       (float)c->route_scale, f->experts, f->eweights, err));
    TP("act_quant", dsv4_cuda_act_quant_fp8(f->ctx, f->x, rows, D, f->aq1, f->as1, err));
    const int pairs = rows * k;
    const int e0 = f->sh.e0, ne = f->sh.ne;   /* this rank's experts (the router is replicated) */
    if (f->moe_grouped) {
        /* Pairs sorted by expert on the device, each expert read once per tile of its rows (cuda_moe.h): h in
         * eg (sorted order), act_quant(h) in aq2/as2, y[pair] in ey. Without a communicator the combine reads
         * every slot, so the rows of pairs with an invalid expert id are zeroed as the scalar path does. */
        dsv4_cuda_moe_layout lay;
        dsv4_cuda_moe_layout_init(f->moe_ws, pairs, ne, 0, &lay);
        TP("moe sort (grouped)", dsv4_cuda_moe_sort(f->ctx, f->experts, e0, &lay, f->comm ? NULL : f->ey, D, err));
        dsv4_cuda_moe_params mp;
        memset(&mp, 0, sizeof mp);
        mp.k = k;
        mp.D = D;
        mp.I = I;
        mp.swiglu_limit = lim;
        mp.xq = f->aq1;
        mp.xs = f->as1;
        mp.route_w = f->eweights;
        mp.w1 = (dsv4_cuda_moe_weights){d->e1.w, d->e1.s, d->e1.w_stride, d->e1.s_stride, d->e1.fp4};
        mp.w3 = (dsv4_cuda_moe_weights){d->e3.w, d->e3.s, d->e3.w_stride, d->e3.s_stride, d->e3.fp4};
        mp.w2 = (dsv4_cuda_moe_weights){d->e2.w, d->e2.s, d->e2.w_stride, d->e2.s_stride, d->e2.fp4};
        mp.h = f->eg;
        mp.hq = f->aq2;
        mp.hs = f->as2;
        mp.y = f->ey;
        TP("moe experts (grouped)", dsv4_cuda_moe_experts(f->ctx, &lay, &mp, err));
    } else {
        /* Routed experts over (row, slot) pairs: the scalar path. */
        TP("moe expert gemv (scalar)",
           dsv4_glue_moe_expert(f->ctx, f->aq1, f->as1, D, k, f->experts, e0, ne, pairs, d->e1.w, d->e1.s,
                                d->e1.w_stride, d->e1.s_stride, d->e1.fp4, I, f->eg, err));
        TP("moe expert gemv (scalar)",
           dsv4_glue_moe_expert(f->ctx, f->aq1, f->as1, D, k, f->experts, e0, ne, pairs, d->e3.w, d->e3.s,
                                d->e3.w_stride, d->e3.s_stride, d->e3.fp4, I, f->eu, err));
        TP("swiglu", dsv4_cuda_swiglu(f->ctx, f->eg, f->eu, I, pairs, I, lim, f->eweights, f->eg, I, err));
        TP("act_quant", dsv4_cuda_act_quant_fp8(f->ctx, f->eg, pairs, I, f->aq2, f->as2, err));
        TP("moe expert gemv (scalar)",
           dsv4_glue_moe_expert(f->ctx, f->aq2, f->as2, I, 1, f->experts, e0, ne, pairs, d->e2.w, d->e2.s,
                                d->e2.w_stride, d->e2.s_stride, d->e2.fp4, D, f->ey, err));
    }
    /* Shared expert (FP8, weight 1). */
    T(lin8(f, "fp8 shared w1", f->aq1, f->as1, rows, &d->sh1, f->sg, err));
    T(lin8(f, "fp8 shared w3", f->aq1, f->as1, rows, &d->sh3, f->su, err));
    TP("swiglu", dsv4_cuda_swiglu(f->ctx, f->sg, f->su, I, rows, I, lim, NULL, f->sg, I, err));
    TP("act_quant", dsv4_cuda_act_quant_fp8(f->ctx, f->sg, rows, I, f->aq2, f->as2, err));
    T(lin8(f, "fp8 shared w2", f->aq2, f->as2, rows, &d->sh2, f->sy, err));
    if (!f->comm) {
        TP("moe combine", dsv4_glue_moe_combine(f->ctx, f->ey, f->experts, rows, k, D, f->sy, f->a, err));
        return DSV4_OK;
    }
    /* Each rank sums its own experts (ascending id) in FP32, the partials are all-reduced in FP32, then the
     * shared expert is added and the sum rounded to BF16 (MoE.forward of the official model). */
    TP("moe partial (tp)", dsv4_glue_moe_partial(f->ctx, f->ey, f->experts, rows, k, D, e0, ne, f->red, err));
    TP("allreduce", allreduce(f, f->red, (size_t)rows * D, DSV4_COMM_F32, err));
    TP("moe finish (tp)", dsv4_glue_moe_finish(f->ctx, f->red, f->sy, (long)rows * D, f->a, err));
    return DSV4_OK;
}

/* The layer hook after layer l (eager passes only): X of the real rows down as FP32, the hook, and back up
 * (the hook may have overwritten it: teacher forcing). Waits for the device twice. */
static dsv4_status call_hook(dsv4_forward_cuda *f, int l, dsv4_err *err) {
    const int hc = f->c->hc_mult, D = f->c->dim;
    const size_t n = (size_t)f->hook_rows * hc * D;
    if (!n) return DSV4_OK;
    T(dsv4_cuda_download(f->ctx, f->hook_b, f->X, sizeof(uint16_t) * n, err));
    for (size_t i = 0; i < n; i++) f->hook_f[i] = dsv4_bf16_to_f32(f->hook_b[i]);
    f->hook(f->hook_user, l, f->hook_f, f->hook_rows, hc, D);
    for (size_t i = 0; i < n; i++) f->hook_b[i] = dsv4_f32_to_bf16(f->hook_f[i]);
    return dsv4_cuda_upload(f->ctx, f->X, f->hook_b, sizeof(uint16_t) * n, err);
}

/* One block over f->X (forward_cuda_internal.h); the main layers and the MTP block (layer n_layers). */
dsv4_status dsv4_fcuda_block(dsv4_forward_cuda *f, const dsv4_glue_step *gs, const inputs *in, int rows, int l,
                             dsv4_err *err) {
    const dsv4_config *c = f->c;
    const int D = c->dim, hc = c->hc_mult;
    const float eps = (float)c->norm_eps, hc_eps = (float)c->hc_eps;
    DSV4_ASSERT(l >= 0 && l < f->n_blocks);
    const dlayer *d = &f->L[l];
    dsv4_cuda_hc_params hp = {rows, hc, D, c->hc_sinkhorn_iters, hc_eps, eps, d->hc_attn.fn, d->hc_attn.base,
                              d->hc_attn.scale};
    TP("hc_pre", dsv4_cuda_hc_pre(f->ctx, &hp, f->X, f->x, f->post, f->comb, err));
    TP("rmsnorm", dsv4_cuda_rmsnorm(f->ctx, f->x, D, d->attn_norm, rows, D, eps, f->x, D, err));
    T(attention_layer(f, gs, in, l, err));
    TP("hc_post", dsv4_cuda_hc_post(f->ctx, &hp, f->a, f->X, f->post, f->comb, f->X2, err));
    dsv4_cuda_hc_params hf = {rows, hc, D, c->hc_sinkhorn_iters, hc_eps, eps, d->hc_ffn.fn, d->hc_ffn.base,
                              d->hc_ffn.scale};
    TP("hc_pre", dsv4_cuda_hc_pre(f->ctx, &hf, f->X2, f->x, f->post, f->comb, err));
    TP("rmsnorm", dsv4_cuda_rmsnorm(f->ctx, f->x, D, d->ffn_norm, rows, D, eps, f->x, D, err));
    T(moe_layer(f, in, rows, l, err));
    TP("hc_post", dsv4_cuda_hc_post(f->ctx, &hf, f->a, f->X2, f->post, f->comb, f->X, err));
    return DSV4_OK;
}

/* Enqueues a whole pass for the shape in f->h_in (rows, n_seq, per-sequence row counts): embedding, every
 * layer, the head on n_out rows (f->in head list) and, for a decode pass (decode_tail), argmax + advance. */
static dsv4_status enqueue_pass(dsv4_forward_cuda *f, int rows, int n_seq, int n_out, int decode_tail,
                                dsv4_err *err) {
    const dsv4_config *c = f->c;
    const int D = c->dim, hc = c->hc_mult;
    const float eps = (float)c->norm_eps, hc_eps = (float)c->hc_eps;
    inputs in = inputs_of(f, f->in);
    dsv4_glue_step gs = {in.pos, in.rseq, in.sslot, in.spos0, in.srow0, in.sn, rows, n_seq};
    f->n_coll = 0;
    if (f->prof) T(dsv4_prof_pass_begin(f->prof, f->ctx, err));
    if (!f->comm) {
        TP("embed", dsv4_cuda_embed(f->ctx, f->embed, c->vocab_size, D, in.tok, rows, f->x, err));
    } else {
        /* Vocab-split table: the owner writes the row, the others -0.0; the FP32 all-reduce is the row. */
        TP("embed (vocab part)",
           dsv4_glue_embed_part(f->ctx, f->embed, f->sh.v0, f->sh.nv, D, in.tok, rows, f->red, err));
        TP("allreduce", allreduce(f, f->red, (size_t)rows * D, DSV4_COMM_F32, err));
        TP("convert f32->bf16", dsv4_glue_f32_to_bf16(f->ctx, f->red, (long)rows * D, f->x, err));
    }
    TP("hc broadcast", dsv4_glue_broadcast_hc(f->ctx, f->x, rows, hc, D, f->X, err));
    for (int l = 0; l < c->n_layers; l++) {
        T(dsv4_fcuda_block(f, &gs, &in, rows, l, err));
        if (f->hook) T(call_hook(f, l, err));
    }
    if (n_out > 0) {
        dsv4_cuda_hc_params hh = {n_out, hc, D, 0, hc_eps, eps, f->hc_head.fn, f->hc_head.base, f->hc_head.scale};
        TP("head gather rows", dsv4_glue_gather_rows(f->ctx, f->X, hc * D, in.head, n_out, f->Xh, err));
        TP("hc_head", dsv4_cuda_hc_head(f->ctx, &hh, f->Xh, f->hin, err));
        TP("rmsnorm", dsv4_cuda_rmsnorm(f->ctx, f->hin, D, f->norm, n_out, D, eps, f->hin, D, err));
        if (!f->comm) {
            T(linbf(f, "bf16 head", f->hin, n_out, D, f->head, c->vocab_size, f->logits, DSV4_OUT_F32, err));
        } else {
            /* Vocab-split head: this rank's slice into its place of [world][n_out][nv], all-gather, vocab order. */
            const int nv = f->sh.nv;
            const size_t part = (size_t)n_out * nv;
            T(linbf(f, "bf16 head", f->hin, n_out, D, f->head, nv, f->lgath + (size_t)f->sh.rank * part,
                                    DSV4_OUT_F32, err));
            TP("allgather", allgather(f, f->lgath, sizeof(float) * part, err));
            TP("head vocab interleave",
               dsv4_glue_vocab_interleave(f->ctx, f->lgath, f->sh.world, n_out, nv, f->logits, err));
        }
    }
    if (decode_tail) {
        TP("argmax", dsv4_cuda_argmax(f->ctx, f->logits, n_out, c->vocab_size, c->vocab_size, f->amax, err));
        TP("advance (greedy)",
           dsv4_glue_advance(f->ctx, f->amax, n_out, in.tok, in.pos, in.spos0, f->hist, f->ctr, HIST_CAP, err));
    }
    if (f->prof) T(dsv4_prof_pass_end(f->prof, err)); /* waits for the pass: its events are reused next */
    return DSV4_OK;
}

/* The head on chosen rows of f->X, S rows at a time (forward_cuda_internal.h): the MTP's and the verification
 * rows' (every row of a step). The head list goes up on its own (the pass's inputs were consumed). */
dsv4_status dsv4_fcuda_head_rows(dsv4_forward_cuda *f, const dhc *hch, const uint16_t *norm, const int32_t *hrow,
                                 float *const *dst, int n, dsv4_err *err) {
    const dsv4_config *c = f->c;
    const int D = c->dim, hc = c->hc_mult, V = c->vocab_size;
    const float eps = (float)c->norm_eps, hc_eps = (float)c->hc_eps;
    inputs h = inputs_of(f, f->h_in), d = inputs_of(f, f->in);
    for (int o = 0; o < n; o += f->S) {
        const int m = n - o < f->S ? n - o : f->S;
        /* The previous chunk's downloads waited for the device, so its head list was consumed. */
        memcpy(h.head, hrow + o, sizeof(int32_t) * (size_t)m);
        T(dsv4_glue_upload_async(f->ctx, d.head, h.head, sizeof(int32_t) * (size_t)m, err));
        dsv4_cuda_hc_params hh = {m, hc, D, 0, hc_eps, eps, hch->fn, hch->base, hch->scale};
        T(dsv4_glue_gather_rows(f->ctx, f->X, hc * D, d.head, m, f->Xh, err));
        T(dsv4_cuda_hc_head(f->ctx, &hh, f->Xh, f->hin, err));
        T(dsv4_cuda_rmsnorm(f->ctx, f->hin, D, norm, m, D, eps, f->hin, D, err));
        T(dsv4_cuda_linear_bf16(f->ctx, f->hin, m, D, f->head, V, f->logits, DSV4_OUT_F32, err));
        for (int i = 0; i < m; i++)
            T(dsv4_cuda_download(f->ctx, dst[o + i], f->logits + (size_t)i * V, sizeof(float) * (size_t)V, err));
    }
    return DSV4_OK;
}

/* ==== host side of a step =============================================================================== */

/* Copies the block-table rows of the given slots that changed since the device last saw them. */
static dsv4_status sync_block_tables(dsv4_forward_cuda *f, const int *slots, int n, dsv4_err *err) {
    if (f->bt_ld <= 0) return DSV4_OK;
    int64_t ld;
    const int32_t *tab = dsv4_kv_manager_block_tables(f->kv, &ld);
    for (int i = 0; i < n; i++) {
        const int32_t *row = tab + (size_t)slots[i] * ld;
        int32_t *shadow = f->bt_shadow + (size_t)slots[i] * ld;
        if (!memcmp(row, shadow, sizeof(int32_t) * (size_t)ld)) continue;
        int32_t *stage = f->h_bt + (size_t)i * ld;
        memcpy(stage, row, sizeof(int32_t) * (size_t)ld);
        memcpy(shadow, row, sizeof(int32_t) * (size_t)ld);
        T(dsv4_glue_upload_async(f->ctx, f->d_bt + (size_t)slots[i] * ld, stage, sizeof(int32_t) * (size_t)ld, err));
    }
    return DSV4_OK;
}

static int bucket_of(int n) {
    int b = 1;
    while (b < n) b <<= 1;
    return b;
}

/* The graph of decode bucket B (captured on first use: capture enqueues nothing that runs). With a
 * communicator the first use only registers the bucket and gives *exec = NULL — the caller runs that pass
 * eagerly, so NCCL's lazy connection setup for these message sizes happens outside a capture — and the
 * second use captures. Every rank sees the same buckets in the same order (replicated steps), so the ranks'
 * graphs hold the same collectives in the same order. */
static dsv4_status graph_for(dsv4_forward_cuda *f, int B, void **exec, dsv4_err *err) {
    *exec = NULL;
    bucket *b = NULL;
    for (int i = 0; i < f->n_buckets && !b; i++)
        if (f->buckets[i].n == B) b = &f->buckets[i];
    if (b && b->exec) { *exec = b->exec; return DSV4_OK; }
    if (!b) {
        if (f->n_buckets == MAX_BUCKETS) return dsv4_err_set(err, DSV4_ERR_INTERNAL, "cuda: too many graph buckets");
        if (f->comm) { f->buckets[f->n_buckets++] = (bucket){B, NULL}; return DSV4_OK; }
    }
    T(dsv4_glue_capture_begin(f->ctx, err));
    dsv4_status st = enqueue_pass(f, B, B, B, 1, err);
    void *x = NULL;
    dsv4_status st2 = dsv4_glue_capture_end(f->ctx, st == DSV4_OK, &x, st == DSV4_OK ? err : NULL);
    if (st != DSV4_OK) return st;
    if (st2 != DSV4_OK) return st2;
    if (b) b->exec = x;
    else f->buckets[f->n_buckets++] = (bucket){B, x};
    *exec = x;
    return DSV4_OK;
}

/* Adds the device time between the event pairs the last pass recorded (its stream has passed them). */
static dsv4_status collect_coll_time(dsv4_forward_cuda *f, dsv4_err *err) {
    if (!f->time_coll) return DSV4_OK;
    for (int i = 0; i < f->n_coll; i++) {
        float ms = 0.0f;
        T(dsv4_cuda_event_elapsed_ms(f->coll_ev[2 * i], f->coll_ev[2 * i + 1], &ms, err));
        f->coll_ms += ms;
    }
    f->coll_calls += f->n_coll;
    f->n_coll = 0;
    return DSV4_OK;
}

/* Fills the host inputs for a decode pass of bucket B from n real one-token sequences (padding: slot -1). */
static void fill_decode_inputs(dsv4_forward_cuda *f, int B, const int *slots, const long *pos,
                               const int32_t *tokens, int n) {
    inputs h = inputs_of(f, f->h_in);
    for (int i = 0; i < B; i++) {
        int real = i < n;
        h.tok[i] = real ? tokens[i] : 0;
        h.pos[i] = real ? (int32_t)pos[i] : 0;
        h.rseq[i] = i;
        h.sslot[i] = real ? slots[i] : -1;
        h.spos0[i] = h.pos[i];
        h.srow0[i] = i;
        h.sn[i] = 1;
        h.head[i] = i;
    }
}

static dsv4_status upload_inputs(dsv4_forward_cuda *f, dsv4_err *err) {
    return dsv4_glue_upload_async(f->ctx, f->in, f->h_in, sizeof(int32_t) * (3 * (size_t)f->R + 5 * (size_t)f->S), err);
}

/* Runs one device pass over the pieces (each a run of one sequence's tokens) and commits them. */
static dsv4_status run_pass(dsv4_forward_cuda *f, const piece *pc, int np, dsv4_err *err) {
    const int V = f->c->vocab_size;
    int slots[np];
    for (int i = 0; i < np; i++) slots[i] = pc[i].slot;
    T(sync_block_tables(f, slots, np, err));
    int all_one = 1, rows = 0;
    for (int i = 0; i < np; i++) { all_one &= pc[i].n == 1; rows += pc[i].n; }
    int n_out = 0, downloaded = 0;
    if (all_one) {
        int B = bucket_of(np);
        if (B > f->S) B = np;
        long pos[np];
        int32_t tok[np];
        for (int i = 0; i < np; i++) { pos[i] = pc[i].pos0; tok[i] = pc[i].tokens[0]; }
        fill_decode_inputs(f, B, slots, pos, tok, np);
        T(upload_inputs(f, err));
        f->hook_rows = np;
        void *exec = NULL;
        if (f->use_graphs && !f->hook && !f->time_coll && !f->prof) T(graph_for(f, B, &exec, err));
        if (exec) T(dsv4_glue_graph_launch(f->ctx, exec, err));
        else T(enqueue_pass(f, B, B, B, 1, err));
        for (int i = 0; i < np; i++)
            if (pc[i].logits) {
                T(dsv4_cuda_download(f->ctx, pc[i].logits, f->logits + (size_t)i * V, sizeof(float) * V, err));
                downloaded = 1;
            }
    } else {
        inputs h = inputs_of(f, f->h_in);
        int r = 0, any_all = 0;
        for (int i = 0; i < np; i++) any_all |= pc[i].all && pc[i].logits;
        for (int i = 0; i < np; i++) {
            h.sslot[i] = pc[i].slot;
            h.spos0[i] = (int32_t)pc[i].pos0;
            h.srow0[i] = r;
            h.sn[i] = pc[i].n;
            for (int j = 0; j < pc[i].n; j++, r++) {
                h.tok[r] = pc[i].tokens[j];
                h.pos[r] = (int32_t)(pc[i].pos0 + j);
                h.rseq[r] = i;
            }
            if (pc[i].logits && !any_all) h.head[n_out++] = r - 1;
        }
        T(upload_inputs(f, err));
        f->hook_rows = rows;
        T(enqueue_pass(f, rows, np, n_out, 0, err));
        for (int i = 0, o = 0; i < np; i++)
            if (pc[i].logits && !any_all) {
                T(dsv4_cuda_download(f->ctx, pc[i].logits, f->logits + (size_t)o++ * V, sizeof(float) * V, err));
                downloaded = 1;
            }
        if (any_all) {
            /* Every row's logits (speculative verification): more rows than the in-pass head holds, so the
             * head runs after the pass over the wanted rows, S at a time. */
            int32_t hrow[rows];
            float *dst[rows];
            int n = 0;
            for (int i = 0, r0 = 0; i < np; r0 += pc[i].n, i++) {
                if (!pc[i].logits) continue;
                for (int j = pc[i].all ? 0 : pc[i].n - 1; j < pc[i].n; j++) {
                    hrow[n] = r0 + j;
                    dst[n++] = pc[i].logits + (size_t)(pc[i].all ? j : 0) * V;
                }
            }
            T(dsv4_fcuda_head_rows(f, &f->hc_head, f->norm, hrow, dst, n, err));
            downloaded = 1;
        }
    }
    /* The final states of the rows (dsv4_forward_cuda_step_hidden), BF16 on the device, FP32 on the host. */
    for (int i = 0, r0 = 0; i < np; r0 += pc[i].n, i++) {
        if (!pc[i].hidden) continue;
        const size_t HD = (size_t)f->c->hc_mult * f->c->dim;
        T(dsv4_cuda_download(f->ctx, f->h_hbf, f->X + HD * (size_t)r0, sizeof(uint16_t) * HD * (size_t)pc[i].n, err));
        for (size_t k = 0; k < HD * (size_t)pc[i].n; k++) pc[i].hidden[k] = dsv4_bf16_to_f32(f->h_hbf[k]);
        downloaded = 1;
    }
    /* The pinned inputs are rewritten by the next pass: make sure this one consumed them. */
    if (!downloaded) T(dsv4_cuda_sync(f->ctx, err));
    T(collect_coll_time(f, err));
    for (int i = 0; i < np; i++) dsv4_kv_access_commit(f->kv, &pc[i].slot, &pc[i].n, 1);
    if (f->mtp_in_step) T(dsv4_fcuda_mtp_after_pass(f, pc, np, err));   /* forward_cuda_mtp.c */
    return DSV4_OK;
}

dsv4_status dsv4_forward_cuda_step(dsv4_forward_cuda *f, const dsv4_seq_step *steps, int n_steps, float *logits,
                                   dsv4_err *err) {
    const dsv4_config *c = f->c;
    if (n_steps <= 0) return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "forward: empty batch");
    T(dsv4_glue_set_device(f->ctx, err));   /* a host thread per GPU: make this forward's device current */
    f->coll_ms = 0.0;
    f->coll_calls = 0;
    for (int i = 0; i < n_steps; i++) {
        const dsv4_seq_step *s = &steps[i];
        if (s->n_tokens <= 0 || !s->tokens)
            return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "forward: sequence %d has no tokens", i);
        for (int j = 0; j < s->n_tokens; j++)
            if (s->tokens[j] < 0 || s->tokens[j] >= c->vocab_size)
                return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "forward: token id %d out of range [0, %d)",
                                    s->tokens[j], c->vocab_size);
        for (int j = 0; j < i; j++)
            if (steps[j].slot == s->slot)
                return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "forward: slot %d appears twice in one step", s->slot);
        if (s->want_logits == DSV4_LOGITS_ALL && f->comm && f->sh.world > 1)
            return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "forward: logits of every position need one rank");
    }
    {
        int slots[n_steps], counts[n_steps];
        for (int i = 0; i < n_steps; i++) { slots[i] = steps[i].slot; counts[i] = steps[i].n_tokens; }
        T(dsv4_kv_access_prepare(f->kv, slots, counts, n_steps, err));
    }
    /* Split into passes of at most R rows and S sequences; a piece's logits are wanted only where it ends
     * its sequence's chunk (DSV4_LOGITS_ALL: every row). */
    int done[n_steps];
    float *dst[n_steps];
    long hrow0[n_steps];
    const size_t HD = (size_t)c->hc_mult * c->dim;
    for (int i = 0, o = 0, r = 0; i < n_steps; i++) {
        done[i] = 0;
        dst[i] = steps[i].want_logits ? logits + (size_t)o * c->vocab_size : NULL;
        o += steps[i].want_logits == DSV4_LOGITS_ALL ? steps[i].n_tokens : steps[i].want_logits ? 1 : 0;
        hrow0[i] = r;
        r += steps[i].n_tokens;
    }
    piece pc[f->S];
    for (;;) {
        int np = 0, rows = 0;
        for (int i = 0; i < n_steps && np < f->S && rows < f->R; i++) {
            int left = steps[i].n_tokens - done[i];
            if (!left) continue;
            int n = left < f->R - rows ? left : f->R - rows;
            long pos0 = dsv4_kv_access_seq_len(f->kv, steps[i].slot);
            const int all = steps[i].want_logits == DSV4_LOGITS_ALL;
            float *lg = !dst[i] ? NULL : all ? dst[i] + (size_t)done[i] * c->vocab_size : n == left ? dst[i] : NULL;
            float *hid = f->hid_dst ? f->hid_dst + HD * (size_t)(hrow0[i] + done[i]) : NULL;
            pc[np++] = (piece){steps[i].slot, n, pos0, steps[i].tokens + done[i], lg, all, hid};
            done[i] += n;
            rows += n;
        }
        if (!np) break;
        dsv4_status st = run_pass(f, pc, np, err);
        if (st != DSV4_OK) {
            /* Past the replicated checks a failure is this rank's alone: peers may be (or will be) inside
             * a collective of this pass, so the group is aborted (docs/MULTI_GPU.md). */
            if (f->comm && f->sh.world > 1) dsv4_comm_abort(f->comm);
            return st;
        }
    }
    return DSV4_OK;
}

dsv4_status dsv4_forward_cuda_decode_greedy(dsv4_forward_cuda *f, const int *slots, int n_slots,
                                            const int32_t *first, int n_steps, int32_t *out, double *ms,
                                            dsv4_err *err) {
    if (n_slots <= 0 || n_slots > f->S || n_steps <= 0 || n_steps > HIST_CAP)
        return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "decode_greedy: %d sequences (1..%d), %d steps (1..%d)",
                            n_slots, f->S, n_steps, HIST_CAP);
    T(dsv4_glue_set_device(f->ctx, err));
    for (int i = 0; i < n_slots; i++) {
        if (!dsv4_kv_access_slot_valid(f->kv, slots[i]))
            return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "decode_greedy: slot %d is not open", slots[i]);
        if (first[i] < 0 || first[i] >= f->c->vocab_size)
            return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "decode_greedy: token id %d out of range", first[i]);
    }
    int counts[n_slots];
    for (int i = 0; i < n_slots; i++) counts[i] = n_steps;
    T(dsv4_kv_access_prepare(f->kv, slots, counts, n_slots, err));
    T(sync_block_tables(f, slots, n_slots, err));
    int B = bucket_of(n_slots);
    if (B > f->S) B = n_slots;
    long pos[n_slots];
    for (int i = 0; i < n_slots; i++) pos[i] = dsv4_kv_access_seq_len(f->kv, slots[i]);
    fill_decode_inputs(f, B, slots, pos, first, n_slots);
    T(upload_inputs(f, err));
    T(dsv4_cuda_memset(f->ctx, f->ctr, 0, sizeof(int32_t), err));
    void *exec = NULL;
    f->hook_rows = n_slots;
    const int graphs = f->use_graphs && !f->hook && !f->time_coll && !f->prof;
    if (graphs) T(graph_for(f, B, &exec, err));
    void *ev0 = NULL, *ev1 = NULL;
    T(dsv4_cuda_event_create(&ev0, err));
    dsv4_status st = dsv4_cuda_event_create(&ev1, err);
    if (st == DSV4_OK) st = dsv4_cuda_event_record(f->ctx, ev0, err);
    for (int k = 0; k < n_steps && st == DSV4_OK; k++) {
        st = exec ? dsv4_glue_graph_launch(f->ctx, exec, err) : enqueue_pass(f, B, B, B, 1, err);
        /* With a communicator a bucket's first pass ran eagerly (graph_for); capture it for the rest. The
         * wait keeps the capture off a stream with work in flight (first use of a bucket only). */
        if (st == DSV4_OK && graphs && !exec && k + 1 < n_steps && (st = dsv4_cuda_sync(f->ctx, err)) == DSV4_OK)
            st = graph_for(f, B, &exec, err);
    }
    if (st != DSV4_OK && f->comm && f->sh.world > 1) dsv4_comm_abort(f->comm);
    if (st == DSV4_OK) st = dsv4_cuda_event_record(f->ctx, ev1, err);
    int32_t *hist = malloc(sizeof(int32_t) * (size_t)n_steps * B);
    if (!hist && st == DSV4_OK) st = dsv4_err_set(err, DSV4_ERR_NOMEM, "decode_greedy: out of memory");
    if (st == DSV4_OK) st = dsv4_cuda_download(f->ctx, hist, f->hist, sizeof(int32_t) * (size_t)n_steps * B, err);
    if (st == DSV4_OK && ms) {
        float t = 0.0f;
        st = dsv4_cuda_event_elapsed_ms(ev0, ev1, &t, err);
        *ms = t;
    }
    if (st == DSV4_OK) {
        for (int k = 0; k < n_steps; k++)
            for (int i = 0; i < n_slots; i++) out[(size_t)k * n_slots + i] = hist[(size_t)k * B + i];
        for (int i = 0; i < n_slots; i++) dsv4_kv_access_commit(f->kv, &slots[i], &n_steps, 1);
    }
    free(hist);
    dsv4_cuda_event_destroy(ev0);
    dsv4_cuda_event_destroy(ev1);
    return st;
}

/* ==== pieces shared with forward_cuda_mtp.c (forward_cuda_internal.h) ==================================== */

inputs dsv4_fcuda_inputs(const dsv4_forward_cuda *f, int32_t *base) { return inputs_of(f, base); }
dsv4_status dsv4_fcuda_lin8(dsv4_forward_cuda *f, const uint8_t *xq, const uint8_t *xs, int M, const dlin *l,
                            uint16_t *y, dsv4_err *err) {
    return lin8(f, "fp8 mtp proj", xq, xs, M, l, y, err);
}
dsv4_status dsv4_fcuda_sync_block_tables(dsv4_forward_cuda *f, const int *slots, int n, dsv4_err *err) {
    return sync_block_tables(f, slots, n, err);
}
dsv4_status dsv4_fcuda_upload_inputs(dsv4_forward_cuda *f, dsv4_err *err) { return upload_inputs(f, err); }

#endif /* DSV4_HAVE_CUDA */
