/* bench_spec.c — `dsv4 bench --spec K --spec-accept A` (see bench_spec.h).
 *
 * For each batch b and context C: one engine; plain greedy decoding of b sequences filled to C tokens
 * (dsv4_engine_decode_greedy), then for each K = 1..k_max and each A <= K+1 the same with speculative
 * rounds (dsv4_engine_decode_spec, adaptive off) on b fresh sequences filled through the MTP step. Random
 * weights accept nothing, so the engine's acceptance is overridden (dsv4_engine_set_spec_accept): a round
 * of K drafts accepts floor((n+1)x) - floor(nx) of them at its n-th round (x = A - 1; a Bresenham pattern
 * whose mean is exactly x), so a round produces A tokens on average while every draft row, verification row,
 * rollback and MTP catch-up runs for real. The last round of a call may draft fewer (the call's end), so the
 * measured tokens per round (printed) is a little under A. Each figure: --warmup untimed tokens, then the
 * median of --repeats calls of --decode-steps tokens per sequence on the host clock; ms per token = call
 * time / tokens each sequence generated. Speed-up = plain ms per token / speculative ms per token, same
 * engine, batch and context, same run. */
#include "bench_spec.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "dsv4.h"
#include "dsv4_bench.h"

#define MAX_SEQS 4096

int cli_bench_spec_parse_accept(const char *s, int k_max, double *out, int max, int *n) {
    *n = 0;
    const char *p = s;
    while (*p) {
        char *end;
        errno = 0;
        double v = strtod(p, &end);
        if (errno || end == p || !(v >= 1.0) || v > k_max + 1 || *n == max) return -1;
        out[(*n)++] = v;
        if (*end == ',') end++;
        else if (*end) return -1;
        p = end;
    }
    return *n > 0 ? 0 : -1;
}

/* The forced acceptance pattern: per sequence, a round counter. */
typedef struct pattern {
    double x;                  /* mean drafts accepted per round (A - 1) */
    long round[MAX_SEQS];      /* by sequence handle */
} pattern;

static int forced_accept(void *user, int seq, int k) {
    pattern *p = user;
    long n = seq >= 0 && seq < MAX_SEQS ? p->round[seq]++ : 0;
    double x = p->x < k ? p->x : k;
    return (int)(floor((double)(n + 1) * x + 1e-9) - floor((double)n * x + 1e-9));
}

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static int32_t rand_token(int vocab) {
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    return 1 + (int32_t)((rng >> 33) % (uint64_t)(vocab - 1));
}

/* Opens b sequences and fills each with C random tokens (through the MTP step when mtp); *first gets a
 * token to start decoding from. */
static dsv4_status open_filled(dsv4_engine *e, int b, long C, int mtp, int *seqs, int32_t *first, dsv4_err *err) {
    const int V = dsv4_engine_vocab_size(e);
    const long chunk = 512;
    for (int i = 0; i < b; i++) {
        dsv4_status st = dsv4_engine_seq_open(e, &seqs[i], err);
        if (st != DSV4_OK) {
            while (i-- > 0) dsv4_engine_seq_close(e, seqs[i]);
            return st;
        }
    }
    int32_t *tok = malloc(sizeof *tok * (size_t)b * (size_t)chunk);
    dsv4_batch_item *items = malloc(sizeof *items * (size_t)b);
    float *logits = malloc(sizeof *logits * (size_t)V * (size_t)b);
    dsv4_status st = DSV4_OK;
    if (!tok || !items || !logits) {
        st = DSV4_ERR_NOMEM;
        snprintf(err->msg, sizeof err->msg, "bench: out of memory");
    }
    for (long done = 0; done < C && st == DSV4_OK; done += chunk) {
        long m = C - done < chunk ? C - done : chunk;
        for (int i = 0; i < b; i++) {
            for (long j = 0; j < m; j++) tok[(size_t)i * chunk + j] = rand_token(V);
            items[i] = (dsv4_batch_item){seqs[i], tok + (size_t)i * chunk, (int)m, 0};
        }
        st = mtp ? dsv4_engine_step_mtp(e, items, b, logits, NULL, NULL, err)
                 : dsv4_engine_step(e, items, b, logits, err);
    }
    for (int i = 0; i < b; i++) first[i] = rand_token(V);
    free(tok);
    free(items);
    free(logits);
    if (st != DSV4_OK)
        for (int i = 0; i < b; i++) dsv4_engine_seq_close(e, seqs[i]);
    return st;
}

/* One figure: K = 0 plain greedy, else speculative with the pattern. ms per token (median), and for K > 0
 * the measured tokens per round. */
static dsv4_status measure(dsv4_engine *e, const cli_bench_spec_args *a, int b, long C, int K, pattern *pat,
                           double *ms_per_token, double *tokens_per_round, dsv4_err *err) {
    int seqs[MAX_SEQS];
    int32_t first[MAX_SEQS];
    const int n_max = a->steps > a->warmup ? a->steps : a->warmup;
    int32_t *out = malloc(sizeof *out * (size_t)b * (size_t)(n_max > 0 ? n_max : 1));
    if (!out) {
        snprintf(err->msg, sizeof err->msg, "bench: out of memory");
        return DSV4_ERR_NOMEM;
    }
    dsv4_status st = open_filled(e, b, C, K > 0, seqs, first, err);
    if (st != DSV4_OK) {
        free(out);
        return st;
    }
    dsv4_spec_options so = {K, 0, 0};
    if (K > 0) {
        memset(pat->round, 0, sizeof pat->round);
        dsv4_engine_set_spec_accept(e, forced_accept, pat);
    }
    double t[32];
    long rounds = 0, tokens = 0;
    for (int r = -1; r < a->repeats && st == DSV4_OK; r++) {
        int n = r < 0 ? a->warmup : a->steps;
        if (n <= 0) continue;
        dsv4_spec_info info = {0, 0, 0};
        double t0 = dsv4_bench_now_s();
        st = K > 0 ? dsv4_engine_decode_spec(e, seqs, b, first, n, &so, NULL, out, &info, err)
                   : dsv4_engine_decode_greedy(e, seqs, b, first, n, out, NULL, err);
        double dt = dsv4_bench_now_s() - t0;
        for (int i = 0; i < b; i++) first[i] = out[(size_t)(n - 1) * b + i];
        if (r >= 0) {
            t[r] = dt * 1e3 / n;
            rounds += info.rounds;
            tokens += info.rounds + info.accepted;
        }
    }
    dsv4_engine_set_spec_accept(e, NULL, NULL);
    for (int i = 0; i < b; i++) dsv4_engine_seq_close(e, seqs[i]);
    free(out);
    if (st == DSV4_OK) {
        *ms_per_token = dsv4_bench_median(t, a->repeats);
        *tokens_per_round = rounds ? (double)tokens / (double)rounds : 1.0;
    }
    return st;
}

int cli_bench_spec(const cli_bench_spec_args *a) {
    static pattern pat;
    printf("speculative decoding (%s; acceptance simulated: a round of K drafts accepts a fixed pattern of counts "
           "with mean A-1)\n", a->backend);
    printf("%6s %8s %2s %6s %6s %10s %10s %9s\n", "batch", "context", "K", "A", "A_meas", "ms/token", "tokens/s",
           "speed-up");
    if (a->csv)
        fprintf(a->csv, "backend,batch,context,k,accept,accept_measured,ms_per_token,tokens_per_s,speedup,decode_steps,"
                        "repeats\n");
    int rc = 0;
    for (int ci = 0; ci < a->n_contexts && !rc; ci++) {
        for (int bi = 0; bi < a->n_batches && !rc; bi++) {
            const int b = (int)a->batches[bi];
            const long C = a->contexts[ci];
            if ((double)b * (double)C > (double)a->max_fill || b > MAX_SEQS) {
                fprintf(stderr, "bench: --spec: skipping batch %d at context %ld (batch*context > --max-fill %ld)\n", b,
                        C, a->max_fill);
                continue;
            }
            dsv4_err err = {{0}};
            dsv4_engine_options o;
            memset(&o, 0, sizeof o);
            o.model_dir = a->dir;
            if (!a->dir && a->synthetic) o.synthetic = *a->synthetic;
            o.backend = a->backend;
            o.n_threads = a->threads;
            o.gpus = a->gpus;
            o.max_seqs = b;
            o.max_tokens = (long)b * (C + a->warmup + (long)a->repeats * a->steps + 2 * DSV4_SPEC_MAX_K + 8);
            dsv4_engine *e = NULL;
            if (dsv4_engine_create(&o, &e, &err) != DSV4_OK) {
                fprintf(stderr, "dsv4 bench: --spec: %s\n", err.msg);
                rc = 1;
                break;
            }
            double plain = 0, tpr;
            dsv4_status st = measure(e, a, b, C, 0, &pat, &plain, &tpr, &err);
            if (st == DSV4_OK) {
                printf("%6d %8ld %2d %6s %6s %10.2f %10.1f %9s\n", b, C, 0, "-", "-", plain, b * 1e3 / plain, "1.00");
                if (a->csv)
                    fprintf(a->csv, "%s,%d,%ld,0,,,%.4f,%.2f,1.000,%d,%d\n", a->backend, b, C, plain, b * 1e3 / plain,
                            a->steps, a->repeats);
                fflush(stdout);
            }
            for (int K = 1; K <= a->k_max && st == DSV4_OK; K++)
                for (int ai = 0; ai < a->n_accept && st == DSV4_OK; ai++) {
                    const double A = a->accept[ai];
                    if (A > K + 1 + 1e-9) continue;   /* K drafts produce at most K+1 tokens */
                    pat.x = A - 1;
                    double ms = 0;
                    if ((st = measure(e, a, b, C, K, &pat, &ms, &tpr, &err)) != DSV4_OK) break;
                    printf("%6d %8ld %2d %6.2f %6.2f %10.2f %10.1f %9.2f\n", b, C, K, A, tpr, ms, b * 1e3 / ms,
                           plain / ms);
                    if (a->csv)
                        fprintf(a->csv, "%s,%d,%ld,%d,%.3f,%.3f,%.4f,%.2f,%.3f,%d,%d\n", a->backend, b, C, K, A, tpr, ms,
                                b * 1e3 / ms, plain / ms, a->steps, a->repeats);
                    fflush(stdout);
                }
            if (st != DSV4_OK) {
                fprintf(stderr, "dsv4 bench: --spec: batch %d, context %ld: %s\n", b, C, err.msg);
                rc = 1;
            }
            dsv4_engine_destroy(e);
        }
    }
    printf("(ms/token = median call time / tokens each sequence generated; tokens/s = batch x 1000 / ms/token; "
           "speed-up = plain ms/token / speculative ms/token in the same run; A_meas = tokens per verification "
           "round measured, a little under A where a call's last round drafts fewer)\n");
    return rc;
}
