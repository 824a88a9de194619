/* http.h — the HTTP server of `dsv4 serve` (issue 12 items 1, 2, 6) on libmicrohttpd: binding, routing,
 * API-key check, body limits, JSON answers and SSE streams of the dialects in api.h, client liveness
 * (a vanished client's request is cancelled within ~100 ms), one log line per request, and /metrics
 * (Prometheus text, metrics.c). It never touches the engine: requests go through the scheduler
 * (scheduler.h), prompts through the tokenizer (serialized here: encode mutates its cache).
 *
 * Threads: libmicrohttpd's thread per connection; each connection thread blocks on its own request's
 * events (dsv4_sched_next_event with a 100 ms timeout) and checks its socket between waits. */
#ifndef DSV4_SERVER_HTTP_H
#define DSV4_SERVER_HTTP_H

#include <stddef.h>

#include "dsv4.h"
#include "server/scheduler.h"
#include "dsv4_tokenizer.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dsv4_http dsv4_http;

typedef struct dsv4_http_options {
    const char *host;           /* address or name to bind; NULL: "127.0.0.1" */
    int port;                   /* 0: an ephemeral port (dsv4_http_port tells which) */
    const char *api_key;        /* NULL/"": no authentication; else /v1/ endpoints need Bearer KEY or x-api-key: KEY */
    size_t max_body;            /* request body limit in bytes (413 beyond); 0: 16 MiB */
    int max_connections;        /* 0: 512 */
    int timeout_s;              /* idle connection timeout (slow clients); 0: 120 */
    dsv4_sched *sched;          /* borrowed */
    dsv4_tokenizer *tok;        /* borrowed; only this server encodes with it while it runs */
    const char *model_name;     /* borrowed; the id /v1/models lists and answers carry */
    long ctx;                   /* context limit per request in tokens (prompt + output) */
    int log_requests;           /* 1: one line per request on stderr */
} dsv4_http_options;

/* Binds and starts serving. Errors: INVALID_ARG (bad host), IO (cannot bind: the message says why). */
dsv4_status dsv4_http_start(const dsv4_http_options *o, dsv4_http **out, dsv4_err *err);
int dsv4_http_port(const dsv4_http *h);
/* Stops accepting, ends every open request (streams end, waiting answers get 503) and joins the threads. */
void dsv4_http_stop(dsv4_http *h);

/* Prometheus text of the scheduler's counters plus the HTTP layer's (metrics.c). 0, or -1 without memory. */
int dsv4_metrics_text(const dsv4_sched_stats *s, long http_requests, long http_errors, dsv4_tok_buf *out);

#ifdef __cplusplus
}
#endif
#endif
