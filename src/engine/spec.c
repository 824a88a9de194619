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
 * (forward.h determinism contract), so tokens and state are those of plain greedy decoding. With several
 * sequences each step above runs once for all of them (one MTP forward per draft depth, one verification
 * forward); each sequence keeps its own count and stops at n_steps tokens. */
#include "engine/spec.h"

#include <stdlib.h>
#include <string.h>

#include "core/status.h"
#include "engine/kv_access.h"
#include "dsv4_sampler.h"
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

/* Per-sequence state of a speculative decode. */
typedef struct spec_seq {
    int slot;
    float *last_h;                           /* borrowed [HD] */
    float *y;                                /* [HD] the last draft row's own HC state (chain input) */
    int32_t cur;                             /* pending token (fed first in the next verification) */
    int produced;
    long P;                                  /* length at the start of the round */
    int kk, n, row0;                         /* drafts, verification rows, first row in the step */
    int32_t toks[DSV4_SPEC_MAX_DRAFT + 1];   /* cur, d1 .. dkk */
    dsv4_kv_rollback rb_main, rb_mtp;
} spec_seq;

static dsv4_status cpu_step(void *f, dsv4_kv_manager *kv, const dsv4_seq_step *steps, int n_steps, float *logits,
                            float *hidden, dsv4_err *err) {
    dsv4_status st = dsv4_forward_step(f, kv, steps, n_steps, logits, err);
    if (st == DSV4_OK && hidden) {
        int rows = 0;
        for (int i = 0; i < n_steps; i++) rows += steps[i].n_tokens;
        dsv4_forward_hidden(f, 0, rows, hidden);
    }
    return st;
}

static dsv4_status cpu_mtp(void *f, dsv4_kv_manager *kv, const dsv4_mtp_step *steps, int n_steps, float *logits,
                           float *h_out, dsv4_err *err) {
    return dsv4_forward_mtp(f, kv, steps, n_steps, logits, h_out, err);
}

void dsv4_spec_backend_cpu(dsv4_forward *f, dsv4_spec_backend *out) {
    *out = (dsv4_spec_backend){f, dsv4_forward_model(f), cpu_step, cpu_mtp};
}

dsv4_status dsv4_spec_decode_greedy(dsv4_forward *f, dsv4_kv_manager *kv, int n_seqs, const int *slots,
                                    float *const *last_h, const int32_t *first, int n_steps, int k, int32_t *out,
                                    dsv4_spec_stats *stats, dsv4_spec_draft_fn draft_hook, void *hook_user,
                                    dsv4_err *err) {
    dsv4_spec_backend be;
    dsv4_spec_backend_cpu(f, &be);
    return dsv4_spec_decode_greedy_on(&be, kv, n_seqs, slots, last_h, first, n_steps, k, out, stats, draft_hook,
                                      hook_user, err);
}

dsv4_status dsv4_spec_decode_greedy_on(const dsv4_spec_backend *be, dsv4_kv_manager *kv, int n_seqs, const int *slots,
                                       float *const *last_h, const int32_t *first, int n_steps, int k, int32_t *out,
                                       dsv4_spec_stats *stats, dsv4_spec_draft_fn draft_hook, void *hook_user,
                                       dsv4_err *err) {
    const dsv4_model *m = be->model;
    const dsv4_config *c = m->cfg;
    const int V = c->vocab_size, L = c->n_layers;
    const size_t HD = (size_t)c->hc_mult * c->dim;
    if (!m->w.mtp) return dsv4_err_set(err, DSV4_ERR_UNSUPPORTED, "spec: the checkpoint has no MTP block (mtp.0.*)");
    if (k < 1 || k > DSV4_SPEC_MAX_DRAFT)
        return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "spec: %d draft tokens (1..%d)", k, DSV4_SPEC_MAX_DRAFT);
    if (n_seqs < 1 || n_steps < 1 || !out || !last_h || !slots || !first)
        return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "spec: nothing to decode");
    for (int i = 0; i < n_seqs; i++) {
        if (first[i] < 0 || first[i] >= V)
            return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "spec: token id %d out of range [0, %d)", first[i], V);
        if (!last_h[i]) return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "spec: no last_h for sequence %d", i);
        for (int j = 0; j < i; j++)
            if (slots[j] == slots[i])
                return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "spec: slot %d listed twice", slots[i]);
        DSV4_TRY(check_sync(kv, slots[i], err));
    }
    if (stats) memset(stats, 0, sizeof *stats * (size_t)n_seqs);
    const size_t R = (size_t)n_seqs * (k + 1); /* most verification rows of a round */
    spec_seq *S = calloc((size_t)n_seqs, sizeof *S);
    float *logits = malloc(sizeof(float) * (size_t)V * R), *X = malloc(sizeof(float) * HD * R);
    float *Y = malloc(sizeof(float) * HD * (size_t)n_seqs * 2);
    dsv4_mtp_step *ms = calloc((size_t)n_seqs, sizeof *ms);
    dsv4_seq_step *steps = calloc((size_t)n_seqs, sizeof *steps);
    int *who = calloc((size_t)n_seqs, sizeof *who), *act = calloc((size_t)n_seqs, sizeof *act);
    int *pslots = calloc((size_t)n_seqs, sizeof *pslots), *pcounts = calloc((size_t)n_seqs, sizeof *pcounts);
    dsv4_status st = DSV4_OK;
    if (!S || !logits || !X || !Y || !ms || !steps || !who || !act || !pslots || !pcounts)
        st = dsv4_err_set(err, DSV4_ERR_NOMEM, "spec: out of memory");
    for (int i = 0; st == DSV4_OK && i < n_seqs; i++) {
        S[i] = (spec_seq){.slot = slots[i], .last_h = last_h[i], .y = Y + HD * (size_t)i, .cur = first[i]};
        if ((st = dsv4_kv_rollback_init(&S[i].rb_main, kv, k + 1, err)) == DSV4_OK)
            st = dsv4_kv_rollback_init(&S[i].rb_mtp, kv, k > 1 ? k - 1 : 1, err);
    }
    float *Ynext = Y + HD * (size_t)n_seqs;
    while (st == DSV4_OK) {
        int n_act = 0;
        for (int i = 0; i < n_seqs; i++)
            if (S[i].produced < n_steps) act[n_act++] = i;
        if (!n_act) break;
        for (int q = 0; q < n_act; q++) {
            spec_seq *s = &S[act[q]];
            s->P = dsv4_kv_access_seq_len(kv, s->slot);
            s->kk = n_steps - s->produced - 1 < k ? n_steps - s->produced - 1 : k;
            if (s->P == 0) s->kk = 0; /* no h yet: the first token is a plain step */
            s->n = s->kk + 1;
            s->toks[0] = s->cur;
            pslots[q] = s->slot;
            pcounts[q] = s->n;
        }
        /* Blocks for the verification first, so that a full cache fails before any state changes. */
        if ((st = dsv4_kv_access_prepare(kv, pslots, pcounts, n_act, err)) != DSV4_OK) break;
        /* Draft: the final MTP row P-1 of every sequence (d1), then the chained draft rows (d2, d3). */
        int nm = 0;
        for (int q = 0; q < n_act; q++) {
            spec_seq *s = &S[act[q]];
            if (s->P == 0) continue;
            ms[nm] = (dsv4_mtp_step){s->slot, s->P - 1, s->last_h, &s->cur, 1, 1, 1};
            who[nm++] = act[q];
        }
        if (nm && (st = be->mtp(be->fwd, kv, ms, nm, logits, Ynext, err)) != DSV4_OK) break;
        for (int j = 0; j < nm; j++) {
            spec_seq *s = &S[who[j]];
            if (s->kk > 0) s->toks[1] = argmax(logits + (size_t)j * V, V);
            memcpy(s->y, Ynext + HD * (size_t)j, sizeof(float) * HD);
            if (s->kk > 1 && (st = dsv4_kv_rollback_save(&s->rb_mtp, kv, s->slot, L, L + 1, s->P, s->kk - 1, err)) != DSV4_OK)
                break;
        }
        for (int d = 1; st == DSV4_OK && d < k; d++) {
            nm = 0;
            for (int q = 0; q < n_act; q++) {
                spec_seq *s = &S[act[q]];
                if (s->P == 0 || s->kk <= d) continue;
                ms[nm] = (dsv4_mtp_step){s->slot, s->P + d - 1, s->y, &s->toks[d], 1, 1, 0};
                who[nm++] = act[q];
            }
            if (!nm) break;
            if ((st = be->mtp(be->fwd, kv, ms, nm, logits, Ynext, err)) != DSV4_OK) break;
            for (int j = 0; j < nm; j++) {
                spec_seq *s = &S[who[j]];
                s->toks[d + 1] = argmax(logits + (size_t)j * V, V);
                memcpy(s->y, Ynext + HD * (size_t)j, sizeof(float) * HD);
            }
        }
        for (int q = 0; q < n_act; q++) dsv4_kv_rollback_restore(&S[act[q]].rb_mtp, kv, 0);
        if (st != DSV4_OK) break;
        for (int q = 0; draft_hook && q < n_act; q++) {
            spec_seq *s = &S[act[q]];
            if (s->kk > 0) draft_hook(hook_user, s->slot, s->P, s->cur, s->kk, s->toks + 1);
        }
        /* Verify: one forward with kk+1 rows per sequence and the logits of each. */
        int rows = 0;
        for (int q = 0; q < n_act && st == DSV4_OK; q++) {
            spec_seq *s = &S[act[q]];
            st = dsv4_kv_rollback_save(&s->rb_main, kv, s->slot, 0, L, s->P, s->n, err);
            steps[q] = (dsv4_seq_step){s->slot, s->toks, s->n, DSV4_LOGITS_ALL};
            s->row0 = rows;
            rows += s->n;
        }
        if (st == DSV4_OK) st = be->step(be->fwd, kv, steps, n_act, logits, X, err);
        if (st != DSV4_OK) { /* nothing was written: forget the saves */
            for (int q = 0; q < n_act; q++) dsv4_kv_rollback_restore(&S[act[q]].rb_main, kv, S[act[q]].rb_main.n);
            break;
        }
        /* Accept, undo the rejected rows, then the MTP rows of the accepted drafts. */
        nm = 0;
        for (int q = 0; q < n_act && st == DSV4_OK; q++) {
            const int i = act[q];
            spec_seq *s = &S[i];
            const float *lg = logits + (size_t)s->row0 * V;
            int a = 0;
            while (a < s->kk && argmax(lg + (size_t)a * V, V) == s->toks[a + 1]) a++;
            int32_t bonus = argmax(lg + (size_t)a * V, V);
            for (int j = 0; j < a; j++) out[(size_t)s->produced++ * n_seqs + i] = s->toks[j + 1];
            out[(size_t)s->produced++ * n_seqs + i] = bonus;
            dsv4_kv_rollback_restore(&s->rb_main, kv, a + 1);
            st = dsv4_kv_manager_truncate(kv, s->slot, s->P + a + 1, err);
            if (a > 0) {
                ms[nm] = (dsv4_mtp_step){s->slot, s->P, X + HD * (size_t)s->row0, s->toks + 1, a, 0, 1};
                who[nm++] = i;
            }
            memcpy(s->last_h, X + HD * (size_t)(s->row0 + a), sizeof(float) * HD);
            s->cur = bonus;
            if (stats) {
                stats[i].steps++;
                stats[i].drafted += s->kk;
                stats[i].accepted += a;
            }
        }
        if (st == DSV4_OK && nm) st = be->mtp(be->fwd, kv, ms, nm, NULL, NULL, err);
    }
    for (int i = 0; S && i < n_seqs; i++) {
        dsv4_kv_rollback_free(&S[i].rb_main);
        dsv4_kv_rollback_free(&S[i].rb_mtp);
    }
    free(S); free(logits); free(X); free(Y); free(ms); free(steps); free(who); free(act); free(pslots); free(pcounts);
    return st;
}
