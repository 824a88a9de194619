/* bench_spec.h — `dsv4 bench --spec K --spec-accept A[,A...]`: ms per generated token of MTP speculative
 * decoding at a simulated acceptance length, next to plain greedy decoding, at every --batches x --contexts
 * pair (issue 15 item 4; docs/PERF.md "Speculative decoding"). Written against dsv4.h only. */
#ifndef DSV4_TOOLS_BENCH_SPEC_H
#define DSV4_TOOLS_BENCH_SPEC_H

#include <stdio.h>

#include "dsv4.h"

typedef struct cli_bench_spec_args {
    const char *dir;              /* checkpoint (borrowed); NULL: synthetic */
    const dsv4_synthetic_model *synthetic; /* borrowed: with dir NULL, the model generated on the GPU */
    const char *backend;          /* "cpu" / "cuda" */
    int threads, gpus;
    const long *batches;          /* [n_batches] */
    int n_batches;
    const long *contexts;         /* [n_contexts] tokens in each sequence's KV before the timed calls */
    int n_contexts;
    int k_max;                    /* K = 1..k_max are measured */
    const double *accept;         /* [n_accept] simulated tokens per round, each in [1, k_max + 1] */
    int n_accept;
    int steps, repeats, warmup;   /* tokens per timed call, timed calls (median), untimed tokens first */
    long max_fill;                /* skip pairs with batch * context > max_fill */
    FILE *csv;                    /* optional: one line per measurement */
} cli_bench_spec_args;

/* Runs the measurements and prints the table on stdout (progress on stderr). Returns 0, or 1 after a
 * message. */
int cli_bench_spec(const cli_bench_spec_args *a);

/* Parses "1.8,2.3,2.5" into out[*n] (at most max values, each in [1, k_max + 1]); 0 or -1. */
int cli_bench_spec_parse_accept(const char *s, int k_max, double *out, int max, int *n);

#endif
