/* spec.c — MTP rows kept in step with a sequence, and greedy speculative decoding (see spec.h).
 *
 * A round of dsv4_spec_decode_greedy at sequence length P with the pending token t_P (not yet fed):
 *   draft   the MTP row P-1 (h = last_h, token t_P) is final: it is committed, and its logits give d1;
 *           chained rows P, P+1 (h = the previous MTP row's own HC state, token = the previous draft) give
 *           d2, d3 and are draft rows: their ring records are saved first and restored after drafting;
 *   verify  one forward of [t_P, d1..dk] at P..P+k with the logits of every row; the cache bytes that
 *           forward may change are saved first (kv_rollback.h);
 *   accept  a = the number of leading drafts equal to the argmax of the row before them; the round emits
 *           d1..da and the argmax b of row a (the main model's own token);
 *   undo    the cache bytes of positions P+a+1..P+k are restored and the sequence truncated to P+a+1;
 *   catch up the MTP rows P..P+a-1 (h = the verified rows' states, tokens d1..da) are committed, last_h =
 *           row a's state; b is the next pending token.
 * Every row the main model keeps was computed by the same per-row arithmetic as a one-token decode
 * (forward.h determinism contract), so tokens and state are those of plain greedy decoding. */
#include "engine/spec.h"

#include <stdlib.h>
#include <string.h>

#include "core/status.h"
#include "engine/kv_access.h"
#include "engine/sampler.h"
#include "kv/kv_rollback.h"

/* The sampler's greedy rule (larger logit, then lower id; NaN never wins), so speculative and plain
 * greedy decoding pick the same token from the same logits. */
static int argmax(const float *l, int V) { return dsv4_sample_greedy(l, V); }

static dsv4_status check_sync(dsv4_kv_manager *kv, int slot, dsv4_err *err) {
    if (!dsv4_kv_access_slot_valid(kv, slot))
        return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "spec: slot %d is not admitted", slot);
    long len = dsv4_kv_access_seq_len(kv, slot), want = len > 0 ? len - 1 : 0;
    if (dsv4_kv_manager_mtp_pos(kv, slot) != want)
        return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "spec: slot %d: the MTP block is at %lld of %ld tokens (its "
                            "tokens were fed without the MTP step)", slot,
                            (long long)dsv4_kv_manager_mtp_pos(kv, slot), len);
    return DSV4_OK;
}

dsv4_status dsv4_spec_step(dsv4_forward *f, dsv4_kv_manager *kv, const dsv4_seq_step *steps, int n_steps,
                           float *const *last_h, float *logits, float *mtp_logits, int *n_mtp_rows, dsv4_err *err) {
    const dsv4_config *c = dsv4_forward_model(f)->cfg;
    const size_t HD = (size_t)c->hc_mult * c->dim;
    if (n_mtp_rows) *n_mtp_rows = 0;
    if (!dsv4_forward_model(f)->w.mtp)
        return dsv4_err_set(err, DSV4_ERR_UNSUPPORTED, "spec: the checkpoint has no MTP block (mtp.0.*)");
    if (n_steps <= 0) return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "spec: empty batch");
    int rows = 0;
    long pos0[n_steps];
    for (int i = 0; i < n_steps; i++) {
        DSV4_TRY(check_sync(kv, steps[i].slot, err));
        if (!last_h || !last_h[i]) return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "spec: no last_h for step %d", i);
        pos0[i] = dsv4_kv_access_seq_len(kv, steps[i].slot);
        rows += steps[i].n_tokens > 0 ? steps[i].n_tokens : 0;
    }
    /* Main rows' final states, then the MTP inputs per sequence: [last_h, X rows 0..n-2]. */
    float *X = malloc(sizeof(float) * HD * (size_t)(rows + n_steps));
    dsv4_mtp_step *ms = calloc((size_t)n_steps, sizeof *ms);
    if (!X || !ms) {
        free(X);
        free(ms);
        return dsv4_err_set(err, DSV4_ERR_NOMEM, "spec: out of memory");
    }
    dsv4_status st = dsv4_forward_step(f, kv, steps, n_steps, logits, err);
    int n_ms = 0, n_rows = 0;
    for (int i = 0, row = 0, at = 0; st == DSV4_OK && i < n_steps; i++) {
        const int n = steps[i].n_tokens;
        float *hi = X + HD * (size_t)at;
        int has_prev = pos0[i] > 0;
        if (has_prev) memcpy(hi, last_h[i], sizeof(float) * HD);
        dsv4_forward_hidden(f, row, n, hi + HD * (size_t)has_prev);
        memcpy(last_h[i], hi + HD * (size_t)(has_prev + n - 1), sizeof(float) * HD);
        int m = has_prev + n - 1;
        if (m > 0) {
            ms[n_ms++] = (dsv4_mtp_step){steps[i].slot, has_prev ? pos0[i] - 1 : 0, hi,
                                         steps[i].tokens + (has_prev ? 0 : 1), m,
                                         mtp_logits ? DSV4_LOGITS_ALL : 0, 1};
            n_rows += m;
        }
        row += n;
        at += n + 1;
    }
    if (st == DSV4_OK && n_ms) st = dsv4_forward_mtp(f, kv, ms, n_ms, mtp_logits, NULL, err);
    if (st == DSV4_OK && n_mtp_rows) *n_mtp_rows = n_rows;
    free(X);
    free(ms);
    return st;
}

dsv4_status dsv4_spec_decode_greedy(dsv4_forward *f, dsv4_kv_manager *kv, int slot, float *last_h, int32_t first,
                                    int n_steps, int k, int32_t *out, dsv4_spec_stats *stats,
                                    dsv4_spec_draft_fn draft_hook, void *hook_user, dsv4_err *err) {
    const dsv4_model *m = dsv4_forward_model(f);
    const dsv4_config *c = m->cfg;
    const int V = c->vocab_size, L = c->n_layers;
    const size_t HD = (size_t)c->hc_mult * c->dim;
    if (!m->w.mtp) return dsv4_err_set(err, DSV4_ERR_UNSUPPORTED, "spec: the checkpoint has no MTP block (mtp.0.*)");
    if (k < 1 || k > DSV4_SPEC_MAX_DRAFT)
        return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "spec: %d draft tokens (1..%d)", k, DSV4_SPEC_MAX_DRAFT);
    if (n_steps < 1 || !out || !last_h) return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "spec: nothing to decode");
    if (first < 0 || first >= V)
        return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "spec: token id %d out of range [0, %d)", first, V);
    DSV4_TRY(check_sync(kv, slot, err));
    dsv4_kv_rollback rb_main = {0}, rb_mtp = {0};
    DSV4_TRY(dsv4_kv_rollback_init(&rb_main, kv, k + 1, err));
    dsv4_status st = dsv4_kv_rollback_init(&rb_mtp, kv, k > 1 ? k - 1 : 1, err);
    float *logits = malloc(sizeof(float) * (size_t)V * (k + 1));
    float *X = malloc(sizeof(float) * HD * (size_t)(k + 1));
    float *Y = malloc(sizeof(float) * HD * 2);
    if (st == DSV4_OK && (!logits || !X || !Y)) st = dsv4_err_set(err, DSV4_ERR_NOMEM, "spec: out of memory");
    if (stats) memset(stats, 0, sizeof *stats);
    int32_t cur = first;
    int produced = 0;
    while (st == DSV4_OK && produced < n_steps) {
        const long P = dsv4_kv_access_seq_len(kv, slot);
        int kk = n_steps - produced - 1 < k ? n_steps - produced - 1 : k;
        if (P == 0) kk = 0; /* no h yet: the first token is a plain step */
        int32_t toks[DSV4_SPEC_MAX_DRAFT + 1] = {cur};
        /* Blocks for the verification first, so that a full cache fails before any state changes. */
        int n = kk + 1;
        if ((st = dsv4_kv_access_prepare(kv, &slot, &n, 1, err)) != DSV4_OK) break;
        /* Draft. */
        if (P > 0) {
            float *y = Y, *y_next = Y + HD;
            dsv4_mtp_step ms = {slot, P - 1, last_h, &cur, 1, kk > 0, 1};
            if ((st = dsv4_forward_mtp(f, kv, &ms, 1, logits, y, err)) != DSV4_OK) break;
            if (kk > 0) toks[1] = argmax(logits, V);
            if (kk > 1 && (st = dsv4_kv_rollback_save(&rb_mtp, kv, slot, L, L + 1, P, kk - 1, err)) != DSV4_OK) break;
            for (int j = 1; j < kk && st == DSV4_OK; j++) {
                ms = (dsv4_mtp_step){slot, P + j - 1, y, &toks[j], 1, 1, 0};
                if ((st = dsv4_forward_mtp(f, kv, &ms, 1, logits, y_next, err)) != DSV4_OK) break;
                toks[j + 1] = argmax(logits, V);
                float *t = y; y = y_next; y_next = t;
            }
            if (kk > 1) dsv4_kv_rollback_restore(&rb_mtp, kv, 0);
            if (st != DSV4_OK) break;
            if (draft_hook && kk > 0) draft_hook(hook_user, P, cur, kk, toks + 1);
        }
        /* Verify: one forward of kk+1 rows with the logits of each. */
        if ((st = dsv4_kv_rollback_save(&rb_main, kv, slot, 0, L, P, n, err)) != DSV4_OK) break;
        dsv4_seq_step step = {slot, toks, n, DSV4_LOGITS_ALL};
        if ((st = dsv4_forward_step(f, kv, &step, 1, logits, err)) != DSV4_OK) {
            dsv4_kv_rollback_restore(&rb_main, kv, n);
            break;
        }
        dsv4_forward_hidden(f, 0, n, X);
        int a = 0;
        while (a < kk && argmax(logits + (size_t)a * V, V) == toks[a + 1]) a++;
        int32_t bonus = argmax(logits + (size_t)a * V, V);
        for (int j = 0; j < a; j++) out[produced++] = toks[j + 1];
        out[produced++] = bonus;
        /* Undo the rejected rows, then the MTP rows of the accepted drafts. */
        dsv4_kv_rollback_restore(&rb_main, kv, a + 1);
        st = dsv4_kv_manager_truncate(kv, slot, P + a + 1, err);
        if (st == DSV4_OK && a > 0) {
            dsv4_mtp_step ms = {slot, P, X, toks + 1, a, 0, 1};
            st = dsv4_forward_mtp(f, kv, &ms, 1, NULL, NULL, err);
        }
        memcpy(last_h, X + HD * (size_t)a, sizeof(float) * HD);
        cur = bonus;
        if (stats) {
            stats->steps++;
            stats->drafted += kk;
            stats->accepted += a;
        }
    }
    dsv4_kv_rollback_free(&rb_main);
    dsv4_kv_rollback_free(&rb_mtp);
    free(logits);
    free(X);
    free(Y);
    return st;
}
