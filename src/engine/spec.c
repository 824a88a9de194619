/* spec.c — MTP rows kept in step with a sequence, and the speculative round (greedy or sampled) over a
 * batch, with greedy decoding as a loop of rounds (see spec.h; the pure rule and controller are in
 * spec_rule.c).
 *
 * A round (dsv4_spec_round) at sequence length P with the pending token t_P (not yet fed):
 *   draft   the MTP row P-1 (h = last_h, token t_P) is final: it is committed, and its logits give d1;
 *           chained rows P, P+1 (h = the previous MTP row's own HC state, token = the previous draft) give
 *           d2, d3 and are draft rows: their ring records are saved first and restored after drafting;
 *   verify  one forward of [t_P, d1..dk] at P..P+k with the logits of every row; the cache bytes that
 *           forward may change are saved first (kv_rollback.h);
 *   accept  greedy: a = the number of leading drafts equal to the argmax of the row before them; the round
 *           emits d1..da and the argmax b of row a (the main model's own token). Sampled: drafts were drawn
 *           from q (the sampler over the MTP logits); row j's p decides d_{j+1} by the rejection rule, the
 *           first rejection gives b from the residual, and after k acceptances b is drawn from row k's p;
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

#define ROW_TOKENS (DSV4_SPEC_MAX_DRAFT + 1)   /* verification rows of a sequence, at most */

/* The sampler's greedy rule (larger logit, then lower id; NaN never wins), so speculative and plain
 * greedy decoding pick the same token from the same logits. */
static int argmax(const float *l, int V) { return dsv4_sample_greedy(l, V); }

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
        DSV4_TRY(dsv4_mtp_check_sync(kv, steps[i].slot, err));
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

/* Per-sequence scratch of one round (index = the sequence's place in the round's list). */
typedef struct spec_seq {
    float *y;                                /* [HD] the last draft row's own HC state (chain input) */
    long P;                                  /* length at the start of the round */
    int kk, n, row0;                         /* drafts, verification rows, first row in the step */
    int32_t toks[ROW_TOKENS];                /* cur, d1 .. dkk */
    double *q;                               /* [DSV4_SPEC_MAX_DRAFT, V] draft distributions (sampled) */
    dsv4_sampler dsamp;                      /* the sampler drafts are drawn with (copy of the sequence's) */
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

struct dsv4_spec_ws {
    dsv4_spec_backend be;    /* the forward the rounds run over */
    int cap, V;
    size_t HD;
    spec_seq *S;             /* [cap] */
    float *logits;           /* [cap * ROW_TOKENS, V] */
    float *X;                /* [cap * ROW_TOKENS, HD] verification rows' final HC states */
    float *Y;                /* [2 * cap, HD]: the chain states (S[i].y), then the MTP forward's output */
    dsv4_mtp_step *ms;       /* [cap] */
    dsv4_seq_step *steps;    /* [cap] */
    int *who, *pslots, *pcounts;
    double *q;               /* [cap, DSV4_SPEC_MAX_DRAFT, V], allocated by the first sampled round */
    double *p;               /* [V] the main model's distribution of one row */
    float *l;                /* [V] a penalized copy of one logits row */
    dsv4_sampler_ws sws;     /* sampler scratch (with q) */
};

void dsv4_spec_ws_destroy(dsv4_spec_ws *ws) {
    if (!ws) return;
    for (int i = 0; ws->S && i < ws->cap; i++) {
        dsv4_kv_rollback_free(&ws->S[i].rb_main);
        dsv4_kv_rollback_free(&ws->S[i].rb_mtp);
        dsv4_sampler_free(&ws->S[i].dsamp);
    }
    dsv4_sampler_ws_free(&ws->sws);
    free(ws->S); free(ws->logits); free(ws->X); free(ws->Y); free(ws->ms); free(ws->steps);
    free(ws->who); free(ws->pslots); free(ws->pcounts); free(ws->q); free(ws->p); free(ws->l);
    free(ws);
}

int dsv4_spec_ws_capacity(const dsv4_spec_ws *ws) { return ws ? ws->cap : 0; }

dsv4_status dsv4_spec_ws_create(const dsv4_spec_backend *be, dsv4_kv_manager *kv, int max_seqs, dsv4_spec_ws **out,
                                dsv4_err *err) {
    *out = NULL;
    const dsv4_config *c = be->model->cfg;
    if (max_seqs < 1) return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "spec: workspace for %d sequences", max_seqs);
    dsv4_spec_ws *ws = calloc(1, sizeof *ws);
    if (!ws) return dsv4_err_set(err, DSV4_ERR_NOMEM, "spec: out of memory");
    ws->be = *be;
    ws->cap = max_seqs;
    ws->V = c->vocab_size;
    ws->HD = (size_t)c->hc_mult * c->dim;
    const size_t R = (size_t)max_seqs * ROW_TOKENS;
    ws->S = calloc((size_t)max_seqs, sizeof *ws->S);
    ws->logits = malloc(sizeof(float) * (size_t)ws->V * R);
    ws->X = malloc(sizeof(float) * ws->HD * R);
    ws->Y = malloc(sizeof(float) * ws->HD * (size_t)max_seqs * 2);
    ws->ms = calloc((size_t)max_seqs, sizeof *ws->ms);
    ws->steps = calloc((size_t)max_seqs, sizeof *ws->steps);
    ws->who = calloc((size_t)max_seqs, sizeof *ws->who);
    ws->pslots = calloc((size_t)max_seqs, sizeof *ws->pslots);
    ws->pcounts = calloc((size_t)max_seqs, sizeof *ws->pcounts);
    dsv4_status st = DSV4_OK;
    if (!ws->S || !ws->logits || !ws->X || !ws->Y || !ws->ms || !ws->steps || !ws->who || !ws->pslots || !ws->pcounts)
        st = dsv4_err_set(err, DSV4_ERR_NOMEM, "spec: out of memory");
    for (int i = 0; st == DSV4_OK && i < max_seqs; i++) {
        ws->S[i].y = ws->Y + ws->HD * (size_t)i;
        if ((st = dsv4_kv_rollback_init(&ws->S[i].rb_main, kv, ROW_TOKENS, err)) == DSV4_OK)
            st = dsv4_kv_rollback_init(&ws->S[i].rb_mtp, kv, DSV4_SPEC_MAX_DRAFT - 1, err);
    }
    if (st != DSV4_OK) {
        dsv4_spec_ws_destroy(ws);
        return st;
    }
    *out = ws;
    return DSV4_OK;
}

/* The scratch of sampled rounds, on first use. */
static dsv4_status ws_sampling(dsv4_spec_ws *ws, dsv4_err *err) {
    if (ws->q) return DSV4_OK;
    const size_t V = (size_t)ws->V;
    ws->p = malloc(sizeof(double) * V);
    ws->l = malloc(sizeof(float) * V);
    double *q = malloc(sizeof(double) * V * DSV4_SPEC_MAX_DRAFT * (size_t)ws->cap);
    if (!ws->p || !ws->l || !q) {
        free(q);
        return dsv4_err_set(err, DSV4_ERR_NOMEM, "spec: out of memory (draft distributions)");
    }
    DSV4_TRY(dsv4_sampler_ws_init(&ws->sws, ws->V, err));
    ws->q = q;
    for (int i = 0; i < ws->cap; i++) ws->S[i].q = q + V * DSV4_SPEC_MAX_DRAFT * (size_t)i;
    return DSV4_OK;
}

/* Draft j+1 (for position P+1+j) of a sampled sequence from the MTP logits row: q_j = the draft sampler's
 * distribution over the penalized row (its penalties count d1..dj, which it has accepted), drawn with the
 * DRAFT stream's uniform of that output index. */
static dsv4_status draft_sampled(dsv4_spec_ws *ws, spec_seq *s, int slot, int j, float *row,
                                 const dsv4_spec_hooks *h, int32_t *x, dsv4_err *err) {
    const int V = ws->V;
    if (h->draft_logits) h->draft_logits(h->user, slot, s->P + 1 + j, s->toks[j], row);
    memcpy(ws->l, row, sizeof(float) * (size_t)V);
    dsv4_sampler_apply_penalties(&s->dsamp, ws->l);
    double *q = s->q + (size_t)j * V;
    dsv4_sampler_probs(&s->dsamp, &ws->sws, ws->l, q);
    *x = dsv4_spec_draw(q, V, dsv4_spec_uniform(s->dsamp.params.seed, DSV4_SPEC_STREAM_DRAFT, s->dsamp.step));
    DSV4_ASSERT(*x >= 0);
    return dsv4_sampler_accept(&s->dsamp, *x, err);
}

/* Acceptance of a sampled sequence's drafts against its verification rows lg [kk+1, V] (see the file
 * comment); every token produced is accepted into sm. forced >= 0: that many drafts accepted unseen. */
static dsv4_status accept_sampled(dsv4_spec_ws *ws, spec_seq *s, dsv4_sampler *sm, const float *lg, int forced,
                                  dsv4_spec_rule rule, int *a_out, int32_t *last, dsv4_err *err) {
    const int V = ws->V;
    int a = 0;
    int32_t tok = -1;
    for (;;) {
        memcpy(ws->l, lg + (size_t)a * V, sizeof(float) * (size_t)V);
        dsv4_sampler_apply_penalties(sm, ws->l);
        if (a == s->kk || a == forced) { /* the bonus: plain sampling's draw of this output index */
            tok = dsv4_sampler_pick(sm, &ws->sws, ws->l);
            break;
        }
        const int32_t x = s->toks[a + 1];
        int ok = 1;
        if (forced < 0 && rule != DSV4_SPEC_RULE_ACCEPT_ALWAYS) {
            dsv4_sampler_probs(sm, &ws->sws, ws->l, ws->p);
            const uint64_t seed = sm->params.seed, n = sm->step;
            const double u_res = dsv4_spec_uniform(seed, DSV4_SPEC_STREAM_MAIN, n);
            ok = dsv4_spec_accept(ws->p, s->q + (size_t)a * V, V, x,
                                  dsv4_spec_uniform(seed, DSV4_SPEC_STREAM_ACCEPT, n), u_res, &tok);
            if (!ok && rule == DSV4_SPEC_RULE_RESAMPLE_P) tok = dsv4_spec_draw(ws->p, V, u_res);
        }
        if (!ok) break;
        DSV4_TRY(dsv4_sampler_accept(sm, x, err));
        a++;
    }
    *a_out = a;
    *last = tok;
    return dsv4_sampler_accept(sm, tok, err);
}

dsv4_status dsv4_spec_round(dsv4_spec_ws *ws, dsv4_kv_manager *kv, int n, const dsv4_spec_seq *seqs,
                            int32_t *out, int *n_out, const dsv4_spec_hooks *hooks, dsv4_err *err) {
    static const dsv4_spec_hooks no_hooks;
    if (!ws) return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "spec: no workspace");
    const dsv4_spec_backend *be = &ws->be;
    const dsv4_model *m = be->model;
    const dsv4_config *c = m->cfg;
    const int V = c->vocab_size, L = c->n_layers;
    const size_t HD = (size_t)c->hc_mult * c->dim;
    if (!hooks) hooks = &no_hooks;
    if (!m->w.mtp) return dsv4_err_set(err, DSV4_ERR_UNSUPPORTED, "spec: the checkpoint has no MTP block (mtp.0.*)");
    if (!ws || n < 1 || n > ws->cap || !seqs || !out || !n_out)
        return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "spec: %d sequences in a round (1..%d)", n, ws ? ws->cap : 0);
    int sampled = 0;
    for (int i = 0; i < n; i++) {
        const dsv4_spec_seq *q = &seqs[i];
        if (q->cur < 0 || q->cur >= V)
            return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "spec: token id %d out of range [0, %d)", q->cur, V);
        if (q->k < 0 || q->k > DSV4_SPEC_MAX_DRAFT)
            return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "spec: %d draft tokens (0..%d)", q->k, DSV4_SPEC_MAX_DRAFT);
        if (!q->last_h) return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "spec: no last_h for sequence %d", i);
        if (q->sampler && q->sampler->vocab != V)
            return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "spec: sampler of vocab %d for a model of %d",
                                q->sampler->vocab, V);
        for (int j = 0; j < i; j++)
            if (seqs[j].slot == q->slot)
                return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "spec: slot %d listed twice", q->slot);
        DSV4_TRY(dsv4_mtp_check_sync(kv, q->slot, err));
        sampled |= q->sampler != NULL;
    }
    if (sampled) DSV4_TRY(ws_sampling(ws, err));
    spec_seq *S = ws->S;
    float *logits = ws->logits, *X = ws->X, *Ynext = ws->Y + HD * (size_t)ws->cap;
    dsv4_mtp_step *ms = ws->ms;
    int *who = ws->who;
    for (int i = 0; i < n; i++) {
        spec_seq *s = &S[i];
        s->P = dsv4_kv_access_seq_len(kv, seqs[i].slot);
        s->kk = s->P == 0 ? 0 : seqs[i].k; /* no h yet: the first token is a plain step */
        s->n = s->kk + 1;
        s->toks[0] = seqs[i].cur;
        ws->pslots[i] = seqs[i].slot;
        ws->pcounts[i] = s->n;
    }
    /* Blocks for the verification first, so that a full cache fails before any state changes. */
    DSV4_TRY(dsv4_kv_access_prepare(kv, ws->pslots, ws->pcounts, n, err));
    dsv4_status st = DSV4_OK;
    for (int i = 0; st == DSV4_OK && i < n; i++)
        if (seqs[i].sampler && S[i].kk > 0) st = dsv4_sampler_copy(&S[i].dsamp, seqs[i].sampler, err);
    if (st != DSV4_OK) return st;
    /* Draft: the final MTP row P-1 of every sequence (d1), then the chained draft rows (d2, d3). */
    int nm = 0;
    for (int i = 0; i < n; i++) {
        spec_seq *s = &S[i];
        if (s->P == 0) continue;
        ms[nm] = (dsv4_mtp_step){seqs[i].slot, s->P - 1, seqs[i].last_h, &s->toks[0], 1, 1, 1};
        who[nm++] = i;
    }
    if (nm && (st = be->mtp(be->fwd, kv, ms, nm, logits, Ynext, err)) != DSV4_OK) return st;
    for (int j = 0; st == DSV4_OK && j < nm; j++) {
        const int i = who[j];
        spec_seq *s = &S[i];
        float *row = logits + (size_t)j * V;
        if (s->kk > 0) {
            if (seqs[i].sampler) st = draft_sampled(ws, s, seqs[i].slot, 0, row, hooks, &s->toks[1], err);
            else s->toks[1] = argmax(row, V);
        }
        memcpy(s->y, Ynext + HD * (size_t)j, sizeof(float) * HD);
        if (st == DSV4_OK && s->kk > 1)
            st = dsv4_kv_rollback_save(&s->rb_mtp, kv, seqs[i].slot, L, L + 1, s->P, s->kk - 1, err);
    }
    for (int d = 1; st == DSV4_OK && d < DSV4_SPEC_MAX_DRAFT; d++) {
        nm = 0;
        for (int i = 0; i < n; i++) {
            spec_seq *s = &S[i];
            if (s->P == 0 || s->kk <= d) continue;
            ms[nm] = (dsv4_mtp_step){seqs[i].slot, s->P + d - 1, s->y, &s->toks[d], 1, 1, 0};
            who[nm++] = i;
        }
        if (!nm) break;
        if ((st = be->mtp(be->fwd, kv, ms, nm, logits, Ynext, err)) != DSV4_OK) break;
        for (int j = 0; st == DSV4_OK && j < nm; j++) {
            const int i = who[j];
            spec_seq *s = &S[i];
            float *row = logits + (size_t)j * V;
            if (seqs[i].sampler) st = draft_sampled(ws, s, seqs[i].slot, d, row, hooks, &s->toks[d + 1], err);
            else s->toks[d + 1] = argmax(row, V);
            memcpy(s->y, Ynext + HD * (size_t)j, sizeof(float) * HD);
        }
    }
    for (int i = 0; i < n; i++) dsv4_kv_rollback_restore(&S[i].rb_mtp, kv, 0);
    if (st != DSV4_OK) return st;
    for (int i = 0; hooks->draft && i < n; i++) {
        spec_seq *s = &S[i];
        if (s->kk > 0 && !seqs[i].sampler) hooks->draft(hooks->user, seqs[i].slot, s->P, s->toks[0], s->kk, s->toks + 1);
    }
    /* Verify: one forward with kk+1 rows per sequence and the logits of each. */
    int rows = 0;
    for (int i = 0; i < n && st == DSV4_OK; i++) {
        spec_seq *s = &S[i];
        st = dsv4_kv_rollback_save(&s->rb_main, kv, seqs[i].slot, 0, L, s->P, s->n, err);
        ws->steps[i] = (dsv4_seq_step){seqs[i].slot, s->toks, s->n, DSV4_LOGITS_ALL};
        s->row0 = rows;
        rows += s->n;
    }
    if (st == DSV4_OK) st = be->step(be->fwd, kv, ws->steps, n, logits, X, err);
    if (st != DSV4_OK) { /* nothing was written: forget the saves */
        for (int i = 0; i < n; i++) dsv4_kv_rollback_restore(&S[i].rb_main, kv, S[i].rb_main.n);
        return st;
    }
    /* Accept, undo the rejected rows, then the MTP rows of the accepted drafts. */
    nm = 0;
    for (int i = 0; i < n && st == DSV4_OK; i++) {
        spec_seq *s = &S[i];
        const float *lg = logits + (size_t)s->row0 * V;
        int forced = -1;
        if (hooks->accept && s->kk > 0) {
            forced = hooks->accept(hooks->user, seqs[i].slot, s->kk);
            forced = forced < 0 ? 0 : forced > s->kk ? s->kk : forced;
        }
        int a = 0;
        int32_t last = -1;
        if (seqs[i].sampler) {
            st = accept_sampled(ws, s, seqs[i].sampler, lg, forced, hooks->rule, &a, &last, err);
        } else {
            if (forced >= 0) a = forced;
            else
                while (a < s->kk && argmax(lg + (size_t)a * V, V) == s->toks[a + 1]) a++;
            last = argmax(lg + (size_t)a * V, V);
        }
        int32_t *o = out + (size_t)i * ROW_TOKENS;
        for (int j = 0; j < a; j++) o[j] = s->toks[j + 1];
        o[a] = last;
        n_out[i] = a + 1;
        dsv4_kv_rollback_restore(&s->rb_main, kv, a + 1);
        if (st == DSV4_OK) st = dsv4_kv_manager_truncate(kv, seqs[i].slot, s->P + a + 1, err);
        if (a > 0) {
            ms[nm] = (dsv4_mtp_step){seqs[i].slot, s->P, X + HD * (size_t)s->row0, s->toks + 1, a, 0, 1};
            who[nm++] = i;
        }
        memcpy(seqs[i].last_h, X + HD * (size_t)(s->row0 + a), sizeof(float) * HD);
    }
    if (st == DSV4_OK && nm) st = be->mtp(be->fwd, kv, ms, nm, NULL, NULL, err);
    return st;
}

dsv4_status dsv4_spec_decode_greedy(dsv4_forward *f, dsv4_kv_manager *kv, int n_seqs, const int *slots,
                                    float *const *last_h, const int32_t *first, int n_steps, int k, int32_t *out,
                                    dsv4_spec_stats *stats, dsv4_spec_draft_fn draft_hook, void *hook_user,
                                    dsv4_err *err) {
    dsv4_spec_backend cpu;
    dsv4_spec_backend_cpu(f, &cpu);
    const dsv4_spec_backend *be = &cpu;
    const dsv4_model *m = be->model;
    const int V = m->cfg->vocab_size;
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
        DSV4_TRY(dsv4_mtp_check_sync(kv, slots[i], err));
    }
    if (stats) memset(stats, 0, sizeof *stats * (size_t)n_seqs);
    dsv4_spec_ws *ws = NULL;
    DSV4_TRY(dsv4_spec_ws_create(be, kv, n_seqs, &ws, err));
    dsv4_spec_seq *q = calloc((size_t)n_seqs, sizeof *q);
    int *act = calloc((size_t)n_seqs, sizeof *act), *produced = calloc((size_t)n_seqs, sizeof *produced);
    int *n_out = calloc((size_t)n_seqs, sizeof *n_out);
    int32_t *cur = malloc(sizeof *cur * (size_t)n_seqs), *got = malloc(sizeof *got * (size_t)n_seqs * ROW_TOKENS);
    dsv4_status st = DSV4_OK;
    if (!q || !act || !produced || !n_out || !cur || !got) st = dsv4_err_set(err, DSV4_ERR_NOMEM, "spec: out of memory");
    for (int i = 0; st == DSV4_OK && i < n_seqs; i++) cur[i] = first[i];
    const dsv4_spec_hooks hooks = {draft_hook, NULL, NULL, hook_user, DSV4_SPEC_RULE_EXACT};
    while (st == DSV4_OK) {
        int n_act = 0;
        for (int i = 0; i < n_seqs; i++) {
            if (produced[i] >= n_steps) continue;
            int left = n_steps - produced[i] - 1;
            q[n_act] = (dsv4_spec_seq){slots[i], last_h[i], cur[i], left < k ? left : k, NULL};
            act[n_act++] = i;
        }
        if (!n_act) break;
        if ((st = dsv4_spec_round(ws, kv, n_act, q, got, n_out, &hooks, err)) != DSV4_OK) break;
        for (int j = 0; j < n_act; j++) {
            const int i = act[j];
            for (int t = 0; t < n_out[j]; t++) out[(size_t)produced[i]++ * n_seqs + i] = got[(size_t)j * ROW_TOKENS + t];
            cur[i] = got[(size_t)j * ROW_TOKENS + n_out[j] - 1];
            if (stats) {
                stats[i].steps++;
                stats[i].drafted += ws->S[j].kk;
                stats[i].accepted += n_out[j] - 1;
            }
        }
    }
    dsv4_spec_ws_destroy(ws);
    free(q); free(act); free(produced); free(n_out); free(cur); free(got);
    return st;
}
