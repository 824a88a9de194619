/* cmd_bench.c — `dsv4 bench`: prefill tokens/s at several prompt lengths and decode tokens/s at every
 * batch x context length, each figure with its ratio to a ceiling measured in the same run (include/dsv4_bench.h):
 *
 *   dsv4 bench [--model DIR | --synthetic PRESET [--layers N] [--experts N] [--keep] [--synth-dir DIR]
 *              [--on-device]]
 *              [--backend cuda|cpu] [--prompt-lens 128,1024,4096] [--batches 1,8,32]
 *              [--contexts 128,4096,32768] [--decode-steps N] [--repeats N] [--warmup N]
 *              [--max-fill N] [--threads N] [--csv FILE]
 * (no model: the embedded default checkpoint; no --backend: cuda when a GPU is visible, else cpu)
 *
 * Prefill: one sequence, the whole prompt in one engine step (the step returns after the logits are on the
 * host, so the host clock around it is the step's time); one warm-up then --repeats timed runs, median.
 * Ratio: achieved TFLOP/s (bench.h counting) / a cuBLASLt BF16 GEMM of the wo_b shape (cpu: none).
 * Decode: for each context C one engine whose KV holds one group of sequences per batch size b (b x C <=
 * --max-fill, else that pair is skipped); every sequence is filled to C tokens by prefill, then the group of
 * b runs --warmup greedy steps (graph capture) and --repeats calls of --decode-steps steps with
 * dsv4_engine_decode_greedy (cuda: graph replays on the device, timed with CUDA events; cpu: host clock),
 * median ms per step. Ratio: (bytes the step must read / time) / device copy bandwidth (read + write).
 * --synthetic writes a random-weight checkpoint (include/dsv4_synth.h) into a fresh directory under $TMPDIR (or
 * /tmp), loads it, and deletes it at the end unless --keep. Or, on the cuda backend, nothing is written: every
 * weight is generated directly in GPU memory (model/synth_ckpt.h; same value rules) — with --on-device, or
 * automatically when the checkpoint would not fit the free disk of the synth dir. Without --experts on cuda
 * (flash-shapes) the bench sizes the largest expert count (<= 256) that fits 0.9 x the free GPU memory with
 * the engines' workspace and KV; if that model's checkpoint would not fit the disk (or --on-device), it is
 * generated on the GPU with that count, else the checkpoint is written with the preset default (64).
 * Exit 0 ok, 1 failure, 2 usage. */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "bench_spec.h"
#include "cli.h"
#include "cli_opts.h"
#include "textgen.h"
#include "dsv4.h"
#include "dsv4_bench.h"
#include "dsv4_config.h"
#include "dsv4_synth.h"

#define MAX_LIST 16
#define MAX_ROWS 128

static const cli_command_help help = {
    .cmd = "bench",
    .usage = "usage: dsv4 bench [--model DIR | --synthetic PRESET] [options]\n"
             "  Without either, the embedded default checkpoint (random weights, tiny) is measured.\n",
    .footer = NULL,
};

static int parse_list(const char *s, long lo, long hi, long *out, int *n) {
    *n = 0;
    const char *p = s;
    while (*p) {
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (errno || end == p || v < lo || v > hi || *n == MAX_LIST) return -1;
        out[(*n)++] = v;
        if (*end == ',') end++;
        else if (*end) return -1;
        p = end;
    }
    return *n > 0 ? 0 : -1;
}

/* Deterministic token ids in [1, vocab). */
static uint64_t rng_state = 0x243F6A8885A308D3ull;
static int32_t rand_token(int vocab) {
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return 1 + (int32_t)((rng_state >> 33) % (uint64_t)(vocab - 1));
}

typedef struct row {
    const char *phase;      /* "prefill" or "decode" */
    int batch;
    long context;           /* decode: filled length at the start; prefill: the prompt length */
    long prompt_len;        /* prefill only */
    double ctx_mean;        /* decode: mean position over the timed steps */
    double tokens_per_s, ms_per_step, bytes_per_step, gbps, tflops, ratio;
} row;

typedef struct bench {
    const char *backend, *model_label;
    char device[512];
    int layers, experts, threads, gpus;
    int steps, repeats, warmup;
    long max_fill;
    double copy_gbps, gemm_tflops;
    dsv4_bench_cost cost;
    row rows[MAX_ROWS];
    int n_rows;
    FILE *csv;              /* rows are appended as they are measured (a run cut short keeps what it had) */
    const dsv4_synthetic_model *on_device; /* non-NULL: engines get this model, generated on the GPU (no dir) */
} bench;

static dsv4_status engine_open(const bench *b, const char *dir, int max_seqs, long max_tokens, dsv4_engine **e,
                               dsv4_err *err) {
    dsv4_engine_options o;
    memset(&o, 0, sizeof o);
    if (b->on_device) o.synthetic = *b->on_device;
    else o.model_dir = dir;
    o.backend = b->backend;
    o.n_threads = b->threads;
    o.gpus = b->gpus;
    o.max_seqs = max_seqs;
    o.max_tokens = max_tokens;
    return dsv4_engine_create(&o, e, err);
}

static void csv_row(const bench *b, const row *r);

static void add_row(bench *b, row r) {
    if (b->n_rows < MAX_ROWS) b->rows[b->n_rows++] = r;
    if (b->csv) csv_row(b, &r);
}

/* ---- prefill -------------------------------------------------------------------------------------- */

static int run_prefill(bench *b, const char *dir, const long *lens, int n_lens) {
    long maxP = 0;
    for (int i = 0; i < n_lens; i++) if (lens[i] > maxP) maxP = lens[i];
    dsv4_err err = {{0}};
    dsv4_engine *e = NULL;
    double t0 = dsv4_bench_now_s();
    if (engine_open(b, dir, 1, maxP + 256, &e, &err) != DSV4_OK) {
        fprintf(stderr, "dsv4 bench: %s\n", err.msg);
        return 1;
    }
    fprintf(stderr, "bench: prefill engine ready in %.1f s\n", dsv4_bench_now_s() - t0);
    const int V = dsv4_engine_vocab_size(e);
    int32_t *tok = malloc(sizeof *tok * (size_t)maxP);
    float *logits = malloc(sizeof *logits * (size_t)V);
    int rc = 0;
    if (!tok || !logits) { fprintf(stderr, "dsv4 bench: out of memory\n"); rc = 1; }
    for (int i = 0; i < n_lens && !rc; i++) {
        const long P = lens[i];
        double t[32];
        for (int r = 0; r <= b->repeats && !rc; r++) {
            for (long j = 0; j < P; j++) tok[j] = rand_token(V);
            int seq;
            if (dsv4_engine_seq_open(e, &seq, &err) != DSV4_OK) { rc = 1; break; }
            dsv4_batch_item it = {seq, tok, (int)P, 1};
            double s0 = dsv4_bench_now_s();
            dsv4_status st = dsv4_engine_step(e, &it, 1, logits, &err);
            double dt = dsv4_bench_now_s() - s0;
            dsv4_engine_seq_close(e, seq);
            if (st != DSV4_OK) { rc = 1; break; }
            if (r > 0) t[r - 1] = dt;   /* run 0 is the warm-up */
        }
        if (rc) { fprintf(stderr, "dsv4 bench: prefill %ld: %s\n", P, err.msg); break; }
        double s = dsv4_bench_median(t, b->repeats);
        row w = {"prefill", 1, P, P, 0, 0, 0, 0, 0, 0, 0};
        w.tokens_per_s = (double)P / s;
        w.ms_per_step = s * 1e3;
        w.bytes_per_step = dsv4_bench_prefill_bytes(&b->cost, P);
        w.gbps = w.bytes_per_step / s / 1e9;
        w.tflops = dsv4_bench_prefill_flops(&b->cost, P) / s / 1e12;
        w.ratio = b->gemm_tflops > 0 ? w.tflops / (b->gpus * b->gemm_tflops) : -1;
        add_row(b, w);
        fprintf(stderr, "bench: prefill %6ld tokens: %9.1f tok/s, %8.2f ms, %.2f TFLOP/s\n", P, w.tokens_per_s,
                w.ms_per_step, w.tflops);
    }
    free(tok);
    free(logits);
    dsv4_engine_destroy(e);
    return rc;
}

/* ---- decode --------------------------------------------------------------------------------------- */

/* Prefills every listed sequence to C tokens, chunk tokens per sequence per step. */
static dsv4_status fill(dsv4_engine *e, const int *seqs, int n, long C, dsv4_err *err) {
    const int V = dsv4_engine_vocab_size(e);
    const long chunk = 1024;
    int32_t *tok = malloc(sizeof *tok * (size_t)n * (size_t)chunk);
    dsv4_batch_item *items = malloc(sizeof *items * (size_t)n);
    float *logits = malloc(sizeof *logits * (size_t)V);
    dsv4_status st = tok && items && logits ? DSV4_OK : DSV4_ERR_NOMEM;
    if (st != DSV4_OK && err) snprintf(err->msg, sizeof err->msg, "bench: out of memory");
    for (long done = 0; done < C && st == DSV4_OK; done += chunk) {
        long m = C - done < chunk ? C - done : chunk;
        for (int i = 0; i < n; i++) {
            for (long j = 0; j < m; j++) tok[(size_t)i * chunk + j] = rand_token(V);
            items[i] = (dsv4_batch_item){seqs[i], tok + (size_t)i * chunk, (int)m, 0};
        }
        st = dsv4_engine_step(e, items, n, logits, err);
    }
    free(tok);
    free(items);
    free(logits);
    return st;
}

static int run_decode_context(bench *b, const char *dir, long C, const long *batches, int n_b) {
    int use[MAX_LIST], total = 0;
    for (int i = 0; i < n_b; i++) {
        use[i] = (double)batches[i] * (double)C <= (double)b->max_fill;
        if (use[i]) total += (int)batches[i];
        else
            fprintf(stderr, "bench: skipping batch %ld at context %ld (%ld fill tokens > --max-fill %ld)\n",
                    batches[i], C, batches[i] * C, b->max_fill);
    }
    if (!total) return 0;
    const long extra = b->warmup + (long)b->repeats * b->steps;
    const long per_seq = C + extra + 256;
    dsv4_err err = {{0}};
    dsv4_engine *e = NULL;
    double t0 = dsv4_bench_now_s();
    if (engine_open(b, dir, total, (long)total * per_seq, &e, &err) != DSV4_OK) {
        fprintf(stderr, "dsv4 bench: %s\n", err.msg);
        return 1;
    }
    double t1 = dsv4_bench_now_s();
    int *seqs = malloc(sizeof *seqs * (size_t)total);
    int32_t *first = malloc(sizeof *first * (size_t)total);
    int32_t *out = malloc(sizeof *out * (size_t)total * (size_t)(b->steps > b->warmup ? b->steps : b->warmup));
    int rc = 0, opened = 0;
    if (!seqs || !first || !out) { fprintf(stderr, "dsv4 bench: out of memory\n"); rc = 1; }
    for (; opened < total && !rc; opened++)
        if (dsv4_engine_seq_open(e, &seqs[opened], &err) != DSV4_OK) rc = 1;
    if (!rc) {
        if (fill(e, seqs, total, C, &err) != DSV4_OK) rc = 1;
        else
            fprintf(stderr, "bench: context %ld: engine %.1f s, filled %d sequences (%ld tokens) in %.1f s\n", C,
                    t1 - t0, total, (long)total * C, dsv4_bench_now_s() - t1);
    }
    const int V = dsv4_engine_vocab_size(e);
    int at = 0;
    for (int i = 0; i < n_b && !rc; i++) {
        if (!use[i]) continue;
        const int B = (int)batches[i];
        const int *grp = seqs + at;
        at += B;
        for (int j = 0; j < B; j++) first[j] = rand_token(V);
        double ms = 0, t[32];
        if (b->warmup > 0 && dsv4_engine_decode_greedy(e, grp, B, first, b->warmup, out, &ms, &err) != DSV4_OK) {
            rc = 1;
            break;
        }
        int last = b->warmup;
        for (int r = 0; r < b->repeats && !rc; r++) {
            if (last > 0)
                for (int j = 0; j < B; j++) first[j] = out[(size_t)(last - 1) * B + j];
            double s0 = dsv4_bench_now_s();
            ms = 0;
            if (dsv4_engine_decode_greedy(e, grp, B, first, b->steps, out, &ms, &err) != DSV4_OK) { rc = 1; break; }
            double host_ms = (dsv4_bench_now_s() - s0) * 1e3;
            last = b->steps;
            t[r] = (ms > 0 ? ms : host_ms) / b->steps;
        }
        if (rc) break;
        row w = {"decode", B, C, 0, 0, 0, 0, 0, 0, 0, 0};
        w.ms_per_step = dsv4_bench_median(t, b->repeats);
        w.tokens_per_s = B / (w.ms_per_step * 1e-3);
        w.ctx_mean = (double)C + b->warmup + 0.5 * (double)b->repeats * b->steps;
        w.bytes_per_step = dsv4_bench_decode_bytes(&b->cost, B, w.ctx_mean);
        w.gbps = w.bytes_per_step / (w.ms_per_step * 1e-3) / 1e9;
        w.ratio = b->copy_gbps > 0 ? w.gbps / (b->gpus * b->copy_gbps) : -1;
        add_row(b, w);
        fprintf(stderr, "bench: decode batch %3d context %6ld: %8.3f ms/step, %10.1f tok/s, %.0f GB/s (%.3f)\n", B, C,
                w.ms_per_step, w.tokens_per_s, w.gbps, w.ratio);
    }
    if (rc) fprintf(stderr, "dsv4 bench: decode at context %ld: %s\n", C, err.msg);
    for (int i = 0; i < opened; i++) dsv4_engine_seq_close(e, seqs[i]);
    free(seqs);
    free(first);
    free(out);
    dsv4_engine_destroy(e);
    return rc;
}

/* ---- output --------------------------------------------------------------------------------------- */

static void print_table(const bench *b) {
    printf("\ndsv4 bench: %s, backend %s, %s (%d layers, %d experts)", b->device, b->backend, b->model_label,
           b->layers, b->experts);
    if (b->gpus > 1) printf(", %d ranks (ratios against %d x the one-GPU ceilings)", b->gpus, b->gpus);
    printf("\n");
    printf("ceilings measured in this run: copy %.0f GB/s (read+write)", b->copy_gbps);
    if (b->gemm_tflops > 0) printf(", cuBLASLt BF16 GEMM %.0f TFLOP/s", b->gemm_tflops);
    printf("\n\n");
    int any = 0;
    for (int i = 0; i < b->n_rows; i++) {
        const row *r = &b->rows[i];
        if (strcmp(r->phase, "prefill")) continue;
        if (!any++) printf("%-8s %8s %12s %10s %9s %9s\n", "prefill", "tokens", "tokens/s", "ms", "TFLOP/s",
                           "vs GEMM");
        printf("%-8s %8ld %12.1f %10.2f %9.3f ", "", r->prompt_len, r->tokens_per_s, r->ms_per_step, r->tflops);
        if (r->ratio >= 0) printf("%9.3f\n", r->ratio);
        else printf("%9s\n", "-");
    }
    if (any) printf("\n");
    any = 0;
    for (int i = 0; i < b->n_rows; i++) {
        const row *r = &b->rows[i];
        if (strcmp(r->phase, "decode")) continue;
        if (!any++)
            printf("%-8s %6s %8s %10s %12s %10s %9s %9s\n", "decode", "batch", "context", "ms/step", "tokens/s",
                   "MB/step", "GB/s", "roofline");
        printf("%-8s %6d %8ld %10.3f %12.1f %10.1f %9.1f %9.3f\n", "", r->batch, r->context, r->ms_per_step,
               r->tokens_per_s, r->bytes_per_step / 1e6, r->gbps, r->ratio);
    }
    if (any)
        printf("(roofline = (bytes the step must read / time) / copy bandwidth; MB/step at the mean timed context)\n");
}

static void csv_str(FILE *f, const char *s) {
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"') fputc('"', f);
        fputc(*s, f);
    }
    fputc('"', f);
}

static int csv_open(bench *b, const char *path) {
    b->csv = fopen(path, "w");
    if (!b->csv) {
        fprintf(stderr, "dsv4 bench: cannot write %s: %s\n", path, strerror(errno));
        return 1;
    }
    fprintf(b->csv, "backend,device,model,layers,experts,phase,batch,context,prompt_len,tokens_per_s,ms_per_step,"
                    "bytes_per_step,roofline_ratio,achieved_gbps,copy_gbps,tflops,peer_tflops,decode_steps,repeats,"
                    "ctx_mean,gpus\n");
    fflush(b->csv);
    return 0;
}

static void csv_row(const bench *b, const row *r) {
    FILE *f = b->csv;
    fprintf(f, "%s,", b->backend);
    csv_str(f, b->device);
    fputc(',', f);
    csv_str(f, b->model_label);
    fprintf(f, ",%d,%d,%s,%d,%ld,%ld,%.3f,%.4f,%.0f,", b->layers, b->experts, r->phase, r->batch, r->context,
            r->prompt_len, r->tokens_per_s, r->ms_per_step, r->bytes_per_step);
    if (r->ratio >= 0) fprintf(f, "%.4f", r->ratio);
    fprintf(f, ",%.1f,%.1f,%.3f,", r->gbps, b->copy_gbps, r->tflops);
    if (b->gemm_tflops > 0) fprintf(f, "%.1f", b->gemm_tflops);
    fprintf(f, ",%d,%d,%.1f,%d\n", strcmp(r->phase, "decode") ? 0 : b->steps, b->repeats, r->ctx_mean, b->gpus);
    fflush(f);
}

static int csv_close(bench *b, const char *path) {
    if (!b->csv) return 0;
    int bad = ferror(b->csv);
    if (fclose(b->csv) || bad) {
        fprintf(stderr, "dsv4 bench: error writing %s\n", path);
        return 1;
    }
    b->csv = NULL;
    return 0;
}

/* Removes what dsv4_synth_write put in dir (config.json, *.safetensors, the index, tokenizer.json), then dir
 * itself if that leaves it empty. */
static void remove_synth(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *de;
    char p[4096];
    while ((de = readdir(d))) {
        const char *n = de->d_name;
        size_t l = strlen(n);
        int ours = !strcmp(n, "config.json") || !strcmp(n, "model.safetensors.index.json") ||
                   !strcmp(n, "tokenizer.json") || (l > 12 && !strcmp(n + l - 12, ".safetensors"));
        if (!ours) continue;
        snprintf(p, sizeof p, "%s/%s", dir, n);
        if (unlink(p)) fprintf(stderr, "bench: cannot remove %s: %s\n", p, strerror(errno));
    }
    closedir(d);
    (void)rmdir(dir);
}

/* The largest engine the run will open: most sequences and most KV tokens (of the prefill engine and of the
 * decode engine of every context; run_prefill and run_decode_context size them the same way). prompt or ctx
 * NULL: that phase is skipped. */
static void engines_need(const bench *b, const long *prompt, int n_prompt, const long *ctx, int n_ctx,
                         const long *batches, int n_b, int *max_seqs, long *max_tokens) {
    *max_seqs = 1;
    *max_tokens = 1;
    for (int i = 0; prompt && i < n_prompt; i++)
        if (prompt[i] + 256 > *max_tokens) *max_tokens = prompt[i] + 256;
    for (int c = 0; ctx && c < n_ctx; c++) {
        int total = 0;
        for (int i = 0; i < n_b; i++)
            if ((double)batches[i] * (double)ctx[c] <= (double)b->max_fill) total += (int)batches[i];
        long per_seq = ctx[c] + b->warmup + (long)b->repeats * b->steps + 256;
        if (total > *max_seqs) *max_seqs = total;
        if ((long)total * per_seq > *max_tokens) *max_tokens = (long)total * per_seq;
    }
}

int dsv4_cmd_bench(int argc, char **argv) {
    const char *model = NULL, *synthetic = NULL, *synth_dir = NULL, *csv = NULL, *backend = NULL;
    const char *s_prompt = "128,1024,4096", *s_batch = "1,8,32", *s_ctx = "128,4096,32768";
    int layers = 0, experts = 0, steps = 64, repeats = 3, warmup = 8, threads = 0, gpus = 1;
    uint64_t seed = 0;
    long max_fill = 131072;
    int keep = 0, no_prefill = 0, no_decode = 0;
    int on_device = 0; /* --on-device */
    int profile = 0; /* --profile */
    int spec_k = 0;  /* --spec */
    const char *spec_accept = "1.8,2.3,2.5";
    char def_backend[64];
    snprintf(def_backend, sizeof def_backend, "cuda when a GPU is visible, else cpu: %s", cli_auto_backend());
    const cli_option opts[] = {
        CLI_OPT_ENTRY_MODEL(&model, "checkpoint directory (default: the embedded random-weight default)"),
        {.names = "--synthetic", .metavar = "PRESET", .kind = CLI_OPT_STR, .dest = &synthetic,
         .choices = "flash-shapes|tiny",
         .help = "write a random-weight checkpoint first: flash-shapes (V4-Flash dims) or tiny"},
        {.names = "--layers", .metavar = "N", .kind = CLI_OPT_INT, .dest = &layers, .lo = 0, .hi = 128,
         .help = "synthetic: main layers", .def = "flash-shapes: 8"},
        {.names = "--experts", .metavar = "N", .kind = CLI_OPT_INT, .dest = &experts, .lo = 0, .hi = 1024,
         .help = "synthetic: routed experts", .def = "flash-shapes: 64"},
        {.names = "--seed", .metavar = "S", .kind = CLI_OPT_U64, .dest = &seed, .help = "synthetic: RNG seed",
         .def = "0"},
        {.names = "--synth-dir", .metavar = "DIR", .kind = CLI_OPT_STR, .dest = &synth_dir,
         .help = "synthetic: write here (default: a new dir under $TMPDIR or /tmp)"},
        {.names = "--keep", .kind = CLI_OPT_FLAG, .dest = &keep, .help = "synthetic: keep the checkpoint afterwards"},
        {.names = "--on-device", .kind = CLI_OPT_FLAG, .dest = &on_device,
         .help = "synthetic, cuda: generate the weights directly in GPU memory, write nothing (automatic when the "
                 "checkpoint would not fit the free disk); without --experts, as many experts as fit the GPU"},
        CLI_OPT_ENTRY_BACKEND(&backend, def_backend),
        {.names = "--prompt-lens", .metavar = "LIST", .kind = CLI_OPT_STR, .dest = &s_prompt,
         .help = "prefill prompt lengths", .def = "128,1024,4096"},
        {.names = "--batches", .metavar = "LIST", .kind = CLI_OPT_STR, .dest = &s_batch, .help = "decode batch sizes",
         .def = "1,8,32"},
        {.names = "--contexts", .metavar = "LIST", .kind = CLI_OPT_STR, .dest = &s_ctx,
         .help = "decode context lengths (KV filled by prefill)", .def = "128,4096,32768"},
        {.names = "--decode-steps", .metavar = "N", .kind = CLI_OPT_INT, .dest = &steps, .lo = 1, .hi = 4096,
         .help = "greedy steps per timed call", .def = "64"},
        {.names = "--repeats", .metavar = "N", .kind = CLI_OPT_INT, .dest = &repeats, .lo = 1, .hi = 31,
         .help = "timed calls (median)", .def = "3"},
        {.names = "--warmup", .metavar = "N", .kind = CLI_OPT_INT, .dest = &warmup, .lo = 0, .hi = 4096,
         .help = "untimed greedy steps first (graph capture)", .def = "8"},
        {.names = "--max-fill", .metavar = "N", .kind = CLI_OPT_LONG, .dest = &max_fill, .lo = 1, .hi = 1L << 40,
         .help = "skip (batch, context) pairs with batch*context > N tokens", .def = "131072"},
        CLI_OPT_ENTRY_THREADS(&threads),
        CLI_OPT_ENTRY_GPUS(&gpus),
        {.names = "--csv", .metavar = "FILE", .kind = CLI_OPT_STR, .dest = &csv, .help = "write every row as CSV"},
        {.names = "--no-prefill", .kind = CLI_OPT_FLAG, .dest = &no_prefill, .help = "skip the prefill phase"},
        {.names = "--no-decode", .kind = CLI_OPT_FLAG, .dest = &no_decode, .help = "skip the decode phase"},
        {.names = "--spec", .metavar = "K", .kind = CLI_OPT_INT, .dest = &spec_k, .lo = 0, .hi = DSV4_SPEC_MAX_K,
         .help = "instead of prefill/decode: MTP speculative decoding with K = 1..K drafts per round\n"
                 "next to plain decoding, ms per generated token (bench_spec.h)", .def = "0 = off"},
        {.names = "--spec-accept", .metavar = "LIST", .kind = CLI_OPT_STR, .dest = &spec_accept,
         .help = "with --spec: simulated tokens per round, each in [1, K+1]", .def = "1.8,2.3,2.5"},
        {.names = "--profile", .kind = CLI_OPT_FLAG, .dest = &profile,
         .help = "cuda: per-op device-time table of one prefill (largest --prompt-lens) and one decode step (first "
                 "--batches at first --contexts), eager (engine/profile.h)"},
    };
    int rc = cli_opts_parse(&help, opts, (int)(sizeof opts / sizeof opts[0]), argc, argv);
    if (rc) return rc == CLI_HELP_SHOWN ? 0 : rc;
    if (model && synthetic) {
        fprintf(stderr, "dsv4 bench: give at most one of --model DIR and --synthetic PRESET\n");
        return 2;
    }
    if (on_device && !synthetic) {
        fprintf(stderr, "dsv4 bench: --on-device needs --synthetic PRESET\n");
        return 2;
    }
    if (!backend) backend = cli_auto_backend();
    long prompt[MAX_LIST], batch[MAX_LIST], ctx[MAX_LIST];
    int n_prompt, n_batch, n_ctx;
    if (parse_list(s_prompt, 1, 1L << 20, prompt, &n_prompt) || parse_list(s_batch, 1, 4096, batch, &n_batch) ||
        parse_list(s_ctx, 1, 1L << 22, ctx, &n_ctx)) {
        fprintf(stderr, "dsv4 bench: bad list (comma-separated positive integers, at most %d)\n", MAX_LIST);
        return 2;
    }

    static bench b;
    memset(&b, 0, sizeof b);
    b.backend = backend;
    b.threads = threads;
    b.gpus = gpus;
    b.steps = steps;
    b.repeats = repeats;
    b.warmup = warmup;
    b.max_fill = max_fill;
    dsv4_err err = {{0}};
    dsv4_config cfg;
    char dir_buf[4096], label[4200];
    char *model_dir = NULL;   /* --model or the embedded default, checked (cli_model_resolve) */
    if (!synthetic) {
        if (cli_model_resolve("bench", model, NULL, 0, &model_dir)) return 1;
        model = model_dir;
    }
    const char *dir = model;
    int made_dir = 0;
    static dsv4_synthetic_model syn;   /* the model the engines generate on the GPU (on_device) */
    if (synthetic) {
        const int flash = !strcmp(synthetic, "flash-shapes"), cuda1 = !strcmp(backend, "cuda") && gpus <= 1;
        int dl = flash ? 8 : 0, de = flash ? 64 : 0;
        if (on_device && !cuda1) {
            fprintf(stderr, "dsv4 bench: --on-device needs --backend cuda and one GPU (the weights exist only in GPU "
                            "memory)\n");
            return 2;
        }
        if (dsv4_synth_config_preset(synthetic, layers ? layers : dl, experts ? experts : de, &cfg, &err) !=
            DSV4_OK) {
            fprintf(stderr, "dsv4 bench: %s\n", err.msg);
            return 2;
        }
        const char *tmpd = getenv("TMPDIR");
        const char *disk = synth_dir ? synth_dir : tmpd && *tmpd ? tmpd : "/tmp";
        const double disk_free = dsv4_bench_fs_free_bytes(disk);   /* < 0: unknown (e.g. not created yet) */
        if (cuda1 && flash && !experts) {
            int ms, efit;
            long mt;
            double gpu_free = 0;
            engines_need(&b, no_prefill ? NULL : prompt, n_prompt, no_decode ? NULL : ctx, n_ctx, batch, n_batch, &ms,
                         &mt);
            if (dsv4_bench_cuda_free_bytes(0, &gpu_free, &err) != DSV4_OK ||
                dsv4_bench_synth_fit_experts(synthetic, cfg.n_layers, ms, mt, 0.9 * gpu_free, 256, &efit, &err) !=
                    DSV4_OK) {
                fprintf(stderr, "dsv4 bench: sizing the experts to the GPU: %s\n", err.msg);
                return 1;
            }
            dsv4_config cf;
            (void)dsv4_synth_config_preset(synthetic, cfg.n_layers, efit, &cf, &err);
            const double need = dsv4_bench_synth_disk_bytes(&cf);
            fprintf(stderr, "bench: %d experts per layer fit 0.9 x %.1f GB free GPU memory (engines up to %d sequences, "
                            "%ld KV tokens); as a checkpoint %.1f GB, %.1f GB free in %s\n", efit, gpu_free / 1e9, ms,
                    mt, need / 1e9, disk_free / 1e9, disk);
            if (on_device || (disk_free >= 0 && need > disk_free)) {
                on_device = 1;
                cfg = cf;
            } else {
                fprintf(stderr, "bench: it fits the disk: writing the checkpoint with the preset's %d experts (pass "
                                "--on-device for %d generated on the GPU, or --experts N)\n", cfg.n_routed_experts,
                        efit);
            }
        }
        if (!on_device && disk_free >= 0 && dsv4_bench_synth_disk_bytes(&cfg) > disk_free) {
            if (!cuda1) {
                fprintf(stderr, "dsv4 bench: the %s checkpoint (%.1f GB) does not fit the %.1f GB free in %s; give "
                                "--synth-dir on a larger disk, fewer --layers/--experts, or --backend cuda (weights "
                                "generated in GPU memory)\n", synthetic, dsv4_bench_synth_disk_bytes(&cfg) / 1e9,
                        disk_free / 1e9, disk);
                return 1;
            }
            fprintf(stderr, "bench: the checkpoint (%.1f GB) would not fit the %.1f GB free in %s: generating the "
                            "weights on the GPU instead\n", dsv4_bench_synth_disk_bytes(&cfg) / 1e9, disk_free / 1e9,
                    disk);
            on_device = 1;
        }
    }
    if (synthetic && on_device) {
        /* --spec: the MTP block drafts, so it is generated too (one more layer than the expert fit above
         * counted; within the 10% it leaves free) */
        syn = (dsv4_synthetic_model){synthetic, cfg.n_layers, cfg.n_routed_experts, (uint64_t)seed, 1, spec_k > 0};
        b.on_device = &syn;
        fprintf(stderr, "bench: %s weights (%d layers, %d experts, %s) are generated in GPU memory when "
                        "each engine starts; nothing is written to disk\n", synthetic, cfg.n_layers,
                cfg.n_routed_experts, spec_k > 0 ? "with the MTP block" : "no MTP block");
        snprintf(label, sizeof label, "synthetic:%s (generated on the GPU)", synthetic);
        if (profile) {
            fprintf(stderr, "dsv4 bench: --profile reads a checkpoint directory; not available with weights generated "
                            "on the GPU (give --experts N small enough for the disk)\n");
            return 2;
        }
    } else if (synthetic) {
        if (synth_dir) {
            dir = synth_dir;
        } else {
            const char *tmp = getenv("TMPDIR");
            snprintf(dir_buf, sizeof dir_buf, "%s/dsv4_bench_XXXXXX", tmp && *tmp ? tmp : "/tmp");
            if (!mkdtemp(dir_buf)) {
                fprintf(stderr, "dsv4 bench: cannot create a directory %s: %s\n", dir_buf, strerror(errno));
                return 1;
            }
            dir = dir_buf;
            made_dir = 1;
        }
        dsv4_synth_options so;
        dsv4_synth_options_default(&so);
        so.verbose = 1;
        double t0 = dsv4_bench_now_s();
        if (dsv4_synth_write(&cfg, dir, (uint64_t)seed, &so, &err) != DSV4_OK) {
            fprintf(stderr, "dsv4 bench: %s\n", err.msg);
            if (!keep) remove_synth(dir);
            return 1;
        }
        fprintf(stderr, "bench: wrote %s checkpoint (%d layers, %d experts) to %s in %.1f s\n", synthetic,
                cfg.n_layers, cfg.n_routed_experts, dir, dsv4_bench_now_s() - t0);
        snprintf(label, sizeof label, "synthetic:%s", synthetic);
        cli_model_notice_if_random(dir);
    } else {
        snprintf(label, sizeof label, "%s/config.json", model);
        if (dsv4_config_load(label, &cfg, &err) != DSV4_OK) {
            fprintf(stderr, "dsv4 bench: %s\n", err.msg);
            free(model_dir);
            return 1;
        }
        snprintf(label, sizeof label, "%s", model);
    }
    b.model_label = label;
    b.layers = cfg.n_layers;
    b.experts = cfg.n_routed_experts;
    if (dsv4_bench_cost_init(&cfg, &b.cost, &err) != DSV4_OK) {
        fprintf(stderr, "dsv4 bench: %s\n", err.msg);
        rc = 1;
        goto done;
    }

    /* Ceilings first, before the engines take the device memory. */
    if (!strcmp(backend, "cuda")) {
        char desc[512];
        long gm = 4096;
        if (dsv4_bench_cuda_peers(0, &cfg, (int)gm, &b.copy_gbps, &b.gemm_tflops, desc, sizeof desc, &err) != DSV4_OK) {
            fprintf(stderr, "dsv4 bench: %s\n", err.msg);
            rc = 1;
            goto done;
        }
        fprintf(stderr, "bench: %s\nbench: device copy %.0f GB/s (read+write), cuBLASLt BF16 GEMM [%ld x %d x %d] "
                        "%.0f TFLOP/s\n", desc, b.copy_gbps, gm, cfg.dim, cfg.o_groups * cfg.o_lora_rank,
                b.gemm_tflops);
        char *comma = strchr(desc, ',');
        if (comma) *comma = 0;
        snprintf(b.device, sizeof b.device, "%s", desc);
    } else {
        long nc = sysconf(_SC_NPROCESSORS_ONLN);
        b.copy_gbps = dsv4_bench_host_copy_gbps();
        snprintf(b.device, sizeof b.device, "cpu (%ld of %ld threads)", threads > 0 ? (long)threads : nc, nc);
        fprintf(stderr, "bench: host memcpy %.1f GB/s (read+write, one thread)\n", b.copy_gbps);
    }
    fprintf(stderr, "bench: per decode step: dense weights %.1f MB + head %.1f MB + %.2f MB per routed expert per "
                    "layer; KV %.3f MB per sequence at context 4096\n", b.cost.dense_bytes / 1e6,
            b.cost.head_bytes / 1e6, b.cost.expert_bytes / 1e6, dsv4_bench_kv_read_bytes(&b.cost, 4096) / 1e6);

    if (spec_k > 0) {   /* speculative decoding instead of the prefill and decode phases (own CSV columns) */
        double acc[MAX_LIST];
        int n_acc;
        if (cli_bench_spec_parse_accept(spec_accept, spec_k, acc, MAX_LIST, &n_acc)) {
            fprintf(stderr, "dsv4 bench: --spec-accept needs comma-separated numbers in [1, %d] (got '%s')\n",
                    spec_k + 1, spec_accept);
            rc = 2;
            goto done;
        }
        FILE *f = csv ? fopen(csv, "w") : NULL;
        if (csv && !f) {
            fprintf(stderr, "dsv4 bench: cannot write %s: %s\n", csv, strerror(errno));
            rc = 1;
            goto done;
        }
        cli_bench_spec_args sa = {dir, b.on_device, backend, threads, gpus, batch, n_batch, ctx, n_ctx, spec_k, acc, n_acc,
                                  steps, repeats, warmup, max_fill, f};
        rc = cli_bench_spec(&sa);
        if (f && (ferror(f) | fclose(f))) {
            fprintf(stderr, "dsv4 bench: error writing %s\n", csv);
            rc = 1;
        }
        goto done;
    }
    if (csv && csv_open(&b, csv)) {
        rc = 1;
        goto done;
    }
    if (!no_prefill) rc = run_prefill(&b, dir, prompt, n_prompt);
    for (int i = 0; i < n_ctx && !rc && !no_decode; i++) rc = run_decode_context(&b, dir, ctx[i], batch, n_batch);

    if (b.n_rows) print_table(&b);
    if (profile && !rc) {
        long pmax = 0;
        for (int i = 0; i < n_prompt; i++) pmax = prompt[i] > pmax ? prompt[i] : pmax;
        if (strcmp(backend, "cuda") || gpus != 1) {
            fprintf(stderr, "dsv4 bench: --profile needs --backend cuda and one GPU\n");
            rc = 1;
        } else {
            rc = dsv4_bench_profile(dir, pmax, (int)batch[0], ctx[0], (int)threads, b.copy_gbps, b.gemm_tflops, stdout);
        }
    }
    if (csv_close(&b, csv)) rc = 1;
done:
    if (b.csv) (void)csv_close(&b, csv);
    free(model_dir);
    if (synthetic && on_device) {
        /* nothing was written */
    } else if (synthetic && !keep) {
        remove_synth(dir);
        if (made_dir) (void)rmdir(dir);
        fprintf(stderr, "bench: removed the synthetic checkpoint %s\n", dir);
    } else if (synthetic) {
        fprintf(stderr, "bench: kept the synthetic checkpoint in %s\n", dir);
    }
    return rc;
}
