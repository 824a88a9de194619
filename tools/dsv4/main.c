/* main.c — dsv4 CLI entry: dispatches to the subcommands declared in cli.h; `dsv4 --version`. */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "cli_opts.h"

/* Baked in by the Makefile (the git revision at build time); defaults for a build outside it. */
#ifndef DSV4_VERSION
#define DSV4_VERSION "0.0.0"
#endif
#ifndef DSV4_GIT_REV
#define DSV4_GIT_REV "unknown"
#endif
#ifdef DSV4_HAVE_CUDA
#define DSV4_CUDA_BUILT "CUDA backend compiled in (sm_90a)"
#else
#define DSV4_CUDA_BUILT "CUDA backend not compiled in (cpu only)"
#endif

typedef struct {
    const char *name;
    int (*fn)(int, char **);
    const char *help;
} subcommand;

static const subcommand commands[] = {
    {"inspect", dsv4_cmd_inspect, "summarize and validate a checkpoint directory"},
    {"logits", dsv4_cmd_logits, "prefill + decode a token list, write float32 logits (.npy)"},
    {"generate", dsv4_cmd_generate, "generate tokens from a prompt"},
    {"chat", dsv4_cmd_chat, "interactive multi-turn chat"},
    {"tokenize", dsv4_cmd_tokenize, "print the token ids of a text"},
    {"chat-template", dsv4_cmd_chat_template, "render an OpenAI-style messages file as a prompt"},
    {"bench", dsv4_cmd_bench, "measure prefill and decode speed"},
    {"synth", dsv4_cmd_synth, "write a random-weight checkpoint in the released format"},
    {"serve", dsv4_cmd_serve, "OpenAI- and Anthropic-compatible HTTP server"},
};

static void usage(FILE *f) {
    fprintf(f, "usage: dsv4 <command> [options]   (dsv4 <command> --help for its options; dsv4 --version)\n\n"
               "commands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-14s %s\n", commands[i].name, commands[i].help);
}

int main(int argc, char **argv) {
    if (argc < 2) { usage(stderr); return 2; }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "--version") || !strcmp(argv[1], "-V")) {
        printf("dsv4 %s (git %s), %s\n", DSV4_VERSION, DSV4_GIT_REV, DSV4_CUDA_BUILT);
        return 0;
    }
    const size_t n = sizeof commands / sizeof commands[0];
    const char *names[sizeof commands / sizeof commands[0]];
    for (size_t i = 0; i < n; i++) {
        if (!strcmp(argv[1], commands[i].name)) return commands[i].fn(argc - 1, argv + 1);
        names[i] = commands[i].name;
    }
    const char *near = cli_did_you_mean(argv[1], names, (int)n);
    if (near) fprintf(stderr, "dsv4: unknown command '%s'; did you mean '%s'?\n", argv[1], near);
    else fprintf(stderr, "dsv4: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
