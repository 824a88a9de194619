/* spec.h — the MTP draft head kept in step with a sequence, and speculative decoding (greedy, and sampled by
 * the rejection rule) on the CPU reference backend, with its per-sequence adaptive controller (issue 15;
 * spec §4.10). Written against forward.h, the KV manager and the sampler only.
 *
 * MTP bookkeeping of a sequence ("in sync"): the MTP block has run every row whose next token is known,
 * so its position (dsv4_kv_manager_mtp_pos) is max(len - 1, 0), and last_h holds the main model's final
 * hyper-connection state at position len - 1 (the h of the row that waits for the next token). The caller
 * owns last_h ([hc * D] floats per sequence); dsv4_spec_step keeps both in sync, and so does
 * dsv4_spec_decode_greedy, which leaves the KV state bitwise equal to that of a run that fed the same
 * accepted tokens through dsv4_spec_step (rejected drafts leave no trace: kv_rollback.h). */
#ifndef DSV4_ENGINE_SPEC_H
#define DSV4_ENGINE_SPEC_H

#include <stdint.h>

#include "dsv4.h"
#include "engine/forward.h"
#include "kv/kv_manager.h"
#include "dsv4_sampler.h"

#ifdef __cplusplus
extern "C" {
#endif

#define DSV4_SPEC_MAX_DRAFT 3
_Static_assert(DSV4_SPEC_MAX_DRAFT == DSV4_SPEC_MAX_K, "the public and the internal draft limits differ");

/* As dsv4_forward_step, then the MTP block runs (and commits) every row of each sequence whose next token
 * became known: position pos0 - 1 (with last_h[i], when the sequence had tokens) and pos0 .. pos0+n-2.
 * last_h[i] ([hc*D], borrowed, of steps[i]'s sequence) is updated to the step's last row. mtp_logits
 * (optional): [*n_mtp_rows, vocab], rows in step order then position order. Every sequence must be in
 * sync (INVALID_ARG otherwise, nothing changed). */
dsv4_status dsv4_spec_step(dsv4_forward *f, dsv4_kv_manager *kv, const dsv4_seq_step *steps, int n_steps,
                           float *const *last_h, float *logits, float *mtp_logits, int *n_mtp_rows, dsv4_err *err);

typedef struct dsv4_spec_stats {
    long steps;      /* verification forwards */
    long drafted;    /* draft tokens proposed */
    long accepted;   /* draft tokens accepted */
} dsv4_spec_stats;

/* The forward a speculative round runs over: the CPU reference (dsv4_spec_backend_cpu) or the CUDA forward
 * (engine.c). Both calls have forward.h's contracts; step's hidden (optional) gets the final HC state of every
 * row of the step, [rows, hc, D] FP32 in step order (dsv4_forward_hidden). The KV manager passed with it is
 * the backend's (device arenas need the memory hook's copy for the rollback, kv_rollback.h). On the GPU the
 * verification rows and a one-token decode sum in different orders, so greedy tokens are plain greedy
 * decoding's except where the main model has a near tie. */
typedef struct dsv4_spec_backend {
    void *fwd;                   /* borrowed: dsv4_forward or dsv4_forward_cuda */
    const dsv4_model *model;     /* borrowed */
    dsv4_status (*step)(void *fwd, dsv4_kv_manager *kv, const dsv4_seq_step *steps, int n_steps, float *logits,
                        float *hidden, dsv4_err *err);
    dsv4_status (*mtp)(void *fwd, dsv4_kv_manager *kv, const dsv4_mtp_step *steps, int n_steps, float *logits,
                       float *h_out, dsv4_err *err);
} dsv4_spec_backend;
void dsv4_spec_backend_cpu(dsv4_forward *f, dsv4_spec_backend *out);

/* ---- the acceptance rule and the RNG streams (spec_rule.c; docs/SAMPLING.md "Speculative sampling") ----
 * Output token number n of a request (its sampler's step when it is produced) may use up to three
 * uniforms, each a counter-based draw of its own stream: DRAFT (drawing the draft from q), ACCEPT (the
 * test u < p(x)/q(x)) and MAIN (the residual or the bonus token; MAIN is the plain sampler's stream, so a
 * token sampled without a draft is the one plain sampling would draw). */
enum { DSV4_SPEC_STREAM_MAIN = 0, DSV4_SPEC_STREAM_DRAFT = 1, DSV4_SPEC_STREAM_ACCEPT = 2 };
double dsv4_spec_uniform(uint64_t seed, int stream, uint64_t n);
/* Inverse CDF over dist[V] (need not be normalized; non-positive entries never drawn) in ascending id
 * order with u in [0, 1). All-zero dist: -1. */
int32_t dsv4_spec_draw(const double *dist, int V, double u);
/* The rejection rule of Leviathan et al. / Chen et al. at one position: draft x, drawn from q, is accepted
 * iff u < p(x) / q(x) (u in [0, 1)); returns 1 then. Otherwise *tok = a draw (with u_res) from the residual
 * norm(max(0, p - q)) (from p itself when the residual is all zero, which only rounding can cause).
 * p, q: [V] probabilities. The token is then distributed as p whatever q is. */
int dsv4_spec_accept(const double *p, const double *q, int V, int32_t x, double u, double u_res, int32_t *tok);

/* Deliberately wrong rules, for the negative controls of the statistical tests. */
typedef enum dsv4_spec_rule {
    DSV4_SPEC_RULE_EXACT = 0,
    DSV4_SPEC_RULE_ACCEPT_ALWAYS,  /* every sampled draft accepted (output = q, not p) */
    DSV4_SPEC_RULE_RESAMPLE_P      /* on rejection the token is drawn from p instead of the residual */
} dsv4_spec_rule;

/* ---- adaptive drafting (spec_rule.c; docs/SAMPLING.md "Adaptive drafting") --------------------------
 * One per sequence. A round that drafts k tokens costs `cost` plain steps (verification of k+1 rows + k
 * MTP rows, over a one-token step) and produces A tokens (1..k+1); it pays iff E[A] > cost. ema is an
 * exponential moving average (weight DSV4_SPEC_CTL_ALPHA) of A over full drafting rounds. Drafting goes off
 * when ema < cost; while off, a probe round drafts after `wait` plain steps; the wait doubles after each
 * probe that produced no more than cost (DSV4_SPEC_CTL_PROBE_MIN .. _MAX) and drops back to the minimum
 * after one that produced more, so that a sequence that never accepts loses at most (cost - 1) / (wait + 1)
 * of its speed; drafting goes back on when a probe brings ema >= cost. Pure: no clock, no I/O. */
#define DSV4_SPEC_CTL_ALPHA 0.125
#define DSV4_SPEC_CTL_PROBE_MIN 16
#define DSV4_SPEC_CTL_PROBE_MAX 1024
typedef struct dsv4_spec_ctl {
    double cost;     /* a round's cost in plain steps */
    double ema;      /* tokens per full drafting round (starts at k+1: optimistic) */
    int k;           /* drafts of a full round */
    int on;          /* 1: every round drafts; 0: plain steps, probing */
    int wait;        /* off: plain steps left before the next probe */
    int interval;    /* off: the current probe interval */
} dsv4_spec_ctl;
void dsv4_spec_ctl_init(dsv4_spec_ctl *c, int k, double cost);
/* Drafts this round (k) or 0 for a plain step. */
int dsv4_spec_ctl_drafts(const dsv4_spec_ctl *c);
/* After a round that drafted `drafted` tokens (0: a plain step) and produced `produced` tokens. Only full
 * rounds (drafted == k) move the average; shorter ones (the end of a request) tell nothing of the rate. */
void dsv4_spec_ctl_record(dsv4_spec_ctl *c, int drafted, int produced);

/* ---- one speculative round over a batch (spec.c) ------------------------------------------------- */

/* Tests only: replaces the MTP's drafts of a sequence (d[0..k-1], the tokens it proposed after `first` at
 * position pos) before verification, to drive every acceptance count; the MTP block still runs as usual.
 * Greedy sequences only. */
typedef void (*dsv4_spec_draft_fn)(void *user, int slot, long pos, int32_t first, int k, int32_t *d);
/* Tests only, sampled sequences: may change the MTP logits row [vocab] from which the draft for position
 * pos (after token prev) is sampled, to choose q. */
typedef void (*dsv4_spec_draft_logits_fn)(void *user, int slot, long pos, int32_t prev, float *logits);
/* dsv4_spec_accept_fn (dsv4.h), benches only: the number of drafts to accept, whatever they are. */

typedef struct dsv4_spec_hooks {
    dsv4_spec_draft_fn draft;
    dsv4_spec_draft_logits_fn draft_logits;
    dsv4_spec_accept_fn accept;
    void *user;
    dsv4_spec_rule rule;
} dsv4_spec_hooks;

/* What one sequence asks of a round. */
typedef struct dsv4_spec_seq {
    int slot;
    float *last_h;           /* borrowed [hc*D]: the sequence's MTP state (in sync) */
    int32_t cur;             /* the pending token, fed first */
    int k;                   /* drafts, 0..DSV4_SPEC_MAX_DRAFT (0: a plain step; forced 0 on an empty sequence) */
    struct dsv4_sampler *sampler; /* borrowed; NULL: greedy (argmax, ties to the lower id). Its step is the
                                     output index of the first token this round produces; every produced
                                     token is accepted into it */
} dsv4_spec_seq;

/* Scratch of the rounds (rollback buffers, logits and hidden-state rows, draft distributions) for up to
 * max_seqs sequences per round; allocated once. */
typedef struct dsv4_spec_ws dsv4_spec_ws;
/* be is copied; its forward must outlive the workspace. */
dsv4_status dsv4_spec_ws_create(const dsv4_spec_backend *be, dsv4_kv_manager *kv, int max_seqs, dsv4_spec_ws **out,
                                dsv4_err *err);
void dsv4_spec_ws_destroy(dsv4_spec_ws *ws);
int dsv4_spec_ws_capacity(const dsv4_spec_ws *ws);

/* One round over the workspace's backend for n in-sync sequences (distinct slots): drafts seqs[i].k tokens with the MTP block (chained:
 * a draft row's own HC state is the h of the next; greedy: argmax, sampled: drawn from q = the sampler's
 * distribution over the MTP logits, penalties counting the drafts before), verifies every sequence's
 * [cur, d1..dk] in one forward with the logits of each row, accepts (greedy: the longest prefix equal to the
 * argmax of the row before; sampled: the rejection rule, dsv4_spec_accept, p = the sampler's distribution
 * over the row, exactly plain sampling's) and produces a accepted drafts plus one token from row a (greedy:
 * its argmax; sampled: the residual draw or, after k accepted drafts, the bonus drawn from p); rolls the
 * KV state back past the rejected rows and commits the MTP rows of the accepted drafts. out [n,
 * DSV4_SPEC_MAX_DRAFT + 1]: sequence i's n_out[i] = a+1 tokens at out[i*(MAX+1) ..]; the last is not fed
 * (the next round's cur); last_h is kept in sync. hooks: NULL or tests/benches. On failure a sequence may
 * be left part-way (its KV state then matches the tokens fed so far, but it may be out of MTP sync). */
dsv4_status dsv4_spec_round(dsv4_spec_ws *ws, dsv4_kv_manager *kv, int n, const dsv4_spec_seq *seqs,
                            int32_t *out, int *n_out, const dsv4_spec_hooks *hooks, dsv4_err *err);

/* Greedy speculative decoding of n_seqs in-sync sequences (slots[i], last_h[i] its state): feeds first[i]
 * to each, and produces n_steps tokens per sequence, out [n_steps, n_seqs] (as dsv4_engine_decode_greedy),
 * each the argmax (ties: lower id) of the main model's logits: exactly the tokens and the KV state of plain
 * greedy decoding (one token per forward). Rounds of dsv4_spec_round with min(k, tokens left - 1) drafts;
 * sequences accept different counts and finish when they have n_steps tokens. stats (optional):
 * [n_seqs]. One rank only. The CPU reference's forward f. */
dsv4_status dsv4_spec_decode_greedy(dsv4_forward *f, dsv4_kv_manager *kv, int n_seqs, const int *slots,
                                    float *const *last_h, const int32_t *first, int n_steps, int k, int32_t *out,
                                    dsv4_spec_stats *stats, dsv4_spec_draft_fn draft_hook, void *hook_user,
                                    dsv4_err *err);

#ifdef __cplusplus
}
#endif
#endif
