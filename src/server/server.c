/* server.c — `dsv4 serve` as one library call (include/dsv4_server.h): the scheduler (scheduler.c) and the
 * HTTP front (http.c) started and stopped in the order their contracts need -- the scheduler first, the HTTP
 * front stopped first so open requests end while the scheduler still runs. Owns the two handles only. */
#include "dsv4_server.h"

#include <stdlib.h>

#include "core/status.h"
#include "server/http.h"
#include "server/scheduler.h"

struct dsv4_server {
    dsv4_sched *sched;   /* owned */
    dsv4_http *http;     /* owned */
};

dsv4_status dsv4_server_start(const dsv4_server_options *o, dsv4_server **out, dsv4_err *err) {
    *out = NULL;
    if (!o || !o->engine || !o->tok)
        return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "serve: an engine and a tokenizer are required");
    dsv4_server *s = calloc(1, sizeof *s);
    if (!s) return dsv4_err_set(err, DSV4_ERR_NOMEM, "serve: out of memory");
    dsv4_sched_options so = {0};
    so.engine = o->engine;
    so.tok = o->tok;
    so.max_batch = o->max_batch;
    so.max_queue = o->max_queue;
    so.max_seq_tokens = o->max_seq_tokens;
    so.prefix_cache = o->prefix_cache;
    so.quiet = o->quiet;   /* the scheduler logs one line per request */
    dsv4_status st = dsv4_sched_create(&so, &s->sched, err);
    if (st != DSV4_OK) {
        free(s);
        return st;
    }
    dsv4_http_options ho = {0};
    ho.host = o->host;
    ho.port = o->port;
    ho.api_key = o->api_key;
    ho.max_body = o->max_body;
    ho.sched = s->sched;
    ho.tok = o->tok;
    ho.model_name = o->model_name;
    ho.ctx = dsv4_sched_max_seq_tokens(s->sched);
    ho.log_requests = !o->quiet;
    st = dsv4_http_start(&ho, &s->http, err);
    if (st != DSV4_OK) {
        dsv4_sched_destroy(s->sched);
        free(s);
        return st;
    }
    *out = s;
    return DSV4_OK;
}

int dsv4_server_port(const dsv4_server *s) { return dsv4_http_port(s->http); }

long dsv4_server_max_seq_tokens(const dsv4_server *s) { return dsv4_sched_max_seq_tokens(s->sched); }

void dsv4_server_stop(dsv4_server *s) {
    if (!s) return;
    dsv4_http_stop(s->http);        /* first: open requests end while the scheduler still runs */
    dsv4_sched_destroy(s->sched);
    free(s);
}
