/* scheduler.c — the serving core of scheduler.h: one thread owns the engine and drives every request
 * through admission, continuous batching with chunked prefill, sampling, the output pipeline
 * (sched_output.h), prefix reuse of finished sequences and the metrics.
 *
 * Decisions
 *  - A request is its token list (prompt, then every emitted token) and n_fed, how many of them its engine
 *    sequence has consumed. What remains, toks[n_fed..n_toks), is fed next: the prompt (or its uncached
 *    suffix), later one sampled token, or a run of forced tokens. A decode row is simply a pending run of 1.
 *  - Step budget: each step takes every decode row first (1 token each; latency of running streams), then
 *    prefill chunks in admission order until step_token_budget rows are used (a long prompt is cut into
 *    chunks and continues next step). The budget is raised to max_batch so every decode fits.
 *  - Admission (FCFS, the head waits until it fits; nobody overtakes it): free running place (max_batch),
 *    an engine slot, and KV blocks for the whole remaining prompt plus one block of growth per running
 *    request; resident sequences are evicted (least recently used first) to make room.
 *  - When a step's growth does not fit in free blocks anyway: evict residents, then preempt the most
 *    recently admitted request (its sequence is closed, it goes back to the head of the queue with its
 *    tokens and sampler state and is recomputed; on the CPU backend chunking does not change a single bit,
 *    so its answer is unchanged).
 *  - Prefix rule: a new request continues a resident sequence when its prompt strictly extends the tokens
 *    that sequence was fed (the last sampled token of a finished request was never fed); the longest such
 *    wins; only the suffix is prefilled and the rest is reported as cached_tokens. Cancelled and failed
 *    requests do not become resident.
 *  - Cancellation is a flag read at every step boundary: the request ends CANCELLED and its sequence is
 *    closed there (blocks back at once).
 *  - An engine error fails only that step's requests: the step is retried one request at a time (the engine
 *    changes nothing when a step fails), and only the requests that fail alone end with ERROR.
 *  - Forced tokens are emitted in one event where content starts, accepted by the sampler (its draw index
 *    stays where a sampled run would have put it) and fed together as one chunk; only the first has
 *    logprobs from the model (the others get token_logprob 0 and no alternatives: they were not predicted).
 *
 * Threads and locks: s->mu guards the waiting queue, stopping and the stats; h->mu guards a request's event
 * queue and reference count. Lock order h->mu then s->mu (cancel signals the scheduler under h->mu so that
 * a request the scheduler let go never points at a freed scheduler); the scheduler thread never takes h->mu
 * while holding s->mu. Everything else of a request is touched by the scheduler thread only. */
#include "server/scheduler.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/status.h"
#include "server/sched_output.h"

const double dsv4_sched_hist_bounds[DSV4_SCHED_HIST_N] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                                          0.5,   1.0,    2.5,   5.0,  10.0,  25.0, 50.0, 100.0};

const char *dsv4_finish_name(dsv4_finish f) {
    static const char *const names[] = {"none", "stop", "length", "tool_calls", "malformed", "cancelled", "error"};
    return (unsigned)f < sizeof names / sizeof names[0] ? names[f] : "unknown";
}

/* ==== types ============================================================================================= */

typedef struct ev_node {
    dsv4_sched_event ev;
    struct ev_node *next;
} ev_node;

enum { R_WAITING, R_RUNNING, R_DONE };

struct dsv4_sched_req {
    /* shared with the client thread, under mu */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    dsv4_sched *s;              /* borrowed; NULL once the scheduler has let go of the request */
    int refs;                   /* client + scheduler */
    ev_node *head, *tail;       /* owned: events not yet taken */
    int final_queued, final_taken;
    dsv4_finish final_finish;
    long last_prompt, last_cached, last_completion;
    double last_ttft;
    atomic_int cancel;
    struct dsv4_sched_req *next_waiting; /* waiting queue link (under s->mu) */
    /* fixed at submit */
    char *id;                   /* owned */
    char **stops;               /* owned [n_stops] */
    int n_stops;
    int32_t *forced;            /* owned [n_forced] */
    size_t n_forced;
    size_t n_prompt;
    int max_tokens, ignore_eos, logprobs;
    double t_submit;
    /* scheduler thread only */
    int phase;
    int32_t *toks;              /* owned [cap_toks]: prompt then every emitted token */
    size_t n_toks, cap_toks;
    size_t n_fed;               /* tokens the engine sequence holds */
    int seq;                    /* engine sequence, -1 if none */
    int admitted_once, forced_done;
    long cached;                /* prompt tokens served from a resident sequence (first admission) */
    int n_gen;                  /* tokens emitted */
    dsv4_sampler sampler;
    dsv4_out out;
    double t_first;
};

typedef struct resident {
    int seq;
    int32_t *toks;              /* owned [n]: the tokens the sequence was fed */
    size_t n;
    uint64_t last_used;
} resident;

struct dsv4_sched {
    dsv4_engine *e;             /* borrowed */
    const dsv4_tokenizer *tok;  /* borrowed */
    int max_batch, max_queue, prefix_cache, quiet, headroom, vocab, eos;
    long budget, max_seq_tokens;
    dsv4_status (*hook)(void *, const dsv4_batch_item *, int, dsv4_err *); /* tests only */
    void *hook_user;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t wake;
    /* under mu */
    int stopping;
    dsv4_sched_req *wait_head, *wait_tail;
    int n_waiting;
    dsv4_sched_stats stats;
    /* scheduler thread only */
    dsv4_sched_req **run;       /* owned [max_batch], admission order */
    int n_run;
    resident *res;              /* owned [cap_res] */
    int n_res, cap_res;
    uint64_t clock;
    float *logits;              /* owned [max_batch, vocab] */
    dsv4_batch_item *items;     /* owned [max_batch] */
    dsv4_sched_req **item_req;  /* owned [max_batch] */
    int n_items;
    dsv4_sampler_ws ws;
};

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* ==== events and request lifetime ======================================================================= */

void dsv4_sched_event_free(dsv4_sched_event *ev) {
    if (!ev) return;
    free(ev->reasoning);
    free(ev->content);
    for (int i = 0; i < ev->n_tool_calls; i++) {
        free(ev->tool_calls[i].name);
        free(ev->tool_calls[i].arguments);
    }
    free(ev->tool_calls);
    free(ev->tokens);
    free(ev->logprobs);
    memset(ev, 0, sizeof *ev);
}

/* Frees what only the scheduler uses (called when the request ends, and again harmlessly at free). */
static void req_drop_work(dsv4_sched_req *r) {
    dsv4_sampler_free(&r->sampler);
    dsv4_out_free(&r->out);
    free(r->toks);
    r->toks = NULL;
    r->n_toks = r->cap_toks = 0;
}

static void req_free(dsv4_sched_req *r) {
    for (ev_node *n = r->head, *next; n; n = next) {
        next = n->next;
        dsv4_sched_event_free(&n->ev);
        free(n);
    }
    req_drop_work(r);
    for (int i = 0; i < r->n_stops; i++) free(r->stops[i]);
    free(r->stops);
    free(r->forced);
    free(r->id);
    pthread_cond_destroy(&r->cv);
    pthread_mutex_destroy(&r->mu);
    free(r);
}

static void req_unref(dsv4_sched_req *r, int scheduler) {
    pthread_mutex_lock(&r->mu);
    if (scheduler) r->s = NULL;
    int left = --r->refs;
    pthread_mutex_unlock(&r->mu);
    if (!left) req_free(r);
}

static void req_push_event(dsv4_sched_req *r, ev_node *n) {
    pthread_mutex_lock(&r->mu);
    if (r->tail) r->tail->next = n;
    else r->head = n;
    r->tail = n;
    r->last_prompt = n->ev.prompt_tokens;
    r->last_cached = n->ev.cached_tokens;
    r->last_completion = n->ev.completion_tokens;
    r->last_ttft = n->ev.ttft_s;
    if (n->ev.finish != DSV4_FINISH_NONE) {
        r->final_queued = 1;
        r->final_finish = n->ev.finish;
    }
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

static void hist_observe(long *bucket, double *sum, long *count, double v) {
    for (int i = 0; i < DSV4_SCHED_HIST_N; i++)
        if (v <= dsv4_sched_hist_bounds[i]) bucket[i]++;
    *sum += v;
    (*count)++;
}

/* ==== residents (prefix cache) ========================================================================== */

static void resident_drop(dsv4_sched *s, int i, int close_seq) {
    if (close_seq) dsv4_engine_seq_close(s->e, s->res[i].seq);
    free(s->res[i].toks);
    s->res[i] = s->res[--s->n_res];
}

/* Evicts the least recently used resident other than `keep` (-1: none kept). Returns 0 if there is none.
 * keep is updated if the array moves it. */
static int evict_lru(dsv4_sched *s, int *keep) {
    int best = -1;
    for (int i = 0; i < s->n_res; i++)
        if ((!keep || i != *keep) && (best < 0 || s->res[i].last_used < s->res[best].last_used)) best = i;
    if (best < 0) return 0;
    int last = s->n_res - 1;
    resident_drop(s, best, 1);
    if (keep && *keep == last) *keep = best;
    return 1;
}

/* Longest resident whose fed tokens are a strict prefix of toks[0..n); -1 if none. */
static int find_prefix(const dsv4_sched *s, const int32_t *toks, size_t n) {
    int best = -1;
    for (int i = 0; i < s->n_res; i++) {
        const resident *r = &s->res[i];
        if (r->n == 0 || r->n >= n || (best >= 0 && r->n <= s->res[best].n)) continue;
        if (!memcmp(r->toks, toks, sizeof *toks * r->n)) best = i;
    }
    return best;
}

/* ==== finishing ========================================================================================= */

/* Sends one event: tokens emitted this step (may be 0) and the text they produced; when finish != NONE,
 * ends the request: flushes the output, frees or keeps its sequence, updates the stats, logs one line and
 * lets go of the request. */
static void deliver(dsv4_sched *s, dsv4_sched_req *r, const int32_t *toks, const dsv4_logprobs *lps, int n,
                    dsv4_finish finish, const char *error) {
    ev_node *node = calloc(1, sizeof *node);
    dsv4_sched_event *ev = node ? &node->ev : NULL;
    if (finish != DSV4_FINISH_NONE) finish = dsv4_out_finish(&r->out, finish);
    if (ev) {
        if (n > 0 && (ev->tokens = malloc(sizeof *toks * (size_t)n))) {
            memcpy(ev->tokens, toks, sizeof *toks * (size_t)n);
            ev->n_tokens = n;
            if (lps && (ev->logprobs = malloc(sizeof *lps * (size_t)n))) memcpy(ev->logprobs, lps, sizeof *lps * (size_t)n);
        }
        if (dsv4_out_take(&r->out, ev, finish != DSV4_FINISH_NONE) != DSV4_OK && finish == DSV4_FINISH_NONE) {
            finish = DSV4_FINISH_ERROR;
            error = "out of memory while building an event";
        }
        if (error) snprintf(ev->error, sizeof ev->error, "%s", error);
        ev->finish = finish;
        ev->prompt_tokens = (long)r->n_prompt;
        ev->cached_tokens = r->cached;
        ev->completion_tokens = r->n_gen;
        ev->ttft_s = r->t_first > 0 ? r->t_first - r->t_submit : 0.0;
    }
    if (finish == DSV4_FINISH_NONE) {
        if (node) req_push_event(r, node);
        return;
    }
    /* The end of the request: it leaves the running list now (r may be freed below). */
    r->phase = R_DONE;
    for (int i = 0; i < s->n_run; i++)
        if (s->run[i] == r) s->run[i] = NULL;
    if (r->seq >= 0) {
        int keep = s->prefix_cache && finish != DSV4_FINISH_CANCELLED && finish != DSV4_FINISH_ERROR &&
                   r->n_fed > 0 && s->n_res < s->cap_res;
        int32_t *fed = keep ? malloc(sizeof *fed * r->n_fed) : NULL;
        if (fed) {
            memcpy(fed, r->toks, sizeof *fed * r->n_fed);
            s->res[s->n_res++] = (resident){r->seq, fed, r->n_fed, ++s->clock};
        } else {
            dsv4_engine_seq_close(s->e, r->seq);
        }
        r->seq = -1;
    }
    double t_end = now_s();
    pthread_mutex_lock(&s->mu);
    s->stats.requests_total++;
    if (finish == DSV4_FINISH_ERROR) s->stats.requests_failed_total++;
    if (r->n_gen > 1 && r->t_first > 0)
        hist_observe(s->stats.tpot_bucket, &s->stats.tpot_sum, &s->stats.tpot_count,
                     (t_end - r->t_first) / (double)(r->n_gen - 1));
    pthread_mutex_unlock(&s->mu);
    if (!s->quiet)
        fprintf(stderr, "dsv4 sched: request %s finish=%s prompt=%zu cached=%ld completion=%d ttft=%.3fs total=%.3fs%s%s\n",
                r->id ? r->id : "-", dsv4_finish_name(finish), r->n_prompt, r->cached, r->n_gen,
                r->t_first > 0 ? r->t_first - r->t_submit : 0.0, t_end - r->t_submit, error ? " error: " : "",
                error ? error : "");
    req_drop_work(r);
    if (node) req_push_event(r, node);
    else {
        /* No memory for the final event: still mark the end so next_event returns. */
        pthread_mutex_lock(&r->mu);
        r->final_queued = 1;
        r->final_finish = finish;
        pthread_cond_broadcast(&r->cv);
        pthread_mutex_unlock(&r->mu);
    }
    req_unref(r, 1);
}

static void run_remove_done(dsv4_sched *s) {
    int k = 0;
    for (int i = 0; i < s->n_run; i++)
        if (s->run[i]) s->run[k++] = s->run[i];
    s->n_run = k;
}

/* ==== generation ======================================================================================== */

static int push_tok(dsv4_sched_req *r, int32_t t) {
    if (r->n_toks == r->cap_toks) {
        size_t cap = r->cap_toks * 2 + 16;
        int32_t *p = realloc(r->toks, sizeof *p * cap);
        if (!p) return -1;
        r->toks = p;
        r->cap_toks = cap;
    }
    r->toks[r->n_toks++] = t;
    r->n_gen++;
    return 0;
}

static dsv4_finish out_state_finish(dsv4_out_state st) {
    return st == DSV4_OUT_GOING ? DSV4_FINISH_NONE : DSV4_FINISH_STOP; /* dsv4_out_finish refines it */
}

static dsv4_finish limits(const dsv4_sched *s, const dsv4_sched_req *r) {
    if (r->max_tokens > 0 && r->n_gen >= r->max_tokens) return DSV4_FINISH_LENGTH;
    if ((long)r->n_toks >= s->max_seq_tokens) return DSV4_FINISH_LENGTH;
    return DSV4_FINISH_NONE;
}

/* The request's sequence has consumed all its tokens and logits[vocab] predicts the next: emit one sampled
 * token, or the forced run, and deliver the event. */
static void generate(dsv4_sched *s, dsv4_sched_req *r, const float *logits) {
    int nf = r->forced_done || !r->n_forced || !dsv4_out_at_content(&r->out) ? 0 : (int)r->n_forced;
    int cap = nf ? nf : 1;
    int32_t one_tok;
    dsv4_logprobs one_lp;
    int32_t *toks = nf ? malloc(sizeof *toks * (size_t)nf) : &one_tok;
    dsv4_logprobs *lps = nf ? calloc((size_t)nf, sizeof *lps) : &one_lp;
    dsv4_finish fin = DSV4_FINISH_NONE;
    const char *error = NULL;
    dsv4_err err = {{0}};
    int n = 0;
    if (!toks || !lps) {
        fin = DSV4_FINISH_ERROR;
        error = "out of memory (forced tokens)";
        goto out;
    }
    if (nf) {
        r->forced_done = 1;
        for (int k = 0; k < cap && fin == DSV4_FINISH_NONE; k++) {
            int32_t t = r->forced[k];
            if (k == 0) dsv4_logprobs_compute(logits, s->vocab, t, r->logprobs, &lps[0]);
            else lps[k] = (dsv4_logprobs){0};
            if (dsv4_sampler_accept(&r->sampler, t, &err) != DSV4_OK || push_tok(r, t)) {
                fin = DSV4_FINISH_ERROR;
                error = err.msg[0] ? err.msg : "out of memory (forced tokens)";
                break;
            }
            toks[n++] = t;
            fin = out_state_finish(dsv4_out_push(&r->out, t));
            if (fin == DSV4_FINISH_NONE) fin = limits(s, r);
        }
        goto out;
    }
    dsv4_sample_out so;
    if (dsv4_sampler_next(&r->sampler, &s->ws, logits, &so, &err) != DSV4_OK || push_tok(r, so.token)) {
        fin = DSV4_FINISH_ERROR;
        error = err.msg[0] ? err.msg : "out of memory (sampler)";
        goto out;
    }
    toks[n] = so.token;
    lps[n] = so.lp;
    n++;
    if ((so.token == s->eos && !r->ignore_eos) || so.is_stop) fin = DSV4_FINISH_STOP;
    else fin = out_state_finish(dsv4_out_push(&r->out, so.token));
    if (fin == DSV4_FINISH_NONE) fin = limits(s, r);
out:
    if (n && r->t_first == 0) {
        r->t_first = now_s();
        pthread_mutex_lock(&s->mu);
        hist_observe(s->stats.ttft_bucket, &s->stats.ttft_sum, &s->stats.ttft_count, r->t_first - r->t_submit);
        pthread_mutex_unlock(&s->mu);
    }
    if (n) {
        pthread_mutex_lock(&s->mu);
        s->stats.generation_tokens_total += n;
        pthread_mutex_unlock(&s->mu);
    }
    deliver(s, r, n ? toks : NULL, r->logprobs > 0 ? lps : NULL, n, fin, error);
    if (nf) {
        free(toks);
        free(lps);
    }
}

/* ==== admission ========================================================================================= */

static dsv4_sched_req *waiting_head(dsv4_sched *s) {
    pthread_mutex_lock(&s->mu);
    dsv4_sched_req *h = s->wait_head;
    pthread_mutex_unlock(&s->mu);
    return h;
}

static void waiting_pop_head(dsv4_sched *s) {
    pthread_mutex_lock(&s->mu);
    dsv4_sched_req *h = s->wait_head;
    s->wait_head = h->next_waiting;
    if (!s->wait_head) s->wait_tail = NULL;
    h->next_waiting = NULL;
    s->n_waiting--;
    pthread_mutex_unlock(&s->mu);
}

static void waiting_push_front(dsv4_sched *s, dsv4_sched_req *r) {
    pthread_mutex_lock(&s->mu);
    r->next_waiting = s->wait_head;
    s->wait_head = r;
    if (!s->wait_tail) s->wait_tail = r;
    s->n_waiting++;
    pthread_mutex_unlock(&s->mu);
}

static long resident_blocks(const dsv4_sched *s, int except) {
    long b = 0;
    for (int i = 0; i < s->n_res; i++)
        if (i != except) b += dsv4_engine_kv_blocks_for(s->e, (long)s->res[i].n);
    return b;
}

/* Admits waiting requests while they fit (FCFS). */
static void admit(dsv4_sched *s) {
    for (;;) {
        dsv4_sched_req *h = waiting_head(s);
        if (!h || s->n_run >= s->max_batch) return;
        int reuse = s->prefix_cache ? find_prefix(s, h->toks, h->n_toks) : -1;
        long have = reuse >= 0 ? dsv4_engine_kv_blocks_for(s->e, (long)s->res[reuse].n) : 0;
        long need = dsv4_engine_kv_blocks_for(s->e, (long)h->n_toks) - have + (long)s->headroom * s->n_run;
        dsv4_engine_kv_stats kv;
        dsv4_engine_get_kv_stats(s->e, &kv);
        int others = s->n_res - (reuse >= 0);
        int fits = kv.blocks_free + resident_blocks(s, reuse) >= need && (reuse >= 0 || kv.slots_free + others > 0);
        if (!fits) {
            if (s->n_run > 0) return; /* wait for running requests to finish */
            waiting_pop_head(s);
            h->phase = R_RUNNING; /* so that deliver's bookkeeping applies; it never ran */
            deliver(s, h, NULL, NULL, 0, DSV4_FINISH_ERROR, "the KV cache cannot hold this request");
            continue;
        }
        /* Make room: LRU residents go until the blocks (and a slot) are there. */
        for (;;) {
            dsv4_engine_get_kv_stats(s->e, &kv);
            if (kv.blocks_free >= need && (reuse >= 0 || kv.slots_free > 0)) break;
            if (!evict_lru(s, reuse >= 0 ? &reuse : NULL)) break;
        }
        dsv4_err err = {{0}};
        if (reuse >= 0) {
            h->seq = s->res[reuse].seq;
            h->n_fed = s->res[reuse].n;
            DSV4_ASSERT(dsv4_engine_seq_len(s->e, h->seq) == (long)h->n_fed);
            resident_drop(s, reuse, 0);
        } else if (dsv4_engine_seq_open(s->e, &h->seq, &err) != DSV4_OK) {
            h->seq = -1;
            if (s->n_run > 0) return;
            waiting_pop_head(s);
            h->phase = R_RUNNING;
            deliver(s, h, NULL, NULL, 0, DSV4_FINISH_ERROR, err.msg);
            continue;
        } else {
            h->n_fed = 0;
        }
        waiting_pop_head(s);
        h->phase = R_RUNNING;
        if (!h->admitted_once) {
            h->admitted_once = 1;
            h->cached = (long)h->n_fed;
            pthread_mutex_lock(&s->mu);
            s->stats.prompt_tokens_total += (long)h->n_prompt;
            s->stats.prefix_cache_hit_tokens_total += h->cached;
            pthread_mutex_unlock(&s->mu);
        }
        s->run[s->n_run++] = h;
    }
}

/* Ends cancelled requests, waiting or running, at this step boundary. */
static void drop_cancelled(dsv4_sched *s) {
    dsv4_sched_req *gone = NULL;
    pthread_mutex_lock(&s->mu);
    dsv4_sched_req **pp = &s->wait_head, *last = NULL;
    while (*pp) {
        dsv4_sched_req *h = *pp;
        if (atomic_load(&h->cancel)) {
            *pp = h->next_waiting;
            s->n_waiting--;
            h->next_waiting = gone;
            gone = h;
        } else {
            last = h;
            pp = &h->next_waiting;
        }
    }
    s->wait_tail = last;
    pthread_mutex_unlock(&s->mu);
    while (gone) {
        dsv4_sched_req *h = gone;
        gone = h->next_waiting;
        h->next_waiting = NULL;
        h->phase = R_RUNNING;
        if (h->seq >= 0) { dsv4_engine_seq_close(s->e, h->seq); h->seq = -1; }
        deliver(s, h, NULL, NULL, 0, DSV4_FINISH_CANCELLED, NULL);
    }
    for (int i = 0; i < s->n_run; i++)
        if (s->run[i] && atomic_load(&s->run[i]->cancel)) deliver(s, s->run[i], NULL, NULL, 0, DSV4_FINISH_CANCELLED, NULL);
    run_remove_done(s);
}

/* ==== the step ========================================================================================== */

/* Items of the next step: decodes first, then prefill chunks, under the token budget. */
static void plan(dsv4_sched *s) {
    long budget = s->budget;
    s->n_items = 0;
    for (int pass = 0; pass < 2; pass++)
        for (int i = 0; i < s->n_run && budget > 0; i++) {
            dsv4_sched_req *r = s->run[i];
            size_t pend = r->n_toks - r->n_fed;
            if (pend == 0 || (pass == 0) != (pend == 1)) continue;
            int k = (long)pend < budget ? (int)pend : (int)budget;
            s->items[s->n_items] = (dsv4_batch_item){r->seq, r->toks + r->n_fed, k, (size_t)k == pend};
            s->item_req[s->n_items++] = r;
            budget -= k;
        }
}

static long plan_blocks(const dsv4_sched *s) {
    long need = 0;
    for (int i = 0; i < s->n_items; i++) {
        long a = (long)s->item_req[i]->n_fed;
        need += dsv4_engine_kv_blocks_for(s->e, a + s->items[i].n_tokens) - dsv4_engine_kv_blocks_for(s->e, a);
    }
    return need;
}

/* Closes the most recently admitted request's sequence and puts it back at the head of the queue. */
static void preempt_newest(dsv4_sched *s) {
    dsv4_sched_req *r = s->run[--s->n_run];
    dsv4_engine_seq_close(s->e, r->seq);
    r->seq = -1;
    r->n_fed = 0;
    r->phase = R_WAITING;
    waiting_push_front(s, r);
    pthread_mutex_lock(&s->mu);
    s->stats.requests_preempted_total++;
    pthread_mutex_unlock(&s->mu);
}

/* Runs items[lo..hi) as one engine step and hands each finished prefill / decode its logits. */
static dsv4_status step_items(dsv4_sched *s, int lo, int hi, dsv4_err *err) {
    dsv4_status st = s->hook ? s->hook(s->hook_user, s->items + lo, hi - lo, err) : DSV4_OK;
    if (st == DSV4_OK) st = dsv4_engine_step(s->e, s->items + lo, hi - lo, s->logits, err);
    if (st != DSV4_OK) return st;
    int j = 0;
    for (int i = lo; i < hi; i++) {
        dsv4_sched_req *r = s->item_req[i];
        r->n_fed += (size_t)s->items[i].n_tokens;
        if (s->items[i].want_logits) generate(s, r, s->logits + (size_t)j++ * s->vocab);
    }
    return DSV4_OK;
}

static void run_step(dsv4_sched *s) {
    for (;;) {
        plan(s);
        if (!s->n_items) return;
        dsv4_engine_kv_stats kv;
        dsv4_engine_get_kv_stats(s->e, &kv);
        if (plan_blocks(s) <= kv.blocks_free) break;
        if (evict_lru(s, NULL)) continue;
        if (s->n_run > 1) { preempt_newest(s); continue; }
        deliver(s, s->run[0], NULL, NULL, 0, DSV4_FINISH_ERROR, "the KV cache cannot hold this request");
        run_remove_done(s);
        return;
    }
    dsv4_err err = {{0}};
    if (step_items(s, 0, s->n_items, &err) != DSV4_OK) {
        if (!s->quiet) fprintf(stderr, "dsv4 sched: step of %d requests failed (%s)%s\n", s->n_items, err.msg,
                               s->n_items > 1 ? "; retrying them one by one" : "");
        if (s->n_items == 1) {
            deliver(s, s->item_req[0], NULL, NULL, 0, DSV4_FINISH_ERROR, err.msg);
        } else {
            for (int i = 0; i < s->n_items; i++) {
                dsv4_err e1 = {{0}};
                if (step_items(s, i, i + 1, &e1) != DSV4_OK)
                    deliver(s, s->item_req[i], NULL, NULL, 0, DSV4_FINISH_ERROR, e1.msg);
            }
        }
    }
    run_remove_done(s);
}

static void publish_stats(dsv4_sched *s) {
    dsv4_engine_kv_stats kv;
    dsv4_engine_get_kv_stats(s->e, &kv);
    pthread_mutex_lock(&s->mu);
    s->stats.requests_running = s->n_run;
    s->stats.requests_waiting = s->n_waiting;
    s->stats.kv_blocks_used = kv.blocks_used;
    s->stats.kv_blocks_free = kv.blocks_free;
    pthread_mutex_unlock(&s->mu);
}

static void *sched_main(void *arg) {
    dsv4_sched *s = arg;
    for (;;) {
        pthread_mutex_lock(&s->mu);
        while (!s->stopping && !s->n_waiting && !s->n_run) pthread_cond_wait(&s->wake, &s->mu);
        int stop = s->stopping;
        pthread_mutex_unlock(&s->mu);
        if (stop) break;
        drop_cancelled(s);
        admit(s);
        if (s->n_run) run_step(s);
        publish_stats(s);
    }
    /* Shutdown: every request ends CANCELLED, every sequence closes. */
    pthread_mutex_lock(&s->mu);
    for (dsv4_sched_req *h = s->wait_head; h; h = h->next_waiting) atomic_store(&h->cancel, 1);
    pthread_mutex_unlock(&s->mu);
    for (int i = 0; i < s->n_run; i++) atomic_store(&s->run[i]->cancel, 1);
    drop_cancelled(s);
    while (s->n_res) resident_drop(s, s->n_res - 1, 1);
    publish_stats(s);
    return NULL;
}

/* ==== public API ======================================================================================== */

dsv4_status dsv4_sched_create(const dsv4_sched_options *opt, dsv4_sched **out, dsv4_err *err) {
    *out = NULL;
    if (!opt || !opt->engine) return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "scheduler: no engine given");
    dsv4_sched *s = calloc(1, sizeof *s);
    if (!s) return dsv4_err_set(err, DSV4_ERR_NOMEM, "scheduler: out of memory");
    dsv4_engine_kv_stats kv;
    dsv4_engine_get_kv_stats(opt->engine, &kv);
    s->e = opt->engine;
    s->tok = opt->tok;
    s->vocab = dsv4_engine_vocab_size(s->e);
    s->eos = dsv4_engine_eos_id(s->e);
    s->max_batch = opt->max_batch > 0 ? opt->max_batch : 8;
    if (s->max_batch > kv.slots_free) s->max_batch = kv.slots_free;
    s->max_queue = opt->max_queue > 0 ? opt->max_queue : 64;
    s->budget = opt->step_token_budget > 0 ? opt->step_token_budget : 512;
    if (s->budget < s->max_batch) s->budget = s->max_batch;
    s->max_seq_tokens = opt->max_seq_tokens > 0 && opt->max_seq_tokens < kv.max_seq_tokens ? opt->max_seq_tokens
                                                                                             : kv.max_seq_tokens;
    s->prefix_cache = opt->prefix_cache != 0;
    s->quiet = opt->quiet != 0;
    s->headroom = !opt->no_kv_headroom;
    s->hook = opt->test_step_hook;
    s->hook_user = opt->test_step_user;
    s->cap_res = kv.slots_free;
    if (s->max_batch < 1) {
        free(s);
        return dsv4_err_set(err, DSV4_ERR_CAPACITY, "scheduler: the engine has no free sequence slot");
    }
    s->run = calloc((size_t)s->max_batch, sizeof *s->run);
    s->res = calloc((size_t)s->cap_res, sizeof *s->res);
    s->items = calloc((size_t)s->max_batch, sizeof *s->items);
    s->item_req = calloc((size_t)s->max_batch, sizeof *s->item_req);
    s->logits = malloc(sizeof(float) * (size_t)s->max_batch * (size_t)s->vocab);
    dsv4_status st = DSV4_OK;
    if (!s->run || !s->res || !s->items || !s->item_req || !s->logits)
        st = dsv4_err_set(err, DSV4_ERR_NOMEM, "scheduler: out of memory");
    if (!st) st = dsv4_sampler_ws_init(&s->ws, s->vocab, err);
    if (st) {
        dsv4_sampler_ws_free(&s->ws);
        free(s->run); free(s->res); free(s->items); free(s->item_req); free(s->logits); free(s);
        return st;
    }
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->wake, NULL);
    publish_stats(s); /* a first snapshot, before the thread owns the engine */
    if (pthread_create(&s->thread, NULL, sched_main, s) != 0) {
        pthread_cond_destroy(&s->wake);
        pthread_mutex_destroy(&s->mu);
        dsv4_sampler_ws_free(&s->ws);
        free(s->run); free(s->res); free(s->items); free(s->item_req); free(s->logits); free(s);
        return dsv4_err_set(err, DSV4_ERR_NOMEM, "scheduler: cannot start its thread");
    }
    *out = s;
    return DSV4_OK;
}

void dsv4_sched_destroy(dsv4_sched *s) {
    if (!s) return;
    pthread_mutex_lock(&s->mu);
    s->stopping = 1;
    pthread_cond_broadcast(&s->wake);
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->thread, NULL);
    dsv4_sampler_ws_free(&s->ws);
    free(s->run);
    free(s->res);
    free(s->items);
    free(s->item_req);
    free(s->logits);
    pthread_cond_destroy(&s->wake);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

static dsv4_status check_ids(const int32_t *ids, size_t n, int vocab, const char *what, dsv4_err *err) {
    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= vocab)
            return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "%s token %d at index %zu is outside the vocabulary [0, %d)",
                                what, ids[i], i, vocab);
    return DSV4_OK;
}

dsv4_status dsv4_sched_submit(dsv4_sched *s, const dsv4_sched_request *q, dsv4_sched_req **out, dsv4_err *err) {
    *out = NULL;
    if (!q || !q->prompt || q->n_prompt == 0) return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "prompt: empty");
    DSV4_TRY(check_ids(q->prompt, q->n_prompt, s->vocab, "prompt", err));
    if (q->n_forced && !q->forced) return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "forced: NULL with n_forced %zu", q->n_forced);
    DSV4_TRY(check_ids(q->forced, q->n_forced, s->vocab, "forced", err));
    if (q->n_stops < 0 || (q->n_stops > 0 && !q->stops))
        return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "stop: %d stop strings given without a list", q->n_stops);
    if ((long)q->n_prompt + 1 > s->max_seq_tokens)
        return dsv4_err_set(err, DSV4_ERR_INVALID_ARG,
                            "prompt: %zu tokens do not fit the context limit of %ld tokens (prompt + at least 1 "
                            "generated token)", q->n_prompt, s->max_seq_tokens);
    dsv4_sched_req *r = calloc(1, sizeof *r);
    if (!r) return dsv4_err_set(err, DSV4_ERR_NOMEM, "out of memory");
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
    r->refs = 2;
    r->seq = -1;
    r->phase = R_WAITING;
    r->n_prompt = q->n_prompt;
    r->max_tokens = q->max_tokens;
    r->ignore_eos = q->ignore_eos != 0;
    r->logprobs = q->sp.logprobs;
    dsv4_status st = DSV4_OK;
    r->cap_toks = q->n_prompt + 16;
    if (!(r->toks = malloc(sizeof *r->toks * r->cap_toks)) || (q->id && !(r->id = strdup(q->id))) ||
        (q->n_stops && !(r->stops = calloc((size_t)q->n_stops, sizeof *r->stops))) ||
        (q->n_forced && !(r->forced = malloc(sizeof *r->forced * q->n_forced))))
        st = dsv4_err_set(err, DSV4_ERR_NOMEM, "out of memory");
    for (int i = 0; !st && i < q->n_stops; i++, r->n_stops++)
        if (!(r->stops[i] = strdup(q->stops[i] ? q->stops[i] : "")))
            st = dsv4_err_set(err, DSV4_ERR_NOMEM, "out of memory");
    if (!st) {
        memcpy(r->toks, q->prompt, sizeof *r->toks * q->n_prompt);
        r->n_toks = q->n_prompt;
        if (q->n_forced) memcpy(r->forced, q->forced, sizeof *r->forced * q->n_forced);
        r->n_forced = q->n_forced;
        st = dsv4_sampler_init(&r->sampler, &q->sp, s->vocab, err);
    }
    if (!st) st = dsv4_sampler_add_prompt(&r->sampler, q->prompt, q->n_prompt, err);
    if (!st) st = dsv4_out_init(&r->out, s->tok, q->chat, q->thinking, (const char *const *)r->stops, r->n_stops, err);
    if (st) {
        req_free(r);
        return st;
    }
    r->t_submit = now_s();
    pthread_mutex_lock(&s->mu);
    if (s->stopping || s->n_waiting >= s->max_queue) {
        int n = s->n_waiting;
        int stopping = s->stopping;
        pthread_mutex_unlock(&s->mu);
        req_free(r);
        return stopping ? dsv4_err_set(err, DSV4_ERR_CAPACITY, "the server is shutting down")
                        : dsv4_err_set(err, DSV4_ERR_CAPACITY, "the server is busy: %d requests are already waiting "
                                                               "(queue limit %d); retry later", n, s->max_queue);
    }
    r->s = s;
    if (s->wait_tail) s->wait_tail->next_waiting = r;
    else s->wait_head = r;
    s->wait_tail = r;
    s->n_waiting++;
    s->stats.requests_waiting = s->n_waiting;
    pthread_cond_broadcast(&s->wake);
    pthread_mutex_unlock(&s->mu);
    *out = r;
    return DSV4_OK;
}

int dsv4_sched_next_event(dsv4_sched_req *h, dsv4_sched_event *ev, int timeout_ms) {
    memset(ev, 0, sizeof *ev);
    struct timespec dl;
    if (timeout_ms > 0) {
        clock_gettime(CLOCK_REALTIME, &dl);
        dl.tv_sec += timeout_ms / 1000;
        dl.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
        if (dl.tv_nsec >= 1000000000L) { dl.tv_sec++; dl.tv_nsec -= 1000000000L; }
    }
    pthread_mutex_lock(&h->mu);
    while (!h->head && !h->final_queued) {
        if (timeout_ms == 0) { pthread_mutex_unlock(&h->mu); return 0; }
        if (timeout_ms < 0) pthread_cond_wait(&h->cv, &h->mu);
        else if (pthread_cond_timedwait(&h->cv, &h->mu, &dl) == ETIMEDOUT && !h->head && !h->final_queued) {
            pthread_mutex_unlock(&h->mu);
            return 0;
        }
    }
    if (h->head) {
        ev_node *n = h->head;
        h->head = n->next;
        if (!h->head) h->tail = NULL;
        *ev = n->ev;
        free(n);
        if (ev->finish != DSV4_FINISH_NONE) h->final_taken = 1;
    } else {
        /* After the final event (or when it could not be allocated): an empty finished event. */
        h->final_taken = 1;
        ev->finish = h->final_finish;
        ev->prompt_tokens = h->last_prompt;
        ev->cached_tokens = h->last_cached;
        ev->completion_tokens = h->last_completion;
        ev->ttft_s = h->last_ttft;
    }
    pthread_mutex_unlock(&h->mu);
    if (!ev->reasoning) ev->reasoning = calloc(1, 1);
    if (!ev->content) ev->content = calloc(1, 1);
    return 1;
}

void dsv4_sched_cancel(dsv4_sched_req *h) {
    pthread_mutex_lock(&h->mu);
    atomic_store(&h->cancel, 1);
    if (h->s) {
        pthread_mutex_lock(&h->s->mu);
        pthread_cond_broadcast(&h->s->wake);
        pthread_mutex_unlock(&h->s->mu);
    }
    pthread_mutex_unlock(&h->mu);
}

void dsv4_sched_release(dsv4_sched_req *h) {
    if (!h) return;
    dsv4_sched_cancel(h);
    req_unref(h, 0);
}

long dsv4_sched_max_seq_tokens(const dsv4_sched *s) { return s->max_seq_tokens; }

void dsv4_sched_get_stats(dsv4_sched *s, dsv4_sched_stats *out) {
    pthread_mutex_lock(&s->mu);
    *out = s->stats;
    pthread_mutex_unlock(&s->mu);
}
