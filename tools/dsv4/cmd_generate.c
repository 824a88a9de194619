/* cmd_generate.c — `dsv4 generate`: greedy generation from prompt token ids (--prompt-ids), printing
 * the generated ids. Text prompts (-p) and sampling options arrive with the tokenizer and sampler. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "cli_util.h"
#include "dsv4.h"

static void usage(void) {
    fprintf(stderr, "usage: dsv4 generate --model DIR --prompt-ids IDS [-n K] [--backend cpu] [--threads N]\n"
                    "  Greedy decoding of K tokens (default 16) after the prompt; stops at EOS.\n");
}

static int argmax(const float *x, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

int dsv4_cmd_generate(int argc, char **argv) {
    static const char *const known[] = {"--model", "--prompt-ids", "-n", "--backend", "--threads", NULL};
    static const char *const flags[] = {"--help", "--stats", NULL};
    if (cli_flag(argc, argv, "--help")) { usage(); return 0; }
    if (!cli_check_options("generate", argc, argv, known, flags)) return 2;
    const char *model = cli_opt(argc, argv, "--model"), *prompt = cli_opt(argc, argv, "--prompt-ids");
    if (!model || !prompt) { usage(); return 2; }
    int n_gen = cli_opt(argc, argv, "-n") ? atoi(cli_opt(argc, argv, "-n")) : 16;
    if (n_gen < 0) { fprintf(stderr, "dsv4 generate: -n must be >= 0\n"); return 2; }
    int32_t *ids = NULL;
    int T = 0;
    if (cli_parse_ids("generate", prompt, &ids, &T)) return 2;
    dsv4_engine_options opt = {0};
    opt.model_dir = model;
    opt.backend = cli_opt(argc, argv, "--backend");
    opt.n_threads = cli_opt(argc, argv, "--threads") ? atoi(cli_opt(argc, argv, "--threads")) : 0;
    opt.max_seqs = 1;
    opt.max_tokens = T + n_gen + 256;
    dsv4_err err = {{0}};
    dsv4_engine *e = NULL;
    if (dsv4_engine_create(&opt, &e, &err) != DSV4_OK) {
        fprintf(stderr, "dsv4 generate: %s\n", err.msg);
        free(ids);
        return 1;
    }
    int rc = 1, seq, vocab = dsv4_engine_vocab_size(e), eos = dsv4_engine_eos_id(e);
    float *logits = malloc(sizeof(float) * (size_t)vocab);
    if (!logits || dsv4_engine_seq_open(e, &seq, &err) != DSV4_OK) {
        fprintf(stderr, "dsv4 generate: %s\n", logits ? err.msg : "out of memory");
        goto done;
    }
    double t0 = now_s(), t_prefill = 0;
    dsv4_batch_item it = {seq, ids, T, 1};
    int32_t tok;
    for (int i = 0; i < n_gen; i++) {
        if (dsv4_engine_step(e, &it, 1, logits, &err) != DSV4_OK) {
            fprintf(stderr, "dsv4 generate: %s\n", err.msg);
            goto done;
        }
        if (i == 0) t_prefill = now_s() - t0;
        tok = argmax(logits, vocab);
        printf("%s%d", i ? "," : "", tok);
        fflush(stdout);
        if (tok == eos) break;
        it = (dsv4_batch_item){seq, &tok, 1, 1};
    }
    printf("\n");
    if (cli_flag(argc, argv, "--stats")) {
        double total = now_s() - t0;
        fprintf(stderr, "prefill %d tokens: %.3f s (%.1f tok/s); decode %d tokens: %.3f s (%.1f tok/s)\n", T,
                t_prefill, T / t_prefill, n_gen - 1, total - t_prefill,
                n_gen > 1 ? (n_gen - 1) / (total - t_prefill) : 0.0);
    }
    rc = 0;
done:
    free(logits);
    free(ids);
    dsv4_engine_destroy(e);
    return rc;
}
