/* dsv4_server.h — the entry point of `dsv4 serve`: an OpenAI- and Anthropic-compatible HTTP server over one
 * engine (the scheduler that owns the engine, src/server/scheduler.h, plus the HTTP front, src/server/http.h,
 * behind one start/stop pair). The caller keeps the engine and the tokenizer; the server borrows them from
 * start to stop. Public header (include/, docs/ARCHITECTURE.md "Layering"); implemented in
 * src/server/server.c. Plain C11. */
#ifndef DSV4_SERVER_H
#define DSV4_SERVER_H

#include <stddef.h>

#include "dsv4.h"
#include "dsv4_tokenizer.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dsv4_server dsv4_server;

typedef struct dsv4_server_options {
    dsv4_engine *engine;        /* borrowed; driven only by the server's scheduler thread from start to stop */
    dsv4_tokenizer *tok;        /* borrowed; only the server uses it from start to stop */
    const char *model_name;     /* borrowed; the id /v1/models lists and answers carry */
    const char *host;           /* address or name to bind; NULL: "127.0.0.1" */
    int port;                   /* 0: an ephemeral port (dsv4_server_port tells which) */
    const char *api_key;        /* NULL/"": no authentication; else /v1/ needs Bearer KEY or x-api-key: KEY */
    size_t max_body;            /* request body limit in bytes (413 beyond); 0: 16 MiB */
    int max_batch;              /* requests generated at once (<= the engine's max_seqs); <= 0: 8 */
    int max_queue;              /* requests waiting beyond the batch before 429; <= 0: 64 */
    long max_seq_tokens;        /* context limit per request (prompt + output); <= 0: the engine's capacity */
    int prefix_cache;           /* 1: keep finished sequences resident for prefix reuse */
    int quiet;                  /* 1: no per-request log lines on stderr */
} dsv4_server_options;

/* Starts the scheduler, then binds and serves. Errors (nothing left running): INVALID_ARG (bad host or
 * options), IO (cannot bind: the message says why), NOMEM. */
dsv4_status dsv4_server_start(const dsv4_server_options *o, dsv4_server **out, dsv4_err *err);
/* The bound TCP port. */
int dsv4_server_port(const dsv4_server *s);
/* The context limit per request in effect (max_seq_tokens, or the engine's capacity). */
long dsv4_server_max_seq_tokens(const dsv4_server *s);
/* Stops accepting, ends every open request (streams end, waiting answers get 503), stops the scheduler and
 * frees s; the engine and tokenizer are the caller's again. NULL is fine. */
void dsv4_server_stop(dsv4_server *s);

#ifdef __cplusplus
}
#endif
#endif
