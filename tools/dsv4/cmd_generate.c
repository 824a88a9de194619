/* cmd_generate.c — `dsv4 generate`: one completion, either
 *   -p TEXT / -f FILE  the text rendered as a single user turn of the chat format (after an optional
 *                   --system turn; tokenized as-is with --raw), sampled and streamed to stdout as text
 *                   (reasoning first in --thinking mode), or
 *   --prompt-ids    token ids in, the generated ids out (comma-separated on one line; greedy by default).
 * --json prints one OpenAI-style object at the end instead (text, token ids, usage, timings).
 * Without --model it runs on the embedded default (random weights; see textgen.h). Reaching the context
 * (-c) stops the answer with "context full (...)" and exit 0; Ctrl-C stops it, closes the output (the
 * terminal's attributes restored) and exits 130. Shared machinery: textgen.{h,c}.
 * Exit codes: 0 ok, 1 failure, 2 usage, 130 interrupted. */
#include <errno.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "dsv4_files.h"
#include "cli_opts.h"
#include "cli_util.h"
#include "textgen.h"
#include "dsv4_chat.h"

#define TEXT_MAX_NEW 256
#define IDS_MAX_NEW 16
#define PROMPT_FILE_MAX (64L << 20)   /* -f: larger prompt files are refused, not read */

static const cli_command_help help = {
    .cmd = "generate",
    .usage = "usage: dsv4 generate (-p TEXT | -f FILE | --prompt-ids IDS) [options]\n"
             "  The answer is streamed to stdout; in --thinking mode the reasoning comes first (dimmed on a\n"
             "  terminal, else between <think> and </think>). Ctrl-C stops it (exit 130).\n",
    .footer = "Reaching the context (-c) stops the answer: \"context full (N tokens, --ctx N)\" on stderr, exit 0.\n",
};

static uint64_t clock_seed(void) {
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    return ((uint64_t)t.tv_sec * 1000000007ull) ^ (uint64_t)t.tv_nsec ^ ((uint64_t)getpid() << 32);
}

/* ---- Ctrl-C -------------------------------------------------------------------------------------------
 * The first Ctrl-C asks the sample loop to stop (it then closes the reasoning colour or tag and the
 * command exits 130); a second one, when the loop is stuck in a long step, restores the terminal right
 * here (async-signal-safe calls only) and exits. */
static volatile sig_atomic_t interrupted;
static int saved_tty = -1;           /* fd whose attributes were saved, or -1 */
static struct termios saved_attr;
static int out_is_tty;

static void restore_terminal(void) {
    if (out_is_tty) (void)!write(STDOUT_FILENO, "\033[0m", 4);
    if (saved_tty >= 0) tcsetattr(saved_tty, TCSANOW, &saved_attr);
}

static void on_sigint(int sig) {
    (void)sig;
    if (interrupted) {
        restore_terminal();
        (void)!write(STDERR_FILENO, "\n", 1);
        _exit(130);
    }
    interrupted = 1;
}

/* ---- prompt -------------------------------------------------------------------------------------------- */

/* Reads all of path ('-' = stdin; a pipe or FIFO is read to its end) through the bounded reader: at most
 * PROMPT_FILE_MAX bytes, a directory or device refused at once. NUL-terminated; NULL after a message. */
static char *read_prompt_file(const char *path) {
    char *b = NULL;
    size_t n = 0;
    dsv4_err err = {{0}};
    if (cli_read_text(path, PROMPT_FILE_MAX, &b, &n, &err) != DSV4_OK) {
        fprintf(stderr, "dsv4 generate: -f: %s\n", err.msg);
        return NULL;
    }
    if (strlen(b) != n) {
        fprintf(stderr, "dsv4 generate: -f %s holds a NUL byte (at offset %zu); a prompt is text\n", path, strlen(b));
        free(b);
        return NULL;
    }
    return b;
}

/* The prompt's token ids: the chat rendering of [system,] user, or TEXT itself with --raw. */
static int prompt_tokens(cli_textgen *g, const char *text, const char *system, int raw, int thinking,
                         dsv4_token_list *ids) {
    dsv4_err err = {{0}};
    dsv4_tok_buf prompt = {0};
    dsv4_status st = DSV4_OK;
    if (raw) {
        st = dsv4_tok_buf_append(&prompt, text, strlen(text));
    } else {
        json_t *msgs = json_array();
        if (msgs && system) json_array_append_new(msgs, json_pack("{s:s, s:s}", "role", "system", "content", system));
        if (msgs) json_array_append_new(msgs, json_pack("{s:s, s:s}", "role", "user", "content", text));
        dsv4_chat_opts co;
        dsv4_chat_opts_default(&co);
        co.thinking = thinking != 0;
        st = msgs && json_array_size(msgs) == (system ? 2u : 1u) ? dsv4_chat_render(msgs, NULL, &co, &prompt, &err)
                                                                  : DSV4_ERR_NOMEM;
        json_decref(msgs);
    }
    if (st == DSV4_OK) st = dsv4_tokenizer_encode(g->tok, prompt.data ? prompt.data : "", prompt.len, ids, &err);
    dsv4_tok_buf_free(&prompt);
    if (st != DSV4_OK) {
        fprintf(stderr, "dsv4 generate: %s\n", err.msg[0] ? err.msg : "out of memory");
        return 1;
    }
    return 0;
}

/* A valid UTF-8 check of user text, before any model work; 0 or 2 after a message. */
static int check_utf8(const char *what, const char *text) {
    size_t n = strlen(text), bad = dsv4_utf8_valid_prefix(text, n);
    if (bad == n) return 0;
    fprintf(stderr, "dsv4 generate: %s is not valid UTF-8 (invalid byte at offset %zu)\n", what, bad);
    return 2;
}

/* ---- generation ------------------------------------------------------------------------------------------ */

/* --prompt-ids: ids in, generated ids out (the EOS id is printed too, then generation stops); streamed
 * unless json. The ids land in r->tokens. */
static int run_ids(cli_textgen *g, const cli_textgen_opts *o, const int32_t *ids, int T, uint64_t seed, int stream,
                   cli_textgen_result *r) {
    dsv4_err err = {{0}};
    int rc = 1;
    dsv4_sampling_params sp = o->sp;
    sp.seed = seed;
    r->end = CLI_END_LENGTH;
    dsv4_sampler s;
    if (dsv4_sampler_init(&s, &sp, g->vocab, &err) != DSV4_OK ||
        dsv4_sampler_add_prompt(&s, ids, (size_t)T, &err) != DSV4_OK) {
        fprintf(stderr, "dsv4 generate: %s\n", err.msg);
        goto done;
    }
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    if (o->max_new > 0 && cli_textgen_prefill(g, ids, (size_t)T)) goto done;
    clock_gettime(CLOCK_MONOTONIC, &b);
    g->st_prompt = T;
    g->st_prefill_s = (b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) * 1e-9;
    g->st_gen = 0;
    cli_token_src src;
    cli_token_src_init(&src, g, &s);
    for (int i = 0; i < o->max_new; i++) {
        if (interrupted) { r->end = CLI_END_INTERRUPT; break; }
        int32_t tok;
        int got = cli_token_src_next(&src, o->max_new - i, &tok);
        if (got == 2) { r->end = CLI_END_CONTEXT; break; }
        if (got) goto done;
        if (stream) printf("%s%d", i ? "," : "", tok);
        fflush(stdout);
        g->st_gen++;
        if (dsv4_token_list_push(&r->tokens, tok) != DSV4_OK) {
            fprintf(stderr, "dsv4 generate: out of memory\n");
            goto done;
        }
        if (tok == g->eos) { r->end = CLI_END_EOS; break; }
    }
    if (stream) printf("\n");
    clock_gettime(CLOCK_MONOTONIC, &a);
    g->st_decode_s = (a.tv_sec - b.tv_sec) + (a.tv_nsec - b.tv_nsec) * 1e-9;
    if (r->end == CLI_END_CONTEXT)
        fprintf(stderr, "dsv4 generate: context full (%ld tokens, --ctx %ld); the answer stops here\n", (long)g->kv.n,
                g->ctx);
    rc = 0;
done:
    dsv4_sampler_free(&s);
    return rc;
}

static const char *finish_reason(cli_end_reason e) {
    switch (e) {
    case CLI_END_EOS: case CLI_END_STOP: return "stop";
    case CLI_END_INTERRUPT: return "interrupted";
    case CLI_END_CONTEXT: return "context_full";
    case CLI_END_LENGTH: break;
    }
    return "length";
}

/* --json: one OpenAI-style text_completion object (plus the token ids and timings) on stdout. */
static int print_json(const cli_textgen *g, const cli_textgen_result *r, int text_mode, int thinking, uint64_t seed) {
    json_t *ids = json_array(), *choice = json_object(), *root = json_object();
    for (size_t i = 0; ids && i < r->tokens.n; i++) json_array_append_new(ids, json_integer(r->tokens.ids[i]));
    char id[64];
    snprintf(id, sizeof id, "gen-%016llx", (unsigned long long)seed);
    double pf = g->st_prefill_s, dc = g->st_decode_s;
    long fed = g->st_prompt - g->st_reused;
    if (choice) {
        json_object_set_new(choice, "index", json_integer(0));
        if (text_mode) {
            json_object_set_new(choice, "text", json_stringn(r->content.data ? r->content.data : "", r->content.len));
            if (thinking)
                json_object_set_new(choice, "reasoning_content",
                                    json_stringn(r->reasoning.data ? r->reasoning.data : "", r->reasoning.len));
        }
        json_object_set_new(choice, "tokens", ids);
        json_object_set_new(choice, "finish_reason", json_string(finish_reason(r->end)));
    }
    int rc = 1;
    if (root && choice &&
        !json_object_set_new(root, "id", json_string(id)) &&
        !json_object_set_new(root, "object", json_string("text_completion")) &&
        !json_object_set_new(root, "created", json_integer((json_int_t)time(NULL))) &&
        !json_object_set_new(root, "model", json_string(g->model_dir)) &&
        !json_object_set_new(root, "choices", json_pack("[O]", choice)) &&
        !json_object_set_new(root, "usage", json_pack("{s:I, s:I, s:I}", "prompt_tokens", (json_int_t)g->st_prompt,
                                                      "completion_tokens", (json_int_t)g->st_gen, "total_tokens",
                                                      (json_int_t)(g->st_prompt + g->st_gen))) &&
        !json_object_set_new(root, "timings",
                             json_pack("{s:I, s:I, s:f, s:f, s:f, s:f}", "prompt_tokens_reused",
                                       (json_int_t)g->st_reused, "ctx", (json_int_t)g->ctx, "prefill_s", pf, "decode_s",
                                       dc, "prefill_tokens_per_s", pf > 0 ? fed / pf : 0.0, "decode_tokens_per_s",
                                       dc > 0 ? g->st_gen / dc : 0.0)) &&
        !json_object_set_new(root, "seed", json_integer((json_int_t)(seed & 0x7fffffffffffffffull))) &&
        json_dumpf(root, stdout, JSON_INDENT(2) | JSON_ENSURE_ASCII) == 0) {
        printf("\n");
        rc = 0;
    }
    if (rc) fprintf(stderr, "dsv4 generate: out of memory writing the JSON\n");
    json_decref(choice);
    json_decref(root);
    return rc;
}

int dsv4_cmd_generate(int argc, char **argv) {
    cli_textgen_opts o;
    cli_textgen_opts_init(&o, "1.0; --prompt-ids: 0", "256; --prompt-ids: 16");
    const char *text = NULL, *file = NULL, *ids_spec = NULL, *system = NULL;
    int raw = 0, json = 0;
    cli_option opts[CLI_TEXTGEN_N_OPTS + 8] = {
        {.names = "-p|--prompt", .metavar = "TEXT", .kind = CLI_OPT_STR, .dest = &text,
         .help = "prompt text, rendered as one user turn of the chat format"},
        {.names = "-f|--file", .metavar = "FILE", .kind = CLI_OPT_STR, .dest = &file,
         .help = "read the prompt text from FILE ('-' = stdin)"},
        {.names = "--system", .metavar = "TEXT", .kind = CLI_OPT_STR, .dest = &system,
         .help = "a system turn before the prompt"},
        {.names = "--raw", .kind = CLI_OPT_FLAG, .dest = &raw, .help = "tokenize the prompt as-is (no chat format)"},
        {.names = "--prompt-ids", .metavar = "IDS", .kind = CLI_OPT_STR, .dest = &ids_spec,
         .help = "comma-separated token ids (or a file of them); prints the generated ids,\n"
                 "greedy unless --temperature is given"},
        {.names = "--json", .kind = CLI_OPT_FLAG, .dest = &json,
         .help = "print one OpenAI-style JSON object at the end (text, token ids, usage,\ntimings) instead of streaming"},
    };
    int n = 6;
    n += cli_textgen_options(&o, opts + n);
    int rc = cli_opts_parse(&help, opts, n, argc, argv);
    if (rc) return rc == CLI_HELP_SHOWN ? 0 : rc;
    if ((text != NULL) + (file != NULL) + (ids_spec != NULL) != 1) {
        fprintf(stderr, "dsv4 generate: give exactly one of -p TEXT, -f FILE and --prompt-ids IDS\n");
        cli_opts_help(stderr, &help, opts, n);
        return 2;
    }
    if (ids_spec && (raw || system)) {
        fprintf(stderr, "dsv4 generate: %s applies to -p TEXT / -f FILE only\n", raw ? "--raw" : "--system");
        return 2;
    }
    if (raw && system) {
        fprintf(stderr, "dsv4 generate: --system needs the chat format; it cannot go with --raw\n");
        return 2;
    }
    if ((rc = cli_textgen_check("generate", &o, ids_spec ? 0.0 : 1.0, ids_spec ? IDS_MAX_NEW : TEXT_MAX_NEW)))
        return rc;
    if (ids_spec && o.n_stops) {
        fprintf(stderr, "dsv4 generate: --stop applies to -p TEXT only\n");
        return 2;
    }
    int32_t *ids = NULL;
    int T = 0;
    char *file_text = NULL;
    if (ids_spec && cli_parse_ids("generate", ids_spec, &ids, &T)) return 2;
    if (file) {
        if (!(file_text = read_prompt_file(file))) return 1;
        text = file_text;
    }
    /* reject a bad prompt before any model work */
    if (text && (rc = check_utf8("the prompt", text))) goto done_early;
    if (system && (rc = check_utf8("--system", system))) goto done_early;

    uint64_t seed = o.seed_given ? o.sp.seed : clock_seed();
    cli_textgen g;
    out_is_tty = !json && isatty(STDOUT_FILENO);
    if (isatty(STDIN_FILENO) && tcgetattr(STDIN_FILENO, &saved_attr) == 0) saved_tty = STDIN_FILENO;
    struct sigaction sa = {0}, old_sa;
    sa.sa_handler = on_sigint;
    sigemptyset(&sa.sa_mask);
    interrupted = 0;
    cli_textgen_result r = {0};
    /* Ctrl-C while loading keeps its default (the process ends; nothing was printed to stdout yet) */
    rc = cli_textgen_open(&g, "generate", &o, text != NULL);
    sigaction(SIGINT, &sa, &old_sa);
    g.interrupt = &interrupted;
    if (rc) goto done;
    if (ids_spec) {
        rc = run_ids(&g, &o, ids, T, seed, !json, &r);
    } else {
        dsv4_token_list prompt = {0};
        rc = prompt_tokens(&g, text, system, raw, o.thinking, &prompt);
        if (!rc) {
            rc = cli_textgen_generate(&g, &o, prompt.ids, prompt.n, o.thinking, seed, !json, &r);
            if (!rc && !json) printf("\n");
        }
        dsv4_token_list_free(&prompt);
    }
    if (!rc && json) rc = print_json(&g, &r, text != NULL, o.thinking, seed);
    fflush(stdout);
    if (!rc && o.stats) cli_textgen_print_stats(&g, seed);
    if (!rc && (interrupted || r.end == CLI_END_INTERRUPT)) {
        fprintf(stderr, "dsv4 generate: interrupted\n");
        rc = 130;
    }
done:
    cli_textgen_result_free(&r);
    fflush(stdout);
    cli_textgen_close(&g);
    if (saved_tty >= 0) tcsetattr(saved_tty, TCSANOW, &saved_attr);
    sigaction(SIGINT, &old_sa, NULL);
done_early:
    free(file_text);
    free(ids);
    return rc;
}
