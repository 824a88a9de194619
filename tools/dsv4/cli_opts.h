/* cli_opts.h — the option table of a dsv4 subcommand: ONE table per command drives both the parsing of
 * argv and the option list of its --help, so the two cannot disagree.
 *
 * Conventions every command gets from here (docs/CLI.md):
 *   - options are read left to right; a value option takes the next argument as its value whatever it
 *     looks like (`-p --model` is the prompt "--model"), or is written `--name=value`;
 *   - an option given twice is an error ("--model given twice"), except options marked repeatable
 *     (CLI_OPT_STRS, e.g. --stop), which collect every value in order;
 *   - numbers are parsed whole (strtoll/strtod, no atoi) and range-checked: "--top-k needs an integer in
 *     [0, 1073741824], got 'x'";
 *   - an unknown option or command gets "did you mean '--temperature'?" when one name is close (edit
 *     distance);
 *   - -h / --help prints the table to stdout.
 * CLI code: errors are printed to stderr as one line "dsv4 <cmd>: ..."; nothing here calls exit(). */
#ifndef DSV4_TOOLS_CLI_OPTS_H
#define DSV4_TOOLS_CLI_OPTS_H

#include <stdint.h>
#include <stdio.h>

#include "dsv4_limits.h"   /* DSV4_THREADS_MAX */

typedef enum cli_opt_kind {
    CLI_OPT_FLAG,     /* no value; dest int*, set to 1 */
    CLI_OPT_STR,      /* dest const char ** (borrowed from argv); choices limits the accepted values */
    CLI_OPT_INT,      /* dest int *, integer in [lo, hi] */
    CLI_OPT_LONG,     /* dest long *, integer in [lo, hi] */
    CLI_OPT_U64,      /* dest uint64_t *, non-negative integer (seeds) */
    CLI_OPT_DOUBLE,   /* dest double *, finite number in [lo, hi] */
    CLI_OPT_FLOAT,    /* dest float *, finite number in [lo, hi] */
    CLI_OPT_STRS,     /* repeatable; dest const char ** array of max entries, count int * */
} cli_opt_kind;

typedef struct cli_option {
    const char *names;     /* spellings separated by '|', e.g. "-m|--model"; the first "--" one is the
                              name used in messages */
    const char *metavar;   /* value placeholder in --help ("DIR"); NULL for flags */
    cli_opt_kind kind;
    void *dest;            /* written when the option is given (see cli_opt_kind); untouched otherwise */
    double lo, hi;         /* INT/LONG/DOUBLE/FLOAT range (both 0: no range check) */
    const char *help;      /* help text; '\n' starts a continuation line */
    const char *def;       /* the default shown as "[def]" in --help, or NULL */
    const char *choices;   /* STR: accepted values separated by '|' (listed in errors), or NULL */
    int *count;            /* STRS: number of values stored; also set for any kind when non-NULL: times given */
    int max;               /* STRS: capacity of dest */
} cli_option;

/* A command's help: the usage line(s) before the table and free text after it (either may be NULL). */
typedef struct cli_command_help {
    const char *cmd;       /* "generate" */
    const char *usage;     /* "usage: dsv4 generate (-p TEXT | -f FILE | --prompt-ids IDS) [options]\n..." */
    const char *footer;
} cli_command_help;

enum { CLI_PARSED = 0, CLI_HELP_SHOWN = -1, CLI_USAGE_ERROR = 2 };

/* Entries every command that loads a model shares, so that each is parsed and documented one way. */
#define CLI_OPT_ENTRY_MODEL(dest_, help_) \
    {.names = "-m|--model", .metavar = "DIR", .kind = CLI_OPT_STR, .dest = (dest_), .help = (help_)}
#define CLI_OPT_ENTRY_BACKEND(dest_, def_) \
    {.names = "--backend", .metavar = "cpu|cuda", .kind = CLI_OPT_STR, .dest = (dest_), .choices = "cpu|cuda", \
     .help = "compute backend: cpu (the reference) or cuda (an NVIDIA Hopper GPU)", .def = (def_)}
#define CLI_OPT_ENTRY_THREADS(dest_) \
    {.names = "-t|--threads", .metavar = "N", .kind = CLI_OPT_INT, .dest = (dest_), .lo = 0, \
     .hi = DSV4_THREADS_MAX, .help = "cpu backend worker threads (0 = every online CPU)", .def = "0"}
#define CLI_OPT_ENTRY_GPUS(dest_) \
    {.names = "--gpus", .metavar = "N", .kind = CLI_OPT_INT, .dest = (dest_), .lo = 1, .hi = 1024, \
     .help = "tensor/expert-parallel ranks (cpu: N host threads; docs/MULTI_GPU.md)", .def = "1"}

/* Parses argv[1..argc) (argv[0] is the command name) against opts[0..n). Returns CLI_PARSED, CLI_HELP_SHOWN
 * (after -h/--help printed the help to stdout: the command returns 0) or CLI_USAGE_ERROR (the error is
 * printed, with a did-you-mean suggestion when one name is close: the command returns 2). Given options
 * write their dest; absent ones leave dest as the caller initialized it (the default). */
int cli_opts_parse(const cli_command_help *h, const cli_option *opts, int n, int argc, char **argv);

/* Prints the usage, one line per option (all spellings, metavar, help, [default]) and the footer to f. */
void cli_opts_help(FILE *f, const cli_command_help *h, const cli_option *opts, int n);

/* Levenshtein distance of a and b (bytes), capped at 99 (names here are short). */
int cli_edit_distance(const char *a, const char *b);

/* The candidate closest to s if it is close enough to be a likely typo (distance <= 2, and less than
 * half the length of s), else NULL. candidates: n strings. */
const char *cli_did_you_mean(const char *s, const char *const *candidates, int n);

/* The backend a command uses when --backend is absent and it prefers a GPU: "cuda" when this build has
 * CUDA and a device is visible, else "cpu". */
const char *cli_auto_backend(void);

#endif
