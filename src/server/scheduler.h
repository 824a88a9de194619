/* scheduler.h — the serving core behind `dsv4 serve` (issue 12 item 3-5): owns one engine, the queue of
 * requests, continuous batching (every step mixes decode rows and prefill chunks under a token budget),
 * admission by KV budget, cancellation, prefix reuse of resident sequences, per-request sampling, the
 * incremental detokenizer and the incremental DSML/chat parser, and the serving metrics.
 *
 * Threads: one scheduler thread (started by dsv4_sched_create) drives the engine; any other thread may
 * submit, pull events, cancel and release. HTTP code never touches the engine.
 *
 * Life of a request:  dsv4_sched_submit -> handle
 *                     { dsv4_sched_next_event(handle) }  until an event with finished != 0
 *                     dsv4_sched_release(handle)         (always; cancels first if still running)
 * dsv4_sched_cancel may be called at any time (a client vanished): the request ends at the next step
 * boundary with DSV4_FINISH_CANCELLED and its KV blocks go back at once.
 *
 * Contract shared by src/server/scheduler.c (the core) and src/server/http*.c, api_*.c (the front). */
#ifndef DSV4_SERVER_SCHEDULER_H
#define DSV4_SERVER_SCHEDULER_H

#include <stddef.h>
#include <stdint.h>

#include "dsv4.h"
#include "dsv4_sampler.h"
#include "dsv4_tokenizer.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dsv4_sched dsv4_sched;
typedef struct dsv4_sched_req dsv4_sched_req;   /* one request's handle */

typedef struct dsv4_sched_options {
    dsv4_engine *engine;            /* borrowed; driven only by the scheduler thread from create to destroy */
    const dsv4_tokenizer *tok;      /* borrowed; read-only (detokenizer, special-token ids) */
    int max_batch;                  /* most requests running at once (<= the engine's max_seqs); <= 0: 8 */
    int max_queue;                  /* most requests waiting; submit beyond it -> DSV4_ERR_CAPACITY; <= 0: 64 */
    long step_token_budget;         /* most token rows per engine step (decodes + prefill chunk); <= 0: 512 */
    long max_seq_tokens;            /* context limit per sequence (prompt + output); <= 0: engine capacity */
    int prefix_cache;               /* 1: keep finished sequences resident for prefix reuse (LRU, evicted
                                       whenever their slot or blocks are needed) */
    int quiet;                      /* 1: no per-request log line on stderr (tests) */
    int no_kv_headroom;             /* tests: admit without one free block of growth per running request
                                       (makes preemption likely) */
    /* tests: called before every engine step with its items; a non-OK return fails the step as if the engine
       had (nothing changes), to exercise the error path. NULL in real use. */
    dsv4_status (*test_step_hook)(void *user, const dsv4_batch_item *items, int n_items, dsv4_err *err);
    void *test_step_user;
} dsv4_sched_options;

/* What a front end asks for; everything is copied by submit (nothing borrowed after it returns). */
typedef struct dsv4_sched_request {
    const int32_t *prompt;          /* [n_prompt] the rendered, tokenized prompt (BOS included) */
    size_t n_prompt;
    dsv4_sampling_params sp;        /* temperature, top_p, top_k, min_p, seed, penalties, stop_ids, logprobs */
    int max_tokens;                 /* most generated tokens; <= 0: up to the context limit */
    const char *const *stops;       /* stop strings (matched on content text; the match is not returned) */
    int n_stops;
    int chat;                       /* 1: output is parsed as a DSV4 assistant turn (reasoning / content / DSML
                                       tool calls, EOS ends it); 0: raw text (/v1/completions) */
    int thinking;                   /* chat only: the prompt ends in thinking mode, output starts as reasoning */
    const int32_t *forced;          /* optional: tokens forced (not sampled) where the answer's content starts:
                                       at once when !thinking, right after "</think>" when thinking; used for
                                       tool_choice required / named (the DSML opening of a call) */
    size_t n_forced;
    int ignore_eos;                 /* benchmarks: EOS does not end the request */
    const char *id;                 /* request id for the log line (copied); may be NULL */
} dsv4_sched_request;

typedef enum dsv4_finish {
    DSV4_FINISH_NONE = 0,           /* not finished (a delta event) */
    DSV4_FINISH_STOP,               /* EOS, a stop id or a stop string */
    DSV4_FINISH_LENGTH,             /* max_tokens or the context limit */
    DSV4_FINISH_TOOL_CALLS,         /* the turn ended after one or more tool calls (as soon as the DSML
                                       tool block closes: only EOS may follow it) */
    DSV4_FINISH_MALFORMED,          /* the model produced malformed DSML: it came back as content text */
    DSV4_FINISH_CANCELLED,          /* dsv4_sched_cancel */
    DSV4_FINISH_ERROR               /* the engine failed for this request (message in error) */
} dsv4_finish;
const char *dsv4_finish_name(dsv4_finish f);   /* "stop", "length", "tool_calls", "malformed", ... */

typedef struct dsv4_sched_tool_call {
    char *name;                     /* owned by the event */
    char *arguments;                /* JSON object text, owned by the event */
} dsv4_sched_tool_call;

/* One event = what one engine step produced for one request (possibly several tokens when forced tokens
 * are emitted). All pointers are owned by the event until dsv4_sched_event_free. Text is valid UTF-8. */
typedef struct dsv4_sched_event {
    char *reasoning; size_t reasoning_len;     /* reasoning delta (may be empty; never NULL, NUL-terminated) */
    char *content; size_t content_len;         /* content delta (may be empty; never NULL, NUL-terminated);
                                                  never holds DSML unless the
                                                  DSML was malformed (then finish = MALFORMED) */
    dsv4_sched_tool_call *tool_calls;          /* tool calls completed in this step */
    int n_tool_calls;
    int n_tokens;                              /* tokens generated in this step */
    int32_t *tokens;                           /* [n_tokens] */
    dsv4_logprobs *logprobs;                   /* [n_tokens] when sp.logprobs > 0, else NULL; forced tokens
                                                  after the first: token_logprob 0, n 0 (not predicted) */
    dsv4_finish finish;                        /* != NONE on the last event of a request */
    int stop_string;                           /* finish == STOP because stop string k of the request
                                                  matched: k + 1 (which one, for Anthropic's stop_sequence);
                                                  0 otherwise (EOS, a stop id, or not finished) */
    char error[256];                           /* finish == ERROR (or MALFORMED): what went wrong */
    /* usage, valid on every event (running totals) */
    long prompt_tokens, cached_tokens, completion_tokens;
    double ttft_s;                             /* submit -> first generated token (0 before it) */
} dsv4_sched_event;

void dsv4_sched_event_free(dsv4_sched_event *ev);

dsv4_status dsv4_sched_create(const dsv4_sched_options *opt, dsv4_sched **out, dsv4_err *err);
/* Stops the thread, cancels every request (their pending next_event calls return a CANCELLED event). */
void dsv4_sched_destroy(dsv4_sched *s);

/* Queues a request. Errors, nothing queued: INVALID_ARG (prompt empty, token id outside the vocabulary,
 * sampling params out of range — the message names the field), CAPACITY (queue full: HTTP 429/503),
 * and INVALID_ARG with a message naming both numbers when n_prompt (+1) exceeds max_seq_tokens. */
dsv4_status dsv4_sched_submit(dsv4_sched *s, const dsv4_sched_request *r, dsv4_sched_req **out, dsv4_err *err);

/* Waits up to timeout_ms (< 0: forever) for the request's next event. Returns 1 with *ev filled (caller
 * frees it), 0 on timeout. After the event with finish != NONE it returns 1 with an empty finished event. */
int dsv4_sched_next_event(dsv4_sched_req *h, dsv4_sched_event *ev, int timeout_ms);

void dsv4_sched_cancel(dsv4_sched_req *h);
/* Cancels if still running and frees the handle; h is invalid afterwards. */
void dsv4_sched_release(dsv4_sched_req *h);

/* Counters for /metrics and /health (a consistent snapshot). */
typedef struct dsv4_sched_stats {
    int requests_running, requests_waiting;
    long kv_blocks_used, kv_blocks_free;
    long prompt_tokens_total, generation_tokens_total, prefix_cache_hit_tokens_total;
    long requests_total, requests_failed_total;   /* finished requests (any finish) / those ending ERROR */
    /* histograms: cumulative bucket counts at the fixed bounds of dsv4_sched_hist_bounds */
#define DSV4_SCHED_HIST_N 16
    long ttft_bucket[DSV4_SCHED_HIST_N]; double ttft_sum; long ttft_count;
    long tpot_bucket[DSV4_SCHED_HIST_N]; double tpot_sum; long tpot_count;
    long requests_preempted_total;  /* running requests put back in the queue for lack of KV blocks (their
                                       tokens are recomputed when they are admitted again) */
} dsv4_sched_stats;
extern const double dsv4_sched_hist_bounds[DSV4_SCHED_HIST_N];   /* seconds, ascending; +Inf implied */
void dsv4_sched_get_stats(dsv4_sched *s, dsv4_sched_stats *out);

/* The context limit in force (options.max_seq_tokens resolved against the engine): prompt + output tokens. */
long dsv4_sched_max_seq_tokens(const dsv4_sched *s);

#ifdef __cplusplus
}
#endif
#endif
