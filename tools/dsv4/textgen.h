/* textgen.h — what `dsv4 generate -p` and `dsv4 chat` share: the text-generation options, the embedded
 * default model (a random-weight "tiny" checkpoint dsv4 writes itself on first use), tokenizer lookup,
 * prefill with KV-prefix reuse and progress, and the streaming sample loop that splits reasoning from
 * content and prints both as they are produced.
 *
 * Owns: one engine with one sequence, the tokenizer, the sampler scratch and the list of tokens the
 * sequence's KV cache holds. CLI code: errors are printed ("dsv4 <cmd>: ...") and returned as exit codes
 * (1 failure, 2 usage); nothing here calls exit(). */
#ifndef DSV4_TOOLS_TEXTGEN_H
#define DSV4_TOOLS_TEXTGEN_H

#include <signal.h>
#include <stdio.h>
#include <stddef.h>
#include <stdint.h>

#include "dsv4.h"
#include "engine/sampler.h"
#include "progress.h"
#include "tokenizer/tokenizer.h"

#define CLI_MAX_STOPS 16
#define CLI_PREFILL_CHUNK 256   /* prefill piece size: one progress update per piece */
#define CLI_MAX_CTX (1L << 30)  /* most KV tokens a command sizes (= --ctx bound; model/limits.h DSV4_LIMIT_CTX_TOKENS) */

/* Options both commands accept; see cli_textgen_usage for the flags. */
typedef struct cli_textgen_opts {
    const char *model;                 /* --model DIR, or NULL: the embedded default */
    const char *tokenizer;             /* --tokenizer FILE, or NULL: looked up (cli_textgen_open) */
    const char *backend;               /* --backend */
    int threads;                       /* --threads (0 = all CPUs) */
    int gpus;                          /* --gpus N: tensor/expert-parallel ranks (0 = 1; docs/MULTI_GPU.md) */
    long ctx;                          /* --ctx: KV capacity in tokens (0 = command default) */
    dsv4_sampling_params sp;           /* --temperature --top-p --top-k --min-p --seed --repetition-penalty */
    int seed_given;                    /* --seed was passed (else the seed comes from the clock) */
    int max_new;                       /* -n: most tokens generated per answer */
    const char *stops[CLI_MAX_STOPS];  /* --stop (repeatable), borrowed from argv */
    int n_stops;
    int thinking;                      /* --thinking */
    int stats;                         /* --stats: speed lines on stderr */
    int force_progress;                /* --progress: draw bars even when stderr is not a TTY */
    int max_seqs;                      /* engine sequence slots (0 = 1; `dsv4 serve` asks for more) */
} cli_textgen_opts;

/* Option names for cli_check_options (NULL-terminated), the shared part of each command's list. */
#define CLI_TEXTGEN_VALUE_OPTS "--model", "--tokenizer", "--backend", "--threads", "--gpus", "--ctx", "--temperature", \
    "--top-p", "--top-k", "--min-p", "--seed", "--repetition-penalty", "-n", "--stop"
#define CLI_TEXTGEN_FLAG_OPTS "--thinking", "--stats", "--progress"

/* Prints the shared options' help lines to f. */
void cli_textgen_usage(FILE *f, int default_max_new);
/* Parses the shared options (after cli_check_options accepted argv). temperature_default is the
 * temperature when --temperature is absent. Returns 0, or 2 after printing what is wrong. */
int cli_textgen_parse(const char *cmd, int argc, char **argv, double temperature_default, int default_max_new,
                      cli_textgen_opts *o);

/* Why a generation ended. */
typedef enum { CLI_END_LENGTH, CLI_END_EOS, CLI_END_STOP, CLI_END_INTERRUPT } cli_end_reason;

typedef struct cli_textgen {
    const char *cmd;                   /* "generate" / "chat" (borrowed) */
    char *model_dir;                   /* owned */
    char *tokenizer_path;              /* owned; NULL when no tokenizer was needed */
    dsv4_engine *e;                    /* owned */
    dsv4_tokenizer *tok;               /* owned, or NULL */
    int seq;                           /* open sequence, or -1 */
    int vocab, eos;
    int32_t think_end;                 /* id of "</think>", -1 if unknown */
    float *logits;                     /* [vocab] owned */
    dsv4_sampler_ws ws;                /* owned scratch */
    dsv4_token_list kv;                /* tokens the sequence's KV cache holds, in order */
    cli_progress prog;
    int out_tty;                       /* stdout is a terminal: reasoning dimmed */
    volatile sig_atomic_t *interrupt;  /* optional: set to stop a generation early (Ctrl-C) */
    /* statistics of the last cli_textgen_generate call */
    long st_prompt, st_reused, st_gen;
    double st_prefill_s, st_decode_s;
} cli_textgen;

/* Resolves the model (creating the embedded default on first use, labelled on stderr), finds and loads
 * the tokenizer when need_tokenizer, creates the engine (with a loading bar) and opens one sequence.
 * Returns 0 or an exit code (message printed); g is safe to close either way. */
int cli_textgen_open(cli_textgen *g, const char *cmd, const cli_textgen_opts *o, int need_tokenizer);
/* cli_textgen_open in two halves, for a caller that must size the engine from the tokenized prompt:
 * _tokenizer resolves the model directory (writing the default one if needed) and loads the tokenizer;
 * _engine creates the engine (KV capacity o->ctx) and opens the sequence. Same return codes. */
int cli_textgen_open_tokenizer(cli_textgen *g, const char *cmd, const cli_textgen_opts *o, int need_tokenizer);
int cli_textgen_open_engine(cli_textgen *g, const cli_textgen_opts *o);
void cli_textgen_close(cli_textgen *g);

/* Forgets the KV cache (closes and reopens the sequence). Returns 0 or 1 (message printed). */
int cli_textgen_reset(cli_textgen *g);

/* Makes the sequence hold prompt[0..n) and leaves the last token's logits in g->logits. When the KV
 * cache already holds a proper prefix of prompt, only the rest is fed; otherwise the sequence is reset.
 * Fed in CLI_PREFILL_CHUNK pieces with a progress bar when there is more than one. Returns 0 or 1. */
int cli_textgen_prefill(cli_textgen *g, const int32_t *prompt, size_t n);

/* The result text of one generation (owned buffers; free with cli_textgen_result_free). */
typedef struct cli_textgen_result {
    dsv4_tok_buf reasoning;            /* thinking mode: text before </think> */
    dsv4_tok_buf content;              /* the answer (stop string and everything after it removed) */
    cli_end_reason end;
} cli_textgen_result;
void cli_textgen_result_free(cli_textgen_result *r);

/* Prefills prompt (cli_textgen_prefill), then samples up to o->max_new tokens with o->sp and seed,
 * stopping at EOS, a stop string or *g->interrupt, streaming text to stdout as it is produced: in
 * thinking mode the reasoning first (dimmed on a TTY, else between "<think>" and "</think>\n"), then the
 * content. stream = 0 prints nothing. Returns 0 or 1 (message printed). */
int cli_textgen_generate(cli_textgen *g, const cli_textgen_opts *o, const int32_t *prompt, size_t n, int thinking,
                         uint64_t seed, int stream, cli_textgen_result *r);

/* Prints the statistics of the last generation to stderr. */
void cli_textgen_print_stats(const cli_textgen *g, uint64_t seed);

#endif
