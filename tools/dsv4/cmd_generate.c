/* cmd_generate.c — `dsv4 generate`: one completion, either
 *   -p TEXT         TEXT rendered as a single user turn of the chat format (or tokenized as-is with --raw),
 *                   sampled and streamed to stdout as text (reasoning first in --thinking mode), or
 *   --prompt-ids    token ids in, the generated ids out (comma-separated on one line; greedy by default).
 * Without --model it runs on the embedded default (random weights; see textgen.h). Shared machinery:
 * textgen.{h,c}. Exit codes: 0 ok, 1 failure, 2 usage. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "cli_util.h"
#include "textgen.h"
#include "tokenizer/chat.h"

#define TEXT_MAX_NEW 256
#define IDS_MAX_NEW 16

static void usage(FILE *f) {
    fprintf(f, "usage: dsv4 generate (-p TEXT | --prompt-ids IDS) [options]\n"
               "  -p TEXT                 prompt text, rendered as one user turn of the chat format; the answer\n"
               "                          is streamed to stdout (in --thinking mode the reasoning comes first:\n"
               "                          dimmed on a terminal, else between <think> and </think>)\n"
               "  --raw                   tokenize TEXT as-is (no chat format)\n"
               "  --prompt-ids IDS        comma-separated ids (or a file of them); prints the generated ids,\n"
               "                          greedy unless --temperature is given, -n default %d\n"
               "  --spec K                with --prompt-ids, greedy: speculative decoding with the checkpoint's\n"
               "                          MTP block drafting K (1..3) tokens per forward; the same ids as without\n"
               "                          (cpu backend, one rank; no penalties) [off]\n",
            IDS_MAX_NEW);
    cli_textgen_usage(f, TEXT_MAX_NEW);
}

static uint64_t clock_seed(void) {
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    return ((uint64_t)t.tv_sec * 1000000007ull) ^ (uint64_t)t.tv_nsec ^ ((uint64_t)getpid() << 32);
}

/* The prompt's token ids: the chat rendering of one user turn, or TEXT itself with --raw. */
static int prompt_tokens(cli_textgen *g, const char *text, int raw, int thinking, dsv4_token_list *ids) {
    size_t n = strlen(text), bad = dsv4_utf8_valid_prefix(text, n);
    if (bad != n) {
        fprintf(stderr, "dsv4 generate: the prompt is not valid UTF-8 (invalid byte at offset %zu)\n", bad);
        return 2;
    }
    dsv4_err err = {{0}};
    dsv4_tok_buf prompt = {0};
    dsv4_status st = DSV4_OK;
    if (raw) {
        st = dsv4_tok_buf_append(&prompt, text, n);
    } else {
        json_t *msgs = json_pack("[{s:s, s:s}]", "role", "user", "content", text);
        dsv4_chat_opts co;
        dsv4_chat_opts_default(&co);
        co.thinking = thinking != 0;
        st = msgs ? dsv4_chat_render(msgs, NULL, &co, &prompt, &err) : DSV4_ERR_NOMEM;
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

/* --prompt-ids with --spec K: the prompt goes through the MTP step (dsv4_engine_step_mtp keeps the draft
 * head in sync), the first id is the sampler's greedy pick, then dsv4_engine_decode_greedy_spec produces
 * the rest in pieces of at most K+1 ids (printed as they come; EOS stops the output). */
static int run_ids_spec(cli_textgen *g, const cli_textgen_opts *o, const int32_t *ids, int T, int K,
                        dsv4_sampler *s) {
    dsv4_err err = {{0}};
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (int off = 0; off < T; off += CLI_PREFILL_CHUNK) {
        int k = T - off < CLI_PREFILL_CHUNK ? T - off : CLI_PREFILL_CHUNK;
        dsv4_batch_item it = {g->seq, ids + off, k, off + k == T};
        if (dsv4_engine_step_mtp(g->e, &it, 1, g->logits, NULL, NULL, &err) != DSV4_OK) {
            fprintf(stderr, "dsv4 generate: --spec: %s\n", err.msg);
            return 1;
        }
    }
    clock_gettime(CLOCK_MONOTONIC, &b);
    g->st_prompt = T;
    g->st_prefill_s = (b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) * 1e-9;
    g->st_gen = 0;
    dsv4_sample_out so;
    if (dsv4_sampler_next(s, &g->ws, g->logits, &so, &err) != DSV4_OK) {
        fprintf(stderr, "dsv4 generate: %s\n", err.msg);
        return 1;
    }
    printf("%d", so.token);
    fflush(stdout);
    g->st_gen = 1;
    int32_t cur = so.token, piece[4];
    dsv4_spec_info info = {0}, sum = {0};
    while (cur != g->eos && g->st_gen < o->max_new) {
        int n = o->max_new - (int)g->st_gen < K + 1 ? o->max_new - (int)g->st_gen : K + 1;
        if (dsv4_engine_decode_greedy_spec(g->e, &g->seq, 1, &cur, n, K, piece, &info, &err) != DSV4_OK) {
            fprintf(stderr, "dsv4 generate: --spec: %s\n", err.msg);
            return 1;
        }
        sum.rounds += info.rounds;
        sum.drafted += info.drafted;
        sum.accepted += info.accepted;
        for (int j = 0; j < n && cur != g->eos; j++) {
            printf(",%d", piece[j]);
            cur = piece[j];
            g->st_gen++;
        }
        fflush(stdout);
    }
    printf("\n");
    clock_gettime(CLOCK_MONOTONIC, &a);
    g->st_decode_s = (a.tv_sec - b.tv_sec) + (a.tv_nsec - b.tv_nsec) * 1e-9;
    if (o->stats)
        fprintf(stderr, "speculative decoding: K %d, %ld verification forwards, %ld drafted, %ld accepted (%.2f ids "
                        "per forward)\n", K, sum.rounds, sum.drafted, sum.accepted,
                sum.rounds ? (double)(g->st_gen - 1) / (double)sum.rounds : 0.0);
    return 0;
}

/* --prompt-ids: ids in, generated ids out (the EOS id is printed too, then generation stops). */
static int run_ids(cli_textgen *g, const cli_textgen_opts *o, const int32_t *ids, int T, uint64_t seed, int spec) {
    dsv4_err err = {{0}};
    int rc = 1;
    dsv4_sampling_params sp = o->sp;
    sp.seed = seed;
    dsv4_sampler s;
    if (dsv4_sampler_init(&s, &sp, g->vocab, &err) != DSV4_OK ||
        dsv4_sampler_add_prompt(&s, ids, (size_t)T, &err) != DSV4_OK) {
        fprintf(stderr, "dsv4 generate: %s\n", err.msg);
        goto done;
    }
    if (spec) {
        rc = o->max_new > 0 ? run_ids_spec(g, o, ids, T, spec, &s) : 0;
        goto done;
    }
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    if (o->max_new > 0 && cli_textgen_prefill(g, ids, (size_t)T)) goto done;
    clock_gettime(CLOCK_MONOTONIC, &b);
    g->st_prompt = T;
    g->st_prefill_s = (b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) * 1e-9;
    g->st_gen = 0;
    for (int i = 0; i < o->max_new; i++) {
        dsv4_sample_out so;
        if (dsv4_sampler_next(&s, &g->ws, g->logits, &so, &err) != DSV4_OK) {
            fprintf(stderr, "dsv4 generate: %s\n", err.msg);
            goto done;
        }
        printf("%s%d", i ? "," : "", so.token);
        fflush(stdout);
        g->st_gen++;
        if (so.token == g->eos || i + 1 == o->max_new) break;
        dsv4_batch_item it = {g->seq, &so.token, 1, 1};
        if (dsv4_engine_step(g->e, &it, 1, g->logits, &err) != DSV4_OK) {
            fprintf(stderr, "dsv4 generate: %s\n", err.msg);
            goto done;
        }
    }
    printf("\n");
    clock_gettime(CLOCK_MONOTONIC, &a);
    g->st_decode_s = (a.tv_sec - b.tv_sec) + (a.tv_nsec - b.tv_nsec) * 1e-9;
    rc = 0;
done:
    dsv4_sampler_free(&s);
    return rc;
}

int dsv4_cmd_generate(int argc, char **argv) {
    static const char *const known[] = {CLI_TEXTGEN_VALUE_OPTS, "-p", "--prompt-ids", "--spec", NULL};
    static const char *const flags[] = {CLI_TEXTGEN_FLAG_OPTS, "--help", "-h", "--raw", NULL};
    if (cli_flag(argc, argv, "--help") || cli_flag(argc, argv, "-h")) { usage(stdout); return 0; }
    if (!cli_check_options("generate", argc, argv, known, flags)) return 2;
    const char *text = cli_opt(argc, argv, "-p"), *ids_spec = cli_opt(argc, argv, "--prompt-ids");
    if (!text == !ids_spec) {
        fprintf(stderr, "dsv4 generate: give exactly one of -p TEXT and --prompt-ids IDS\n");
        usage(stderr);
        return 2;
    }
    if (ids_spec && cli_flag(argc, argv, "--raw")) {
        fprintf(stderr, "dsv4 generate: --raw applies to -p TEXT only\n");
        return 2;
    }
    cli_textgen_opts o;
    int rc = cli_textgen_parse("generate", argc, argv, ids_spec ? 0.0 : 1.0, ids_spec ? IDS_MAX_NEW : TEXT_MAX_NEW, &o);
    if (rc) return rc;
    if (ids_spec && o.n_stops) {
        fprintf(stderr, "dsv4 generate: --stop applies to -p TEXT only\n");
        return 2;
    }
    int spec = 0;
    if (cli_opt(argc, argv, "--spec")) {
        const char *v = cli_opt(argc, argv, "--spec");
        char *end;
        long k = strtol(v, &end, 10);
        if (*end || k < 0 || k > 3) {
            fprintf(stderr, "dsv4 generate: --spec must be 0..3 (draft tokens per forward), got '%s'\n", v);
            return 2;
        }
        spec = (int)k;
        if (spec && (!ids_spec || o.sp.temperature > 1e-5f || o.sp.repetition_penalty != 1.0f ||
                     o.sp.presence_penalty != 0.0f || o.sp.frequency_penalty != 0.0f)) {
            fprintf(stderr, "dsv4 generate: --spec works with --prompt-ids and greedy decoding only (temperature "
                            "0, no penalties) for now\n");
            return 2;
        }
    }
    int32_t *ids = NULL;
    int T = 0;
    if (ids_spec && cli_parse_ids("generate", ids_spec, &ids, &T)) return 2;
    if (text) {   /* reject a bad prompt before any model work */
        size_t n = strlen(text), bad = dsv4_utf8_valid_prefix(text, n);
        if (bad != n) {
            fprintf(stderr, "dsv4 generate: the prompt is not valid UTF-8 (invalid byte at offset %zu)\n", bad);
            return 2;
        }
    }
    uint64_t seed = o.seed_given ? o.sp.seed : clock_seed();
    cli_textgen g;
    if (!o.ctx) o.ctx = (ids_spec ? T : 0) + o.max_new + 4096;
    rc = cli_textgen_open(&g, "generate", &o, text != NULL);
    if (rc) goto done;
    if (ids_spec) {
        rc = run_ids(&g, &o, ids, T, seed, spec);
    } else {
        dsv4_token_list prompt = {0};
        rc = prompt_tokens(&g, text, cli_flag(argc, argv, "--raw"), o.thinking, &prompt);
        if (!rc) {
            cli_textgen_result r;
            rc = cli_textgen_generate(&g, &o, prompt.ids, prompt.n, o.thinking, seed, 1, &r);
            if (!rc) printf("\n");
            cli_textgen_result_free(&r);
        }
        dsv4_token_list_free(&prompt);
    }
    fflush(stdout);
    if (!rc && o.stats) cli_textgen_print_stats(&g, seed);
done:
    fflush(stdout);
    cli_textgen_close(&g);
    free(ids);
    return rc;
}
