/* kv_access.c — the forward pass's float-row view of the KV manager (see kv_access.h): encodes rows into
 * the compact bit-exact storage on write and decodes them on read. An encode failure means the forward
 * produced a value that is not a fake-quant output — a bug — so it asserts. */
#include "engine/kv_access.h"

#include <math.h>

#include "kv/kv_codec.h"

static dsv4_kv_layer_view view_of(dsv4_kv_manager *kv, int slot, int layer) {
    dsv4_kv_layer_view v;
    dsv4_status st = dsv4_kv_manager_view(kv, slot, layer, &v, NULL);
    DSV4_ASSERT(st == DSV4_OK);
    return v;
}

dsv4_status dsv4_kv_access_create(const dsv4_config *cfg, int max_seqs, long max_tokens, dsv4_kv_manager **out,
                                  dsv4_err *err) {
    dsv4_kv_manager_params p = {0};
    p.max_requests = max_seqs;
    p.max_total_tokens = max_tokens;
    p.max_seq_len = max_tokens;
    return dsv4_kv_manager_create(cfg, &p, out, err);
}

void dsv4_kv_access_destroy(dsv4_kv_manager *kv) { dsv4_kv_manager_destroy(kv); }

dsv4_status dsv4_kv_access_admit(dsv4_kv_manager *kv, int *slot, dsv4_err *err) {
    return dsv4_kv_manager_admit(kv, 0, slot, err);
}

void dsv4_kv_access_release(dsv4_kv_manager *kv, int slot) { (void)dsv4_kv_manager_release(kv, slot, NULL); }

int dsv4_kv_access_slot_valid(dsv4_kv_manager *kv, int slot) { return dsv4_kv_manager_pos(kv, slot) >= 0; }

dsv4_status dsv4_kv_access_prepare(dsv4_kv_manager *kv, const int *slots, const int *counts, int n, dsv4_err *err) {
    dsv4_kv_step_seq seqs[n];
    for (int i = 0; i < n; i++) seqs[i] = (dsv4_kv_step_seq){slots[i], counts[i]};
    int failed = -1;
    return dsv4_kv_manager_prepare_step(kv, seqs, n, &failed, err);
}

long dsv4_kv_access_seq_len(dsv4_kv_manager *kv, int slot) { return (long)dsv4_kv_manager_pos(kv, slot); }

void dsv4_kv_access_commit(dsv4_kv_manager *kv, const int *slots, const int *counts, int n) {
    for (int i = 0; i < n; i++) {
        dsv4_status st = dsv4_kv_manager_commit(kv, slots[i], counts[i], NULL);
        DSV4_ASSERT(st == DSV4_OK);
    }
}

void dsv4_kv_access_window_read(dsv4_kv_manager *kv, int slot, int layer, long pos, float *out) {
    dsv4_kv_layer_view v = view_of(kv, slot, layer);
    dsv4_kv_entry_decode(v.entry_fmt, dsv4_kv_view_ring_entry(&v, pos), out);
}

/* Window rows go through the quantize rule (idempotent on fake-quantized input, so identical to encode for
 * every real row); this also lets the test-only no-kv-quant fault store its unquantized rows. */
static int all_finite(const float *x, int n) {
    for (int i = 0; i < n; i++)
        if (!isfinite(x[i])) return 0;
    return 1;
}

dsv4_status dsv4_kv_access_window_write(dsv4_kv_manager *kv, int slot, int layer, long pos, const float *row) {
    dsv4_kv_layer_view v = view_of(kv, slot, layer);
    if (!all_finite(row, v.entry_fmt->nope + v.entry_fmt->rope)) return DSV4_ERR_FORMAT;
    dsv4_kv_entry_quantize(v.entry_fmt, row, dsv4_kv_view_ring_entry(&v, pos));
    return DSV4_OK;
}

void dsv4_kv_access_comp_read(dsv4_kv_manager *kv, int slot, int layer, long w, float *out) {
    dsv4_kv_layer_view v = view_of(kv, slot, layer);
    dsv4_kv_entry_decode(v.entry_fmt, dsv4_kv_view_entry(&v, w), out);
}

dsv4_status dsv4_kv_access_comp_write(dsv4_kv_manager *kv, int slot, int layer, long w, const float *row) {
    dsv4_kv_layer_view v = view_of(kv, slot, layer);
    if (!all_finite(row, v.entry_fmt->nope + v.entry_fmt->rope)) return DSV4_ERR_FORMAT;
    dsv4_status st = dsv4_kv_entry_encode(v.entry_fmt, row, dsv4_kv_view_entry(&v, w), NULL);
    DSV4_ASSERT(st == DSV4_OK);
    return DSV4_OK;
}

void dsv4_kv_access_idx_read(dsv4_kv_manager *kv, int slot, int layer, long w, float *out) {
    dsv4_kv_layer_view v = view_of(kv, slot, layer);
    dsv4_kv_ikey_decode(v.ikey_fmt, dsv4_kv_view_ikey_codes(&v, w), dsv4_kv_view_ikey_scales(&v, w), out);
}

dsv4_status dsv4_kv_access_idx_write(dsv4_kv_manager *kv, int slot, int layer, long w, const float *row) {
    dsv4_kv_layer_view v = view_of(kv, slot, layer);
    if (!all_finite(row, v.ikey_fmt->dim)) return DSV4_ERR_FORMAT;
    dsv4_status st =
        dsv4_kv_ikey_encode(v.ikey_fmt, row, dsv4_kv_view_ikey_codes(&v, w), dsv4_kv_view_ikey_scales(&v, w), NULL);
    DSV4_ASSERT(st == DSV4_OK);
    return DSV4_OK;
}

dsv4_kv_comp_state dsv4_kv_access_comp_state(dsv4_kv_manager *kv, int slot, int layer, int which) {
    dsv4_kv_layer_view v = view_of(kv, slot, layer);
    const dsv4_kv_cmp_view *c = which == DSV4_KV_COMP_INDEXER ? &v.icmp : &v.cmp;
    DSV4_ASSERT(c->ratio > 0);
    return (dsv4_kv_comp_state){c->kv_prev, c->sc_prev, c->kv_cur, c->sc_cur};
}
