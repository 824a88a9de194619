/* bench_tokenizer.c — dsv4 tokenizer encode speed on tests/data/tokenizer_corpus.jsonl, single thread, in
 * the two modes tools/tokenizer/bench_hf.py measures for Hugging Face tokenizers (the peer):
 *   one_by_one    every corpus string encoded separately
 *   concatenated  all strings joined by "\n", encoded at once
 * Each mode: one warm-up run, then the median of --reps runs. Both sides keep their BPE word caches warm
 * across runs (HF caches words too), so this is steady-state serving speed.
 * Output CSV: mode,tokens,seconds,tokens_per_s. usage: bench_tokenizer [tokenizer.json] [--reps N] */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dsv4_tokenizer.h"

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
    const char *path = getenv("DSV4_TOKENIZER");
    int reps = 5;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
        else path = argv[i];
    }
    char found[4096] = {0};
    if (!path) {
        FILE *p = popen("python3 tools/tokenizer/find_tokenizer.py 2>/dev/null", "r");
        if (p && fgets(found, sizeof found, p)) found[strcspn(found, "\r\n")] = 0;
        if (p) pclose(p);
        path = found[0] ? found : NULL;
    }
    if (!path) { fprintf(stderr, "bench_tokenizer: tokenizer.json not found (set DSV4_TOKENIZER)\n"); return 1; }
    dsv4_tokenizer *tok;
    dsv4_err e;
    if (dsv4_tokenizer_load(path, &tok, &e)) { fprintf(stderr, "bench_tokenizer: %s\n", e.msg); return 1; }

    FILE *f = fopen("tests/data/tokenizer_corpus.jsonl", "r");
    if (!f) { fprintf(stderr, "bench_tokenizer: run from the repository root\n"); return 1; }
    size_t nt = 0, cap = 0;
    char **texts = NULL;
    size_t *lens = NULL;
    dsv4_tok_buf big = {0};
    char *line = NULL;
    size_t lcap = 0;
    while (getline(&line, &lcap, f) > 0) {
        json_t *o = json_loads(line, JSON_ALLOW_NUL, NULL), *t = json_object_get(o, "text");
        if (!t) { json_decref(o); continue; }
        if (nt == cap) {
            cap = cap ? cap * 2 : 1024;
            texts = realloc(texts, cap * sizeof *texts);
            lens = realloc(lens, cap * sizeof *lens);
        }
        lens[nt] = json_string_length(t);
        texts[nt] = malloc(lens[nt] + 1);
        memcpy(texts[nt], json_string_value(t), lens[nt] + 1);
        if (nt) dsv4_tok_buf_append(&big, "\n", 1);
        dsv4_tok_buf_append(&big, texts[nt], lens[nt]);
        nt++;
        json_decref(o);
    }
    free(line);
    fclose(f);

    printf("mode,tokens,seconds,tokens_per_s\n");
    dsv4_token_list ids = {0};
    double *times = calloc((size_t)reps + 1, sizeof *times);
    for (int mode = 0; mode < 2; mode++) {
        size_t ntok = 0;
        for (int r = -1; r < reps; r++) {
            ntok = 0;
            double t0 = now();
            if (mode == 0) {
                for (size_t i = 0; i < nt; i++) {
                    ids.n = 0;
                    dsv4_tokenizer_encode(tok, texts[i], lens[i], &ids, NULL);
                    ntok += ids.n;
                }
            } else {
                ids.n = 0;
                dsv4_tokenizer_encode(tok, big.data, big.len, &ids, NULL);
                ntok = ids.n;
            }
            if (r >= 0) times[r] = now() - t0;
        }
        qsort(times, (size_t)reps, sizeof *times, cmp_double);
        double s = times[reps / 2];
        printf("dsv4_%s,%zu,%.6f,%.0f\n", mode ? "concatenated" : "one_by_one", ntok, s, ntok / s);
    }
    free(times);
    dsv4_token_list_free(&ids);
    for (size_t i = 0; i < nt; i++) free(texts[i]);
    free(texts);
    free(lens);
    dsv4_tok_buf_free(&big);
    dsv4_tokenizer_destroy(tok);
    return 0;
}
