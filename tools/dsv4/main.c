/* main.c — dsv4 CLI entry: dispatches to the subcommands declared in cli.h. */
#include <stdio.h>
#include <string.h>

#include "cli.h"

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
    fprintf(f, "usage: dsv4 <command> [options]   (dsv4 <command> --help for its options)\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-14s %s\n", commands[i].name, commands[i].help);
}

int main(int argc, char **argv) {
    if (argc < 2) { usage(stderr); return 2; }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(argv[1], commands[i].name)) return commands[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "dsv4: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
