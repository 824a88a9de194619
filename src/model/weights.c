/* weights.c — binds the typed views of dsv4_model_weights (weights.h) to the tensors of an open, validated
 * dsv4_checkpoint. Owns: the name -> field mapping and the aligned copies of misaligned tensors. Must not:
 * re-validate shapes (dsv4_checkpoint_validate did) or copy anything that is already aligned. */
#include "model/weights.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/status.h"
#include "model/checkpoint.h"

typedef struct {
    const dsv4_checkpoint *ck;
    dsv4_model_weights *w;
    int copies_cap;
    dsv4_err *err;
    dsv4_status st;   /* first failure; later lookups are skipped */
} binder;

/* Data of tensor "<p><s>", copied to aligned memory when its address is not a multiple of align. */
static const void *view(binder *b, const char *p, const char *s, size_t align) {
    if (b->st != DSV4_OK) return NULL;
    char name[320];
    snprintf(name, sizeof name, "%s%s", p, s);
    const dsv4_st_tensor *t = dsv4_checkpoint_tensor_find(b->ck, name);
    if (!t) {
        b->st = dsv4_err_set(b->err, DSV4_ERR_INTERNAL, "%s: tensor %s: missing at bind time (not validated?)",
                             b->ck->dir, name);
        return NULL;
    }
    if ((uintptr_t)t->data % align == 0) return t->data;
    if (b->w->n_owned_copies == b->copies_cap) {
        int cap = b->copies_cap ? 2 * b->copies_cap : 16;
        void **nc = realloc(b->w->owned_copies, (size_t)cap * sizeof *nc);
        if (!nc) {
            b->st = dsv4_err_set(b->err, DSV4_ERR_NOMEM, "%s: out of memory", name);
            return NULL;
        }
        b->w->owned_copies = nc;
        b->copies_cap = cap;
    }
    void *copy = aligned_alloc(64, (t->nbytes + 63) / 64 * 64 + 64);
    if (!copy) {
        b->st = dsv4_err_set(b->err, DSV4_ERR_NOMEM, "%s: out of memory copying %llu bytes", name,
                             (unsigned long long)t->nbytes);
        return NULL;
    }
    memcpy(copy, t->data, t->nbytes);
    b->w->owned_copies[b->w->n_owned_copies++] = copy;
    return copy;
}

static const uint16_t *bf16(binder *b, const char *p, const char *s) { return view(b, p, s, 2); }
static const float *f32(binder *b, const char *p, const char *s) { return view(b, p, s, 4); }

static dsv4_fp8_linear fp8(binder *b, const char *p, const char *m, int out, int in) {
    char pre[256];
    snprintf(pre, sizeof pre, "%s%s", p, m);
    return (dsv4_fp8_linear){view(b, pre, ".weight", 1), view(b, pre, ".scale", 1), out, in};
}

static dsv4_expert_linear expert(binder *b, const char *p, const char *m, int out, int in) {
    char pre[256];
    snprintf(pre, sizeof pre, "%s%s", p, m);
    return (dsv4_expert_linear){view(b, pre, ".weight", 1), view(b, pre, ".scale", 1), out, in,
                                b->ck->cfg.expert_fp4};
}

static dsv4_hc_weights hc(binder *b, const char *p, const char *which) {
    char pre[256];
    snprintf(pre, sizeof pre, "%s%s", p, which);
    return (dsv4_hc_weights){f32(b, pre, "_fn"), f32(b, pre, "_base"), f32(b, pre, "_scale")};
}

static dsv4_compressor_weights compressor(binder *b, const char *p, int ratio, int d) {
    return (dsv4_compressor_weights){bf16(b, p, "wkv.weight"), bf16(b, p, "wgate.weight"), f32(b, p, "ape"),
                                     bf16(b, p, "norm.weight"), ratio, d, ratio == 4 ? 2 : 1};
}

static void bind_block(binder *b, const char *p, int layer, int hash, dsv4_layer_weights *lw,
                       dsv4_expert_linear *experts) {
    const dsv4_config *c = &b->ck->cfg;
    int D = c->dim, H = c->n_heads, hd = c->head_dim, QL = c->q_lora_rank, G = c->o_groups, R = c->o_lora_rank;
    int E = c->n_routed_experts, I = c->moe_inter_dim, Is = c->n_shared_experts * c->moe_inter_dim;
    char q[192];
    memset(lw, 0, sizeof *lw);
    lw->kind = dsv4_config_layer_kind(c, layer);
    lw->ratio = c->compress_ratios[layer];
    lw->attn_norm = bf16(b, p, "attn_norm.weight");
    lw->ffn_norm = bf16(b, p, "ffn_norm.weight");
    lw->hc_attn = hc(b, p, "hc_attn");
    lw->hc_ffn = hc(b, p, "hc_ffn");
    lw->wq_a = fp8(b, p, "attn.wq_a", QL, D);
    lw->q_norm = bf16(b, p, "attn.q_norm.weight");
    lw->wq_b = fp8(b, p, "attn.wq_b", H * hd, QL);
    lw->wkv = fp8(b, p, "attn.wkv", hd, D);
    lw->kv_norm = bf16(b, p, "attn.kv_norm.weight");
    lw->wo_a = fp8(b, p, "attn.wo_a", G * R, (H / G) * hd);
    lw->wo_b = fp8(b, p, "attn.wo_b", D, G * R);
    lw->attn_sink = f32(b, p, "attn.attn_sink");
    if (lw->ratio != 0) {
        snprintf(q, sizeof q, "%sattn.compressor.", p);
        lw->compressor = compressor(b, q, lw->ratio, hd);
    }
    if (lw->ratio == 4) {
        lw->idx_wq_b = fp8(b, p, "attn.indexer.wq_b", c->index_n_heads * c->index_head_dim, QL);
        lw->idx_weights_proj = bf16(b, p, "attn.indexer.weights_proj.weight");
        snprintf(q, sizeof q, "%sattn.indexer.compressor.", p);
        lw->idx_compressor = compressor(b, q, 4, c->index_head_dim);
    }
    lw->gate_w = bf16(b, p, "ffn.gate.weight");
    if (hash) lw->tid2eid = view(b, p, "ffn.gate.tid2eid", 8);
    else lw->gate_bias = f32(b, p, "ffn.gate.bias");
    lw->experts_w1 = experts;
    lw->experts_w2 = experts + E;
    lw->experts_w3 = experts + 2 * E;
    for (int e = 0; e < E; e++) {
        snprintf(q, sizeof q, "%sffn.experts.%d.", p, e);
        lw->experts_w1[e] = expert(b, q, "w1", I, D);
        lw->experts_w2[e] = expert(b, q, "w2", D, I);
        lw->experts_w3[e] = expert(b, q, "w3", I, D);
    }
    lw->shared_w1 = fp8(b, p, "ffn.shared_experts.w1", Is, D);
    lw->shared_w2 = fp8(b, p, "ffn.shared_experts.w2", D, Is);
    lw->shared_w3 = fp8(b, p, "ffn.shared_experts.w3", Is, D);
}

dsv4_status dsv4_model_weights_bind(const dsv4_checkpoint *ck, dsv4_model_weights *w, dsv4_err *err) {
    const dsv4_config *c = &ck->cfg;
    memset(w, 0, sizeof *w);
    binder b = {ck, w, 0, err, DSV4_OK};
    int n_blocks = c->n_layers + c->n_mtp_layers, E = c->n_routed_experts;
    w->cfg = c;
    w->layers = calloc((size_t)c->n_layers, sizeof *w->layers);
    w->expert_storage = calloc((size_t)n_blocks * 3 * (size_t)E, sizeof *w->expert_storage);
    if (c->n_mtp_layers > 0) w->mtp = calloc(1, sizeof *w->mtp);
    if (!w->layers || !w->expert_storage || (c->n_mtp_layers > 0 && !w->mtp)) {
        dsv4_model_weights_free(w);
        return dsv4_err_set(err, DSV4_ERR_NOMEM, "%s: out of memory binding weights", ck->dir);
    }
    w->embed = bf16(&b, "", "embed.weight");
    w->head = bf16(&b, "", "head.weight");
    w->norm = bf16(&b, "", "norm.weight");
    w->hc_head = hc(&b, "", "hc_head");
    char p[64];
    for (int l = 0; l < c->n_layers; l++) {
        snprintf(p, sizeof p, "layers.%d.", l);
        bind_block(&b, p, l, l < c->n_hash_layers, &w->layers[l], w->expert_storage + (size_t)l * 3 * E);
    }
    if (w->mtp) {
        dsv4_mtp_weights *m = w->mtp;
        int D = c->dim;
        bind_block(&b, "mtp.0.", c->n_layers, 0, &m->block, w->expert_storage + (size_t)c->n_layers * 3 * E);
        m->e_proj = fp8(&b, "mtp.0.", "e_proj", D, D);
        m->h_proj = fp8(&b, "mtp.0.", "h_proj", D, D);
        m->enorm = bf16(&b, "mtp.0.", "enorm.weight");
        m->hnorm = bf16(&b, "mtp.0.", "hnorm.weight");
        m->norm = bf16(&b, "mtp.0.", "norm.weight");
        m->hc_head = hc(&b, "mtp.0.", "hc_head");
    }
    if (b.st != DSV4_OK) {
        dsv4_model_weights_free(w);
        return b.st;
    }
    return DSV4_OK;
}

void dsv4_model_weights_free(dsv4_model_weights *w) {
    if (!w) return;
    for (int i = 0; i < w->n_owned_copies; i++) free(w->owned_copies[i]);
    free(w->owned_copies);
    free(w->layers);
    free(w->mtp);
    free(w->expert_storage);
    memset(w, 0, sizeof *w);
}
