/* cmd_chat.c — `dsv4 chat`: multi-turn chat. On a terminal: line editing and history (libedit), commands
 * /think /nothink /reset /quit /help, Ctrl-D exits, Ctrl-C stops the answer being generated (at the prompt
 * it drops the line being typed). With stdin not a terminal: one user message per input line, each
 * answer printed and ended with a newline.
 *
 * The conversation is kept as an OpenAI-style messages array; every turn re-renders it (chat.h) and
 * re-tokenizes it, and the KV cache is reused when the new prompt extends the tokens it already holds
 * (otherwise, e.g. after a thinking turn whose reasoning the format drops, the sequence is reset).
 * A full context (-c) is never cut silently: the answer that reaches it stops with "[context full ...]",
 * and a message that no longer fits is refused with a hint to /reset (oldest turns are not dropped:
 * the user decides what to forget).
 * Shared machinery: textgen.{h,c}. */
#include <editline/readline.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "cli_opts.h"
#include "textgen.h"
#include "dsv4_chat.h"

#define CHAT_MAX_NEW 512

static const cli_command_help help = {
    .cmd = "chat",
    .usage = "usage: dsv4 chat [options]   interactive chat (one message per line when stdin is not a terminal)\n"
             "  commands: /think  /nothink  /reset (forget the conversation)  /quit (or Ctrl-D)  /help\n",
    .footer = "When the conversation fills the context (-c), the answer stops with \"context full\" and the next\n"
              "message is refused until /reset (the conversation is never cut silently).\n",
};

static volatile sig_atomic_t interrupted;
static void on_sigint(int sig) {
    (void)sig;
    interrupted = 1;
}

/* One line of user input (malloc'ed, no trailing newline), or NULL at end of input. *has_nul is set when
 * the line holds a NUL byte: C strings would silently cut it there, so the caller refuses the line. */
static char *read_input(int tty, int thinking, int *has_nul) {
    *has_nul = 0;
    if (tty) return readline(thinking ? "you (thinking)> " : "you> ");
    char *line = NULL;
    size_t cap = 0;
    ssize_t n = getline(&line, &cap, stdin);
    if (n < 0) { free(line); return NULL; }
    while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r')) line[--n] = 0;
    *has_nul = memchr(line, 0, (size_t)n) != NULL;
    return line;
}

/* Runs one turn: appends the user message, renders + tokenizes the conversation, streams the answer and
 * appends it. Returns 0, or 1 on a failure that leaves the conversation as it was. */
static int turn(cli_textgen *g, const cli_textgen_opts *o, json_t *msgs, const char *text, int thinking, uint64_t seed) {
    size_t n = strlen(text), bad = dsv4_utf8_valid_prefix(text, n);
    if (bad != n) {
        fprintf(stderr, "dsv4 chat: the message is not valid UTF-8 (invalid byte at offset %zu); ignored\n", bad);
        return 1;
    }
    if (json_array_append_new(msgs, json_pack("{s:s, s:s}", "role", "user", "content", text))) return 1;
    dsv4_chat_opts co;
    dsv4_chat_opts_default(&co);
    co.thinking = thinking != 0;
    dsv4_err err = {{0}};
    dsv4_tok_buf prompt = {0};
    dsv4_token_list ids = {0};
    cli_textgen_result r = {0};
    int rc = 1;
    if (dsv4_chat_render(msgs, NULL, &co, &prompt, &err) != DSV4_OK ||
        dsv4_tokenizer_encode(g->tok, prompt.data, prompt.len, &ids, &err) != DSV4_OK) {
        fprintf(stderr, "dsv4 chat: %s\n", err.msg);
        goto out;
    }
    interrupted = 0;
    if ((long)ids.n >= g->ctx) {   /* refused before any compute; the conversation is kept */
        fprintf(stderr, "dsv4 chat: context full: the conversation with this message is %zu tokens, --ctx %ld; "
                        "/reset to start a new one (or restart with a larger -c)\n", ids.n, g->ctx);
        goto out;
    }
    if (cli_textgen_generate(g, o, ids.ids, ids.n, thinking, seed, 1, &r)) goto out;
    printf("\n");
    fflush(stdout);
    json_t *a = json_pack("{s:s, s:s%}", "role", "assistant", "content", r.content.data ? r.content.data : "",
                          r.content.len);
    if (a && thinking) json_object_set_new(a, "reasoning_content", json_stringn(r.reasoning.data ? r.reasoning.data : "",
                                                                                r.reasoning.len));
    if (!a || json_array_append_new(msgs, a)) goto out;
    if (r.end == CLI_END_INTERRUPT) fprintf(stderr, "[interrupted]\n");
    if (r.end == CLI_END_CONTEXT) fprintf(stderr, "[context full: /reset to start a new conversation]\n");
    if (o->stats) cli_textgen_print_stats(g, seed);
    rc = 0;
out:
    if (rc) json_array_remove(msgs, json_array_size(msgs) - 1);   /* drop the user message again */
    cli_textgen_result_free(&r);
    dsv4_tok_buf_free(&prompt);
    dsv4_token_list_free(&ids);
    return rc;
}

int dsv4_cmd_chat(int argc, char **argv) {
    cli_textgen_opts o;
    char def_n[16];
    snprintf(def_n, sizeof def_n, "%d", CHAT_MAX_NEW);
    cli_textgen_opts_init(&o, "1.0", def_n);
    cli_option opts[CLI_TEXTGEN_N_OPTS];
    int n = cli_textgen_options(&o, opts);
    int rc = cli_opts_parse(&help, opts, n, argc, argv);
    if (rc) return rc == CLI_HELP_SHOWN ? 0 : rc;
    if ((rc = cli_textgen_check("chat", &o, 1.0, CHAT_MAX_NEW))) return rc;
    uint64_t seed = o.sp.seed;
    if (!o.seed_given) {
        struct timespec t;
        clock_gettime(CLOCK_REALTIME, &t);
        seed = ((uint64_t)t.tv_sec * 1000000007ull) ^ (uint64_t)t.tv_nsec ^ ((uint64_t)getpid() << 32);
    }
    cli_textgen g;
    if ((rc = cli_textgen_open(&g, "chat", &o, 1))) {
        cli_textgen_close(&g);
        return rc;
    }
    int tty = isatty(STDIN_FILENO), thinking = o.thinking;
    json_t *msgs = json_array();
    struct sigaction sa = {0}, old_sa;
    sa.sa_handler = on_sigint;
    sigemptyset(&sa.sa_mask);
    if (tty) {
        using_history();
        g.interrupt = &interrupted;
        sigaction(SIGINT, &sa, &old_sa);
        fprintf(stderr, "dsv4 chat: %s mode; /think /nothink /reset /quit (Ctrl-D), Ctrl-C stops an answer\n",
                thinking ? "thinking" : "chat");
    }
    rc = msgs ? 0 : 1;
    for (int n_turn = 0; msgs;) {
        interrupted = 0;
        int has_nul;
        char *line = read_input(tty, thinking, &has_nul);
        if (line && has_nul) {
            fprintf(stderr, "dsv4 chat: the message contains a NUL byte; ignored\n");
            free(line);
            rc = 1;
            continue;
        }
        if (!line && tty && interrupted) {   /* Ctrl-C at the prompt: drop the line, prompt again */
            fputc('\n', stdout);
            continue;
        }
        if (!line) {
            if (tty) fputc('\n', stdout);
            break;
        }
        const char *s = line;
        while (*s == ' ' || *s == '\t') s++;
        if (!*s) { free(line); continue; }
        if (tty) add_history(line);
        if (*s == '/') {
            if (!strcmp(s, "/quit") || !strcmp(s, "/exit")) { free(line); break; }
            else if (!strcmp(s, "/think")) { thinking = 1; fprintf(stderr, "[thinking mode on]\n"); }
            else if (!strcmp(s, "/nothink")) { thinking = 0; fprintf(stderr, "[thinking mode off]\n"); }
            else if (!strcmp(s, "/reset")) {
                json_array_clear(msgs);
                if (cli_textgen_reset(&g)) { free(line); rc = 1; break; }
                fprintf(stderr, "[conversation cleared]\n");
            } else if (!strcmp(s, "/help")) {
                fprintf(stderr, "/think  /nothink  /reset  /quit (or Ctrl-D); Ctrl-C stops an answer\n");
            } else {
                fprintf(stderr, "dsv4 chat: unknown command '%s' (/help lists them)\n", s);
            }
            free(line);
            continue;
        }
        /* a different seed per turn, reproducible from --seed */
        if (turn(&g, &o, msgs, line, thinking, seed + (uint64_t)n_turn * 0x9E3779B97F4A7C15ull) == 0) n_turn++;
        else if (!tty) rc = 1;
        free(line);
    }
    if (tty) sigaction(SIGINT, &old_sa, NULL);
    json_decref(msgs);
    cli_textgen_close(&g);
    return rc;
}
