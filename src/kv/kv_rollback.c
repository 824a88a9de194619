/* kv_rollback.c — save / restore of the cache bytes a short step changes (see kv_rollback.h).
 * One walker visits the regions in a fixed order for both directions; each region carries the position
 * whose processing writes it (its own position for ring records and compressor rows, the completing
 * position for the overlap half-window, the entry and the indexer key). */
#include "kv/kv_rollback.h"

#include <stdlib.h>
#include <string.h>

typedef struct walk {
    dsv4_kv_rollback *rb;
    int restore;       /* 0: copy cache -> buffer; 1: buffer -> cache for tags >= keep_from */
    int64_t keep_from; /* first position to undo */
    const dsv4_kv_mem_ops *mem; /* the arenas' hook: memcpy when host_accessible, else mem->copy */
    dsv4_status st;    /* first failed device copy */
} walk;

static void region(walk *w, void *p, size_t bytes, int64_t tag) {
    dsv4_kv_rollback *rb = w->rb;
    DSV4_ASSERT(rb->used + bytes <= rb->cap);
    uint8_t *saved = rb->buf + rb->used;
    rb->used += bytes;
    if (w->restore && tag < w->keep_from) return;
    if (w->mem->host_accessible) {
        if (!w->restore) memcpy(saved, p, bytes);
        else memcpy(p, saved, bytes);
        return;
    }
    if (w->st != DSV4_OK) return;
    w->st = w->restore ? w->mem->copy(w->mem->ctx, p, saved, bytes, 1) : w->mem->copy(w->mem->ctx, saved, p, bytes, 0);
}

static void walk_cmp(walk *w, const dsv4_kv_cmp_view *c, int64_t pos0, int n) {
    if (!c->ratio) return;
    const int r = c->ratio, width = (c->overlap ? 2 : 1) * c->d;
    const size_t row = sizeof(float) * (size_t)width;
    int64_t done = -1; /* the position that completes a window in this step, if any */
    for (int i = 0; i < n; i++) {
        int64_t t = pos0 + i;
        region(w, c->kv_cur + (size_t)(t % r) * width, row, t);
        region(w, c->sc_cur + (size_t)(t % r) * width, row, t);
        if ((t + 1) % r == 0) done = t;
    }
    if (c->overlap && done >= 0) {
        region(w, c->kv_prev, sizeof(float) * (size_t)r * c->d, done);
        region(w, c->sc_prev, sizeof(float) * (size_t)r * c->d, done);
    }
}

static void walk_all(walk *w, const dsv4_kv_manager *m) {
    dsv4_kv_rollback *rb = w->rb;
    rb->used = 0;
    for (int layer = rb->layer0; layer < rb->layer1; layer++) {
        dsv4_kv_layer_view v;
        dsv4_status st = dsv4_kv_manager_view(m, rb->slot, layer, &v, NULL);
        DSV4_ASSERT(st == DSV4_OK);
        for (int i = 0; i < rb->n; i++)
            region(w, dsv4_kv_view_ring_entry(&v, rb->pos0 + i), (size_t)v.entry_bytes, rb->pos0 + i);
        if (!v.ratio) continue;
        walk_cmp(w, &v.cmp, rb->pos0, rb->n);
        walk_cmp(w, &v.icmp, rb->pos0, rb->n);
        for (int i = 0; i < rb->n; i++) {
            int64_t t = rb->pos0 + i;
            if ((t + 1) % v.ratio != 0) continue;
            int64_t e = t / v.ratio;
            region(w, dsv4_kv_view_entry(&v, e), (size_t)v.entry_bytes, t);
            if (v.kind == DSV4_LAYER_CSA) {
                region(w, dsv4_kv_view_ikey_codes(&v, e), (size_t)v.ikey_code_bytes, t);
                region(w, dsv4_kv_view_ikey_scales(&v, e), (size_t)v.ikey_n_scales, t);
            }
        }
    }
}

dsv4_status dsv4_kv_rollback_init(dsv4_kv_rollback *rb, const dsv4_kv_manager *m, int max_tokens, dsv4_err *err) {
    memset(rb, 0, sizeof *rb);
    const dsv4_kv_schema *s = dsv4_kv_manager_schema(m);
    if (max_tokens < 1 || max_tokens > s->window || (s->min_ratio && max_tokens > s->min_ratio))
        return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "kv rollback: %d tokens per step (limit: window %d and the "
                            "smallest compress ratio %d)", max_tokens, s->window, s->min_ratio);
    size_t cap = 0;
    for (int l = 0; l < s->n_layers; l++) {
        const dsv4_kv_layer_schema *L = &s->layer[l];
        cap += (size_t)max_tokens * s->entry.bytes;
        const dsv4_kv_cmp_schema *cs[2] = {&L->cmp, &L->icmp};
        for (int j = 0; j < 2; j++) {
            if (!cs[j]->present) continue;
            size_t width = (size_t)(cs[j]->overlap ? 2 : 1) * cs[j]->d;
            cap += 2 * sizeof(float) * width * (size_t)max_tokens;
            if (cs[j]->overlap) cap += 2 * sizeof(float) * (size_t)cs[j]->ratio * cs[j]->d;
        }
        if (L->ratio) cap += (size_t)s->entry.bytes + (size_t)s->ikey.code_bytes + (size_t)s->ikey.n_scales;
    }
    const dsv4_kv_mem_ops *mem = dsv4_kv_manager_mem(m);
    if (!mem->host_accessible && !mem->copy)
        return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "kv rollback: the KV arenas are not host memory and have no "
                            "copy hook");
    if (!(rb->buf = malloc(cap))) return dsv4_err_set(err, DSV4_ERR_NOMEM, "kv rollback: %zu bytes", cap);
    rb->cap = cap;
    rb->max_tokens = max_tokens;
    return DSV4_OK;
}

void dsv4_kv_rollback_free(dsv4_kv_rollback *rb) {
    free(rb->buf);
    memset(rb, 0, sizeof *rb);
}

dsv4_status dsv4_kv_rollback_save(dsv4_kv_rollback *rb, const dsv4_kv_manager *m, int slot, int layer0, int layer1,
                                  int64_t pos0, int n, dsv4_err *err) {
    const dsv4_kv_schema *s = dsv4_kv_manager_schema(m);
    if (n < 1 || n > rb->max_tokens || layer0 < 0 || layer1 > s->n_layers || layer0 >= layer1 || pos0 < 0)
        return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "kv rollback: save of %d tokens at %lld, layers [%d, %d)",
                            n, (long long)pos0, layer0, layer1);
    if (dsv4_kv_manager_pos(m, slot) < 0)
        return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "kv rollback: slot %d not admitted", slot);
    /* Every entry the step completes must already have storage. */
    for (int l = layer0; l < layer1; l++) {
        dsv4_kv_layer_view v;
        DSV4_TRY(dsv4_kv_manager_view(m, slot, l, &v, err));
        if (v.ratio && (pos0 + n) / v.ratio > v.cap_entries)
            return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "kv rollback: slot %d layer %d: blocks for position %lld "
                                "not prepared", slot, l, (long long)(pos0 + n - 1));
    }
    rb->slot = slot;
    rb->layer0 = layer0;
    rb->layer1 = layer1;
    if (rb->copy_st != DSV4_OK) {
        dsv4_status st = rb->copy_st;
        rb->copy_st = DSV4_OK;
        return dsv4_err_set(err, st, "kv rollback: a device copy of the previous restore failed");
    }
    rb->pos0 = pos0;
    rb->n = n;
    walk w = {rb, 0, 0, dsv4_kv_manager_mem(m), DSV4_OK};
    walk_all(&w, m);
    if (w.st != DSV4_OK) {
        rb->n = 0;
        return dsv4_err_set(err, w.st, "kv rollback: device copy failed while saving slot %d", slot);
    }
    return DSV4_OK;
}

void dsv4_kv_rollback_restore(dsv4_kv_rollback *rb, const dsv4_kv_manager *m, int n_keep) {
    DSV4_ASSERT(n_keep >= 0 && n_keep <= rb->n);
    if (rb->n > 0 && n_keep < rb->n) {
        walk w = {rb, 1, rb->pos0 + n_keep, dsv4_kv_manager_mem(m), DSV4_OK};
        walk_all(&w, m);
        if (rb->copy_st == DSV4_OK) rb->copy_st = w.st;
    }
    rb->n = 0;
}
