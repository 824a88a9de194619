/* http.c — the libmicrohttpd daemon of `dsv4 serve` (http.h): routing, API keys, body limits, prompt
 * tokenization, submission to the scheduler, non-streamed answers and SSE streams pulled from scheduler
 * events, client liveness checks, request log lines. Owns the daemon, the per-connection state and the
 * tokenizer mutex; borrows the scheduler and the tokenizer. Never touches the engine.
 *
 * A request's life here: the body is gathered (beyond max_body it is read and dropped, then 413), parsed
 * by api.c, tokenized, checked against the context, submitted; a non-streamed answer is gathered in the
 * connection thread, a stream is produced by the response's content reader. Both wait for events 100 ms
 * at a time and look at the socket after every wait, event or not: a client that closed it has its
 * request cancelled and its KV blocks returned by the scheduler at the next step boundary. */
#include <arpa/inet.h>
#include <microhttpd.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "core/status.h"
#include "server/api.h"
#include "server/http.h"
#include "dsv4_chat.h"

#define WAIT_MS 100

struct dsv4_http {
    dsv4_http_options o;            /* borrowed pointers, as given */
    char *model_name;               /* owned copy */
    char *api_key;                  /* owned copy or NULL */
    struct MHD_Daemon *d;           /* owned */
    int port;
    pthread_mutex_t tok_mu;         /* serializes dsv4_tokenizer_encode (it mutates its cache) */
    int32_t eos, bos;               /* special ids, -1 when the tokenizer lacks them */
    atomic_int stopping;
    atomic_long next_id;
    atomic_long n_requests, n_errors;
};

/* One connection's request state (MHD's con_cls). */
typedef struct conn_state {
    dsv4_tok_buf body;              /* owned: the request body */
    int too_big;                    /* the body passed max_body: dropped, answered with 413 */
    size_t dropped;                 /* bytes of an undeclared oversize body read and thrown away */
    int answered;                   /* a response was queued (an early 413) */
} conn_state;

/* One streamed answer: the content reader's state. */
typedef struct stream_state {
    dsv4_http *srv;                 /* borrowed */
    dsv4_sched_req *h;              /* owned: released when the response is freed */
    dsv4_api_request rq;            /* owned */
    dsv4_api_answer ans;            /* owned */
    dsv4_api_ctx ctx;               /* id points into id[] */
    char id[64];
    const char *endpoint;
    int fd;                         /* the client socket (liveness checks) */
    dsv4_tok_buf out;               /* owned: SSE bytes not yet handed to MHD, from out_pos */
    size_t out_pos;
    int done;                       /* the last event was rendered */
    int gone;                       /* the client vanished (or the server is stopping) */
    double t0;
} stream_state;

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* ================================================================================================
 * Responses
 * ================================================================================================ */

/* Headers an answer carries beyond Content-Type. */
typedef struct extra_headers {
    const char *allow;              /* 405: the methods the resource takes */
    const char *request_id;         /* x-request-id (OpenAI SDKs) and request-id (Anthropic SDKs) */
} extra_headers;

static enum MHD_Result send_bytes_h(dsv4_http *s, struct MHD_Connection *c, int status, const char *type, char *data,
                                    size_t len, const extra_headers *h) {
    struct MHD_Response *r = MHD_create_response_from_buffer(len, data, MHD_RESPMEM_MUST_FREE);
    if (!r) { free(data); return MHD_NO; }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    if (h && h->allow) MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, h->allow);
    if (h && h->request_id) {
        MHD_add_response_header(r, "x-request-id", h->request_id);
        MHD_add_response_header(r, "request-id", h->request_id);
    }
    /* the SDKs wait this long before retrying a full queue (429) or a server going down (503) */
    if (status == 429 || status == 503) MHD_add_response_header(r, MHD_HTTP_HEADER_RETRY_AFTER, "1");
    enum MHD_Result ok = MHD_queue_response(c, (unsigned)status, r);
    MHD_destroy_response(r);
    atomic_fetch_add(&s->n_requests, 1);
    if (status >= 400) atomic_fetch_add(&s->n_errors, 1);
    return ok;
}

static enum MHD_Result send_bytes(dsv4_http *s, struct MHD_Connection *c, int status, const char *type, char *data,
                                  size_t len) {
    return send_bytes_h(s, c, status, type, data, len, NULL);
}

static enum MHD_Result send_json_h(dsv4_http *s, struct MHD_Connection *c, int status, json_t *j, const extra_headers *h) {
    char *txt = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (!txt) return MHD_NO;
    return send_bytes_h(s, c, status, "application/json", txt, strlen(txt), h);
}

static enum MHD_Result send_json(dsv4_http *s, struct MHD_Connection *c, int status, json_t *j) {
    return send_json_h(s, c, status, j, NULL);
}

static enum MHD_Result send_error_h(dsv4_http *s, struct MHD_Connection *c, dsv4_api_kind kind, const dsv4_api_error *e,
                                    const extra_headers *h) {
    if (s->o.log_requests) fprintf(stderr, "dsv4 serve: %d %s\n", e->http_status, e->message);
    return send_json_h(s, c, e->http_status, dsv4_api_error_json(kind, e), h);
}

static enum MHD_Result send_error(dsv4_http *s, struct MHD_Connection *c, dsv4_api_kind kind, const dsv4_api_error *e) {
    return send_error_h(s, c, kind, e, NULL);
}

static enum MHD_Result fail(dsv4_http *s, struct MHD_Connection *c, dsv4_api_kind kind, int status, const char *param,
                            const char *msg) {
    dsv4_api_error e;
    dsv4_api_fail(&e, status, param, "%s", msg);
    return send_error(s, c, kind, &e);
}

/* 405 with the Allow header RFC 9110 asks for. */
static enum MHD_Result not_allowed(dsv4_http *s, struct MHD_Connection *c, dsv4_api_kind kind, const char *allow) {
    dsv4_api_error e;
    dsv4_api_fail(&e, 405, NULL, "this endpoint takes %s", allow);
    extra_headers h = {.allow = allow};
    return send_error_h(s, c, kind, &e, &h);
}

/* ================================================================================================
 * Client liveness
 * ================================================================================================ */

static int conn_fd(struct MHD_Connection *c) {
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    return ci ? (int)ci->connect_fd : -1;
}

/* True when the peer closed the connection (or it failed). Pipelined bytes (POLLIN with data) are not. */
static int client_gone(int fd) {
    if (fd < 0) return 0;
    struct pollfd p = {.fd = fd, .events = POLLIN | POLLRDHUP};
    if (poll(&p, 1, 0) <= 0) return 0;
    if (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)) return 1;
    if (p.revents & POLLIN) {
        char b;
        ssize_t n = recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
        return n == 0;
    }
    return 0;
}

/* ================================================================================================
 * Submission
 * ================================================================================================ */

/* The scheduler logs every request's line; this adds one for a request whose client went away. */
static void log_line(dsv4_http *s, const char *id, const char *endpoint, const dsv4_api_answer *a, double t0,
                     const char *how) {
    if (!s->o.log_requests || strcmp(how, "client-gone")) return;
    fprintf(stderr, "dsv4 serve: %s %s prompt=%ld cached=%ld completion=%ld ttft=%.3fs total=%.3fs finish=%s\n", id,
            endpoint, a->prompt_tokens, a->cached_tokens, a->completion_tokens, a->ttft_s, now_s() - t0, how);
}

static const char *finish_word(dsv4_finish f) {
    switch (f) {
    case DSV4_FINISH_STOP: return "stop";
    case DSV4_FINISH_LENGTH: return "length";
    case DSV4_FINISH_TOOL_CALLS: return "tool_calls";
    case DSV4_FINISH_MALFORMED: return "malformed";
    case DSV4_FINISH_CANCELLED: return "cancelled";
    case DSV4_FINISH_ERROR: return "error";
    default: return "none";
    }
}

static int encode(dsv4_http *s, const dsv4_tok_buf *text, dsv4_token_list *ids, dsv4_api_error *e) {
    dsv4_err err = {{0}};
    pthread_mutex_lock(&s->tok_mu);
    dsv4_status st = dsv4_tokenizer_encode(s->o.tok, text->data ? text->data : "", text->len, ids, &err);
    pthread_mutex_unlock(&s->tok_mu);
    if (st) return dsv4_api_fail(e, st == DSV4_ERR_NOMEM ? 500 : 400, NULL, "cannot tokenize the prompt: %s", err.msg);
    return 0;
}

static const char *id_prefix(dsv4_api_kind k) {
    switch (k) {
    case DSV4_API_CHAT: return "chatcmpl-";
    case DSV4_API_COMPLETIONS: return "cmpl-";
    case DSV4_API_MESSAGES: return "msg_";
    default: return "";
    }
}

static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max);
static void stream_free(void *cls);

/* Handles one parsed API request (rq is consumed). */
static enum MHD_Result serve_api(dsv4_http *s, struct MHD_Connection *c, const char *endpoint, dsv4_api_request *rq) {
    dsv4_api_error e = {0};
    dsv4_token_list ids = {0}, forced = {0};
    double t0 = now_s();
    enum MHD_Result ret;
    int st = 0;
    if (rq->prompt_ids) {
        for (size_t i = 0; i < rq->n_prompt_ids && !st; i++)
            if (dsv4_token_list_push(&ids, rq->prompt_ids[i])) st = dsv4_api_fail(&e, 500, NULL, "out of memory");
    } else {
        st = encode(s, &rq->prompt, &ids, &e);
    }
    if (!st && rq->kind == DSV4_API_COUNT_TOKENS) {
        ret = send_json(s, c, 200, json_pack("{s:I}", "input_tokens", (json_int_t)ids.n));
        goto out;
    }
    if (!st && (long)ids.n + 1 > s->o.ctx)
        st = dsv4_api_fail(&e, 400, rq->kind == DSV4_API_COMPLETIONS ? "prompt" : "messages",
                           "the prompt has %zu tokens; with one generated token that exceeds the context of %ld tokens",
                           ids.n, s->o.ctx);
    if (!st && rq->forced.len) st = encode(s, &rq->forced, &forced, &e);
    if (st) { ret = send_error(s, c, rq->kind, &e); goto out; }

    if (!rq->ignore_eos && s->eos >= 0 && rq->sp.n_stop_ids < DSV4_SAMPLER_MAX_STOP_IDS)
        rq->sp.stop_ids[rq->sp.n_stop_ids++] = s->eos;
    long n = atomic_fetch_add(&s->next_id, 1);
    if (!rq->seed_given) /* an unseeded request still samples differently from its neighbours */
        rq->sp.seed = ((uint64_t)n * 0x9E3779B97F4A7C15ull) ^ (uint64_t)(t0 * 1e9);
    char id[64];
    snprintf(id, sizeof id, "%s%08lx%08lx", id_prefix(rq->kind), (unsigned long)n, (unsigned long)(t0 * 1e3) & 0xffffffffUL);

    dsv4_sched_request sr = {0};
    sr.prompt = ids.ids;
    sr.n_prompt = ids.n;
    sr.sp = rq->sp;
    sr.max_tokens = rq->max_tokens;
    sr.stops = (const char *const *)rq->stops;
    sr.n_stops = rq->n_stops;
    sr.chat = rq->chat;
    sr.thinking = rq->thinking;
    sr.forced = forced.n ? forced.ids : NULL;
    sr.n_forced = forced.n;
    sr.ignore_eos = rq->ignore_eos;
    sr.id = id;
    dsv4_sched_req *h = NULL;
    dsv4_err err = {{0}};
    dsv4_status sst = dsv4_sched_submit(s->o.sched, &sr, &h, &err);
    if (sst) {
        int code = sst == DSV4_ERR_CAPACITY ? 429 : sst == DSV4_ERR_INVALID_ARG ? 400 : 500;
        dsv4_api_fail(&e, code, NULL, "%s", err.msg[0] ? err.msg : dsv4_status_name(sst));
        ret = send_error(s, c, rq->kind, &e);
        goto out;
    }

    if (rq->stream) {
        stream_state *ss = calloc(1, sizeof *ss);
        if (!ss) { dsv4_sched_release(h); ret = MHD_NO; goto out; }
        ss->srv = s;
        ss->h = h;
        ss->rq = *rq;
        memset(rq, 0, sizeof *rq); /* moved */
        dsv4_api_answer_init(&ss->ans);
        snprintf(ss->id, sizeof ss->id, "%s", id);
        ss->ctx = (dsv4_api_ctx){.id = ss->id, .model = s->model_name, .created = (long)time(NULL), .tok = s->o.tok};
        ss->endpoint = endpoint;
        ss->fd = conn_fd(c);
        ss->t0 = t0;
        struct MHD_Response *r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16384, stream_read, ss, stream_free);
        if (!r) { stream_free(ss); ret = MHD_NO; goto out; }
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream");
        MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
        MHD_add_response_header(r, "x-request-id", id);
        MHD_add_response_header(r, "request-id", id);
        ret = MHD_queue_response(c, MHD_HTTP_OK, r);
        MHD_destroy_response(r);
        atomic_fetch_add(&s->n_requests, 1);
        goto out;
    }

    /* non-streamed: gather the whole answer here */
    dsv4_api_answer a;
    dsv4_api_answer_init(&a);
    dsv4_api_ctx ctx = {.id = id, .model = s->model_name, .created = (long)time(NULL), .tok = s->o.tok};
    int fd = conn_fd(c), gone = 0;
    for (;;) {
        dsv4_sched_event ev;
        int got = dsv4_sched_next_event(h, &ev, WAIT_MS);
        /* the socket is looked at after every event too: tokens arriving faster than WAIT_MS would otherwise
           keep a vanished client's request running to its end */
        if (!gone && (client_gone(fd) || atomic_load(&s->stopping))) {
            gone = 1;
            dsv4_sched_cancel(h);
        }
        if (!got) continue;
        int fin = ev.finish != DSV4_FINISH_NONE;
        dsv4_api_answer_add(rq, &ctx, &a, &ev);
        dsv4_sched_event_free(&ev);
        if (fin) break;
    }
    dsv4_sched_release(h);
    log_line(s, id, endpoint, &a, t0, gone ? "client-gone" : finish_word(a.finish));
    if (a.finish == DSV4_FINISH_ERROR) {
        dsv4_api_fail(&e, 500, NULL, "generation failed: %s", a.error);
        ret = send_error(s, c, rq->kind, &e);
    } else if (a.finish == DSV4_FINISH_CANCELLED) {
        ret = gone ? MHD_NO : fail(s, c, rq->kind, 503, NULL, "the server is shutting down");
    } else {
        extra_headers hd = {.request_id = id};
        ret = send_json_h(s, c, 200, dsv4_api_answer_json(rq, &ctx, &a), &hd);
    }
    dsv4_api_answer_free(&a);
out:
    dsv4_token_list_free(&ids);
    dsv4_token_list_free(&forced);
    dsv4_api_request_free(rq);
    return ret;
}

/* ================================================================================================
 * Streams
 * ================================================================================================ */

static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max) {
    stream_state *ss = cls;
    (void)pos;
    while (ss->out_pos == ss->out.len) {
        if (ss->done) return MHD_CONTENT_READER_END_OF_STREAM;
        if (ss->gone) return MHD_CONTENT_READER_END_WITH_ERROR;
        ss->out.len = ss->out_pos = 0;
        dsv4_sched_event ev;
        int got = dsv4_sched_next_event(ss->h, &ev, WAIT_MS);
        if (!ss->gone && (client_gone(ss->fd) || atomic_load(&ss->srv->stopping))) { /* after every event too */
            ss->gone = 1;
            dsv4_sched_cancel(ss->h);
        }
        if (!got) continue;
        if (ev.finish != DSV4_FINISH_NONE) ss->done = 1;
        int rc = dsv4_api_stream_event(&ss->rq, &ss->ctx, &ss->ans, &ev, &ss->out);
        dsv4_sched_event_free(&ev);
        if (rc) {
            ss->gone = 1;
            dsv4_sched_cancel(ss->h);
            return MHD_CONTENT_READER_END_WITH_ERROR;
        }
    }
    size_t n = ss->out.len - ss->out_pos;
    if (n > max) n = max;
    memcpy(buf, ss->out.data + ss->out_pos, n);
    ss->out_pos += n;
    return (ssize_t)n;
}

static void stream_free(void *cls) {
    stream_state *ss = cls;
    int complete = ss->done && ss->out_pos == ss->out.len;
    dsv4_sched_release(ss->h); /* cancels first when the client left early */
    log_line(ss->srv, ss->id, ss->endpoint, &ss->ans, ss->t0,
             complete ? finish_word(ss->ans.finish) : "client-gone");
    dsv4_api_answer_free(&ss->ans);
    dsv4_api_request_free(&ss->rq);
    dsv4_tok_buf_free(&ss->out);
    free(ss);
}

/* ================================================================================================
 * Routing
 * ================================================================================================ */

/* Constant-time comparison of a presented key with the configured one. */
static int key_equal(const char *given, const char *key) {
    size_t lg = strlen(given), lk = strlen(key);
    unsigned char d = (unsigned char)(lg != lk);
    for (size_t i = 0; i < lk; i++) d |= (unsigned char)(key[i] ^ given[i < lg ? i : 0]);
    return d == 0 && lg > 0;
}

static int authorized(dsv4_http *s, struct MHD_Connection *c) {
    if (!s->api_key) return 1;
    const char *x = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "x-api-key");
    if (x && key_equal(x, s->api_key)) return 1;
    const char *a = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    if (a && !strncasecmp(a, "Bearer ", 7)) {
        a += 7;
        while (*a == ' ') a++;
        if (key_equal(a, s->api_key)) return 1;
    }
    return 0;
}

static const struct { const char *path; dsv4_api_kind kind; } ROUTES[] = {
    {"/v1/chat/completions", DSV4_API_CHAT},        {"/v1/completions", DSV4_API_COMPLETIONS},
    {"/v1/responses", DSV4_API_RESPONSES},          {"/v1/messages", DSV4_API_MESSAGES},
    {"/v1/messages/count_tokens", DSV4_API_COUNT_TOKENS},
};

/* The error dialect of a request outside the API routes (GET /v1/models, unknown paths): Anthropic's when
 * the client says it speaks it (the Anthropic SDKs send anthropic-version), else OpenAI's. */
static dsv4_api_kind dialect_of(struct MHD_Connection *c) {
    return MHD_lookup_connection_value(c, MHD_HEADER_KIND, "anthropic-version") ? DSV4_API_MESSAGES : DSV4_API_CHAT;
}

/* GET (or HEAD: MHD sends the headers only) of /health, /metrics, /v1/models[/ID]. */
static enum MHD_Result serve_get(dsv4_http *s, struct MHD_Connection *c, const char *url) {
    dsv4_api_kind kind = dialect_of(c);
    if (!strcmp(url, "/health")) {
        if (atomic_load(&s->stopping)) return fail(s, c, kind, 503, NULL, "the server is shutting down");
        return send_json(s, c, 200, json_pack("{s:s}", "status", "ok"));
    }
    if (!strcmp(url, "/metrics")) {
        dsv4_sched_stats st;
        dsv4_sched_get_stats(s->o.sched, &st);
        dsv4_tok_buf out = {0};
        if (dsv4_metrics_text(&st, atomic_load(&s->n_requests), atomic_load(&s->n_errors), &out)) {
            dsv4_tok_buf_free(&out);
            return MHD_NO;
        }
        return send_bytes(s, c, 200, "text/plain; version=0.0.4", out.data, out.len);
    }
    if (!authorized(s, c)) return fail(s, c, kind, 401, NULL, "invalid or missing API key");
    int one = !strncmp(url, "/v1/models/", 11);
    if (one && strcmp(url + 11, s->model_name)) {
        dsv4_api_error e;
        dsv4_api_fail(&e, 404, "model", "model '%.200s' not found; this server serves '%s'", url + 11, s->model_name);
        return send_error(s, c, kind, &e);
    }
    /* both dialects' model objects: OpenAI's {id, object, created, owned_by}, Anthropic's {id, type,
       display_name, created_at} */
    time_t now = time(NULL);
    struct tm tm;
    char iso[32];
    gmtime_r(&now, &tm);
    strftime(iso, sizeof iso, "%Y-%m-%dT%H:%M:%SZ", &tm);
    json_t *m = json_pack("{s:s,s:s,s:I,s:s,s:I,s:s,s:s,s:s}", "id", s->model_name, "object", "model", "created",
                          (json_int_t)now, "owned_by", "dsv4", "max_model_len", (json_int_t)s->o.ctx, "type", "model",
                          "display_name", s->model_name, "created_at", iso);
    if (one) return send_json(s, c, 200, m);
    return send_json(s, c, 200, json_pack("{s:s,s:[o],s:b,s:s,s:s}", "object", "list", "data", m, "has_more", 0,
                                          "first_id", s->model_name, "last_id", s->model_name));
}

static int is_get_route(const char *url) {
    return !strcmp(url, "/health") || !strcmp(url, "/metrics") || !strcmp(url, "/v1/models") ||
           (!strncmp(url, "/v1/models/", 11) && url[11]);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                  const char *version, const char *upload_data, size_t *upload_size, void **con_cls) {
    dsv4_http *s = cls;
    (void)version;
    conn_state *cs = *con_cls;
    if (!cs) { /* first call: headers only */
        if (!(cs = calloc(1, sizeof *cs))) return MHD_NO;
        *con_cls = cs;
        const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (cl && strtoull(cl, NULL, 10) > s->o.max_body) cs->too_big = 1;
        if (!cs->too_big) return MHD_YES;
        /* a declared oversize body is refused before it is read (no "100 Continue" is sent for it) */
    } else if (*upload_size) { /* body data */
        if (!cs->too_big && cs->body.len + *upload_size > s->o.max_body) cs->too_big = 1;
        if (!cs->too_big && dsv4_tok_buf_append(&cs->body, upload_data, *upload_size)) return MHD_NO;
        if (cs->too_big) cs->dropped += *upload_size;
        *upload_size = 0;
        /* an undeclared (chunked) oversize body is read and dropped (MHD cannot answer in the middle of an
           upload), up to a bound beyond which the connection is closed */
        return cs->dropped > 4 * s->o.max_body + (64u << 20) ? MHD_NO : MHD_YES;
    }
    if (cs->answered) return MHD_YES;
    cs->answered = 1;

    int get = !strcmp(method, "GET") || !strcmp(method, "HEAD");
    if (is_get_route(url)) return get ? serve_get(s, c, url) : not_allowed(s, c, dialect_of(c), "GET, HEAD");
    dsv4_api_kind kind = DSV4_API_CHAT;
    int found = 0;
    for (size_t i = 0; i < sizeof ROUTES / sizeof *ROUTES; i++)
        if (!strcmp(url, ROUTES[i].path)) { kind = ROUTES[i].kind; found = 1; }
    if (!found && !strncmp(url, "/v1/responses/", 14))
        return fail(s, c, DSV4_API_RESPONSES, 404, NULL, "this server is stateless: responses are not stored");
    if (!found) return fail(s, c, dialect_of(c), 404, NULL, "no such endpoint");
    if (strcmp(method, "POST")) return not_allowed(s, c, kind, "POST");
    if (!authorized(s, c)) return fail(s, c, kind, 401, NULL, "invalid or missing API key");
    if (cs->too_big) {
        char msg[128];
        snprintf(msg, sizeof msg, "the request body is larger than the limit of %zu bytes", s->o.max_body);
        return fail(s, c, kind, 413, NULL, msg);
    }
    if (atomic_load(&s->stopping)) return fail(s, c, kind, 503, NULL, "the server is shutting down");
    dsv4_api_request rq;
    dsv4_api_error e = {0};
    if (dsv4_api_parse(kind, cs->body.data, cs->body.len, &rq, &e)) {
        dsv4_api_request_free(&rq);
        return send_error(s, c, kind, &e);
    }
    return serve_api(s, c, url, &rq);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode toe) {
    (void)cls; (void)c; (void)toe;
    conn_state *cs = *con_cls;
    if (!cs) return;
    dsv4_tok_buf_free(&cs->body);
    free(cs);
    *con_cls = NULL;
}

/* ================================================================================================
 * Life cycle
 * ================================================================================================ */

/* libmicrohttpd's own messages (a client that left mid-answer, a refused connection): one prefixed line
 * each, only when requests are logged. */
static void mhd_log(void *cls, const char *fmt, va_list ap) {
    dsv4_http *s = cls;
    if (!s->o.log_requests) return;
    char line[512];
    vsnprintf(line, sizeof line, fmt, ap);
    size_t n = strlen(line);
    while (n && (line[n - 1] == '\n' || line[n - 1] == ' ')) line[--n] = 0;
    fprintf(stderr, "dsv4 serve: http: %s\n", line);
}

dsv4_status dsv4_http_start(const dsv4_http_options *o, dsv4_http **out, dsv4_err *err) {
    if (!o->sched || !o->tok || !o->model_name || o->ctx <= 0 || o->port < 0 || o->port > 65535)
        return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "http: scheduler, tokenizer, model name, ctx > 0 and a port in "
                                                       "[0, 65535] are required");
    const char *host = o->host ? o->host : "127.0.0.1";
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE}, *ai = NULL;
    char port[16];
    snprintf(port, sizeof port, "%d", o->port);
    int gai = getaddrinfo(host, port, &hints, &ai);
    if (gai) return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "cannot resolve host '%s': %s", host, gai_strerror(gai));
    dsv4_http *s = calloc(1, sizeof *s);
    if (!s) { freeaddrinfo(ai); return dsv4_err_set(err, DSV4_ERR_NOMEM, "out of memory"); }
    s->o = *o;
    if (!s->o.max_body) s->o.max_body = 16u << 20;
    if (!s->o.max_connections) s->o.max_connections = 512;
    if (!s->o.timeout_s) s->o.timeout_s = 120;
    s->model_name = strdup(o->model_name);
    s->api_key = o->api_key && o->api_key[0] ? strdup(o->api_key) : NULL;
    pthread_mutex_init(&s->tok_mu, NULL);
    s->eos = dsv4_tokenizer_token_id(o->tok, DSV4_CHAT_EOS, strlen(DSV4_CHAT_EOS));
    s->bos = dsv4_tokenizer_token_id(o->tok, DSV4_CHAT_BOS, strlen(DSV4_CHAT_BOS));
    atomic_init(&s->next_id, 1);
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION | MHD_USE_ERROR_LOG;
    if (ai->ai_family == AF_INET6) flags |= MHD_USE_IPv6;
    /* the logger goes first: MHD reports options it meets before it through its own logger */
    s->d = MHD_start_daemon(flags, (uint16_t)o->port, NULL, NULL, on_request, s, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, s,
                            MHD_OPTION_SOCK_ADDR, ai->ai_addr, MHD_OPTION_CONNECTION_LIMIT,
                            (unsigned)s->o.max_connections, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)s->o.timeout_s,
                            MHD_OPTION_NOTIFY_COMPLETED, on_completed, s, MHD_OPTION_LISTENING_ADDRESS_REUSE, 1u,
                            MHD_OPTION_END);
    freeaddrinfo(ai);
    if (!s->d) {
        dsv4_err_set(err, DSV4_ERR_IO, "cannot listen on %s:%d (address in use, or not an address of this machine)",
                     host, o->port);
        dsv4_http_stop(s);
        return DSV4_ERR_IO;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_BIND_PORT);
    s->port = di ? di->port : o->port;
    *out = s;
    return DSV4_OK;
}

int dsv4_http_port(const dsv4_http *h) { return h->port; }

void dsv4_http_stop(dsv4_http *h) {
    if (!h) return;
    atomic_store(&h->stopping, 1);
    if (h->d) MHD_stop_daemon(h->d);
    pthread_mutex_destroy(&h->tok_mu);
    free(h->model_name);
    free(h->api_key);
    free(h);
}
