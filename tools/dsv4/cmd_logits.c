/* cmd_logits.c — `dsv4 logits`: teacher-forced logits of a token list, for comparisons with oracles.
 * Prefills the first N tokens, then decodes the rest one by one; writes float32 logits [T-N+1, vocab]
 * (row 0 = after the prefill, at position N-1; row i = after decoding position N-1+i). With --dump-dir,
 * writes hc_L.npy = the hyper-connection state after layer L at every position, [T, hc, hidden]. With
 * --mtp-out, every token goes through the MTP step too and the MTP block's logits are written as float32
 * [T-1, vocab]: row i = position i (h_i with the embedding of token i+1), predicting token i+2.
 * Without --model it runs on the embedded default checkpoint (textgen.h: cli_model_resolve). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"
#include "cli_opts.h"
#include "cli_util.h"
#include "textgen.h"
#include "dsv4_npy.h"
#include "dsv4.h"

typedef struct dump_state {
    int n_layers, hc, hidden;
    long positions, filled; /* rows written so far for the current layer sweep */
    float **per_layer;      /* [n_layers][positions * hc * hidden] */
    long step_row0;         /* position of the first row of the running step */
    int step_rows;          /* rows of the running step */
    float **teacher;        /* [n_layers] oracle state after layer L, [positions, hc, hidden], or NULL */
    long teacher_row;       /* hc * hidden of the teacher files */
    int teacher_mismatch;   /* set when the engine's hc * hidden differs from the files' */
    float *final_teacher;   /* --mtp-teacher: [positions, hc, hidden] replaces the last layer's output, or NULL */
    long final_row;         /* hc * hidden of that file */
} dump_state;

static void dump_hook(void *user, int layer, float *X, int n_rows, int hc, int hidden) {
    dump_state *d = user;
    /* --mtp-teacher: the state after the last layer (what the head and the MTP block read) is the file's. */
    if (d->final_teacher && layer == d->n_layers - 1) {
        size_t row = (size_t)hc * hidden;
        if ((long)row != d->final_row) {
            d->teacher_mismatch = 1;
            return;
        }
        if (d->per_layer) {
            if (!d->per_layer[layer]) d->per_layer[layer] = calloc((size_t)d->positions * row, sizeof(float));
            if (d->per_layer[layer]) memcpy(d->per_layer[layer] + (size_t)d->step_row0 * row, X, sizeof(float) * row * (size_t)n_rows);
            d->hc = hc;
            d->hidden = hidden;
        }
        memcpy(X, d->final_teacher + (size_t)d->step_row0 * row, sizeof(float) * row * (size_t)n_rows);
        return;
    }
    /* Teacher forcing: after recording this layer's own output, replace it by the oracle's so the next
     * layer sees exactly the oracle's input. */
    if (d->teacher && layer + 1 < d->n_layers && d->teacher[layer]) {
        size_t row = (size_t)hc * hidden;
        if ((long)row != d->teacher_row) {
            d->teacher_mismatch = 1;
            return;
        }
        if (d->per_layer) {
            if (!d->per_layer[layer]) d->per_layer[layer] = calloc((size_t)d->positions * row, sizeof(float));
            if (d->per_layer[layer]) memcpy(d->per_layer[layer] + (size_t)d->step_row0 * row, X, sizeof(float) * row * (size_t)n_rows);
            d->hc = hc;
            d->hidden = hidden;
        }
        memcpy(X, d->teacher[layer] + (size_t)d->step_row0 * row, sizeof(float) * row * (size_t)n_rows);
        return;
    }
    if (!d->per_layer) return;
    size_t row = (size_t)hc * hidden;
    if (!d->per_layer[layer]) {
        d->per_layer[layer] = calloc((size_t)d->positions * row, sizeof(float));
        d->hc = hc;
        d->hidden = hidden;
        if (!d->per_layer[layer]) return; /* reported as a missing file at the end */
    }
    memcpy(d->per_layer[layer] + (size_t)d->step_row0 * row, X, sizeof(float) * row * (size_t)n_rows);
}

static const cli_command_help help = {
    .cmd = "logits",
    .usage = "usage: dsv4 logits --tokens IDS --prefill N --out FILE.npy [options]\n"
             "  Prefills the first N of the T tokens, then decodes the rest one by one, and writes float32 logits\n"
             "  [T-N+1, vocab] to FILE.npy (row 0 after the prefill, row i after decoding position N-1+i).\n",
    .footer = NULL,
};

int dsv4_cmd_logits(int argc, char **argv) {
    const char *model = NULL, *tokens = NULL, *out = NULL, *dump_dir = NULL, *teacher_dir = NULL, *fault = NULL;
    const char *backend = NULL, *mtp_out = NULL, *mtp_teacher = NULL;
    float *mtp_logits = NULL;
    int mtp_rows = 0;
    long N = 0;
    int threads = 0, gpus = 0;
    const cli_option opts[] = {
        CLI_OPT_ENTRY_MODEL(&model, "checkpoint directory (default: the embedded random-weight default)"),
        {.names = "--tokens", .metavar = "IDS", .kind = CLI_OPT_STR, .dest = &tokens,
         .help = "comma-separated token ids, or a file of them (T tokens)"},
        {.names = "--prefill", .metavar = "N", .kind = CLI_OPT_LONG, .dest = &N, .lo = 1, .hi = 1L << 30,
         .help = "tokens fed in the first step, 1 <= N <= T"},
        {.names = "--out", .metavar = "FILE.npy", .kind = CLI_OPT_STR, .dest = &out, .help = "where the logits go"},
        {.names = "--dump-dir", .metavar = "DIR", .kind = CLI_OPT_STR, .dest = &dump_dir,
         .help = "also write hc_L.npy = the hyper-connection state after layer L, [T, hc, hidden]"},
        {.names = "--teacher-dir", .metavar = "DIR", .kind = CLI_OPT_STR, .dest = &teacher_dir,
         .help = "teacher forcing: the input of layer L+1 is DIR/hc_L.npy (an oracle's dump)\n"
                 "instead of this engine's layer-L output; with --dump-dir, hc_L.npy then holds\n"
                 "each layer's output from the oracle's input (a per-layer comparison)"},
        CLI_OPT_ENTRY_BACKEND(&backend, "cpu"),
        CLI_OPT_ENTRY_THREADS(&threads),
        CLI_OPT_ENTRY_GPUS(&gpus),
        {.names = "--fault", .metavar = "NAME", .kind = CLI_OPT_STR, .dest = &fault,
         .choices = "none|no-sink|no-compressed|rope-pos|no-kv-quant|mtp-shift", .def = "none",
         .help = "tests only: a deliberately broken variant, to prove that the oracle\n"
                 "comparisons discriminate (no-sink, no-compressed, rope-pos, no-kv-quant, mtp-shift)"},
        {.names = "--mtp-out", .metavar = "FILE.npy", .kind = CLI_OPT_STR, .dest = &mtp_out,
         .help = "also the MTP draft head's logits, float32 [T-1, vocab]; row i combines position i's\n"
                 "final state with token i+1 and predicts token i+2 (one rank: the cpu backend,\n"
                 "or cuda on one GPU)"},
        {.names = "--mtp-teacher", .metavar = "FILE.npy", .kind = CLI_OPT_STR, .dest = &mtp_teacher,
         .help = "the state after the last layer is FILE's ([T, hc, hidden], an oracle's final\n"
                 "state), so --mtp-out compares the MTP block alone"},
    };
    int rc = cli_opts_parse(&help, opts, (int)(sizeof opts / sizeof opts[0]), argc, argv);
    if (rc) return rc == CLI_HELP_SHOWN ? 0 : rc;
    if (!tokens || !N || !out) {
        fprintf(stderr, "dsv4 logits: --tokens, --prefill and --out are required (see dsv4 logits --help)\n");
        return 2;
    }
    int32_t *ids = NULL;
    int T = 0;
    if (cli_parse_ids("logits", tokens, &ids, &T)) return 2;
    if (N > T) {
        fprintf(stderr, "dsv4 logits: --prefill must be in [1, %d] (number of tokens), got %ld\n", T, N);
        free(ids);
        return 2;
    }
    char *model_dir = NULL;
    if (cli_model_resolve("logits", model, NULL, 0, &model_dir)) {
        free(ids);
        return 1;
    }
    dsv4_engine_options opt = {0};
    opt.model_dir = model_dir;
    opt.backend = backend;
    opt.n_threads = threads;
    opt.gpus = gpus;
    opt.max_seqs = 1;
    opt.max_tokens = T + 256;
    for (int i = 0; fault && i < DSV4_FAULT_COUNT; i++)   /* the table's choices are exactly the fault names */
        if (!strcmp(fault, dsv4_fault_name(i))) opt.fault = i;
    dsv4_err err = {{0}};
    dsv4_engine *e = NULL;
    rc = 1;
    float *logits = NULL;
    dump_state dump = {0};
    if (dsv4_engine_create(&opt, &e, &err) != DSV4_OK) {
        fprintf(stderr, "dsv4 logits: %s\n", err.msg);
        free(ids);
        free(model_dir);
        return 1;
    }
    int vocab = dsv4_engine_vocab_size(e);
    long rows = T - N + 1;
    logits = malloc(sizeof(float) * (size_t)rows * (size_t)vocab);
    if (!logits) { fprintf(stderr, "dsv4 logits: out of memory\n"); goto done; }
    if (mtp_out && !(mtp_logits = malloc(sizeof(float) * (size_t)T * (size_t)vocab))) {
        fprintf(stderr, "dsv4 logits: out of memory\n");
        goto done;
    }
    if (dump_dir) {
        if (mkdir(dump_dir, 0755) != 0) {
            struct stat sb;
            if (stat(dump_dir, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
                fprintf(stderr, "dsv4 logits: cannot create --dump-dir %s\n", dump_dir);
                goto done;
            }
        }
        dump.n_layers = dsv4_engine_n_layers(e);
        dump.per_layer = calloc((size_t)dump.n_layers, sizeof(float *));
        dump.positions = T;
    }
    if (teacher_dir) {
        dump.n_layers = dsv4_engine_n_layers(e);
        dump.positions = T;
        dump.teacher = calloc((size_t)dump.n_layers, sizeof(float *));
        if (!dump.teacher) { fprintf(stderr, "dsv4 logits: out of memory\n"); goto done; }
        for (int l = 0; l + 1 < dump.n_layers; l++) {
            char path[4096];
            long shape[3];
            int nd = 0;
            snprintf(path, sizeof path, "%s/hc_%d.npy", teacher_dir, l);
            if (dsv4_npy_read_f32(path, &dump.teacher[l], shape, 3, &nd, &err) != DSV4_OK) {
                fprintf(stderr, "dsv4 logits: --teacher-dir: %s\n", err.msg);
                goto done;
            }
            if (nd != 3 || shape[0] != T || (l > 0 && shape[1] * shape[2] != dump.teacher_row)) {
                fprintf(stderr, "dsv4 logits: --teacher-dir: %s must be [%d, hc, hidden]\n", path, T);
                goto done;
            }
            dump.teacher_row = shape[1] * shape[2];
        }
    }
    if (mtp_teacher) {
        long shape[3];
        int nd = 0;
        dump.n_layers = dsv4_engine_n_layers(e);
        dump.positions = T;
        if (dsv4_npy_read_f32(mtp_teacher, &dump.final_teacher, shape, 3, &nd, &err) != DSV4_OK) {
            fprintf(stderr, "dsv4 logits: --mtp-teacher: %s\n", err.msg);
            goto done;
        }
        if (nd != 3 || shape[0] != T) {
            fprintf(stderr, "dsv4 logits: --mtp-teacher: %s must be [%d, hc, hidden]\n", mtp_teacher, T);
            goto done;
        }
        dump.final_row = shape[1] * shape[2];
    }
    if (dump_dir || teacher_dir || mtp_teacher) dsv4_engine_set_layer_dump(e, dump_hook, &dump);
    int seq;
    if (dsv4_engine_seq_open(e, &seq, &err) != DSV4_OK) { fprintf(stderr, "dsv4 logits: %s\n", err.msg); goto done; }
    for (long i = 0; i < rows; i++) {
        dsv4_batch_item it = {seq, ids + (i == 0 ? 0 : N - 1 + i), i == 0 ? (int)N : 1, 1};
        dump.step_row0 = i == 0 ? 0 : N - 1 + i;
        int got = 0;
        dsv4_status st = mtp_out ? dsv4_engine_step_mtp(e, &it, 1, logits + (size_t)i * vocab,
                                                        mtp_logits + (size_t)mtp_rows * vocab, &got, &err)
                                 : dsv4_engine_step(e, &it, 1, logits + (size_t)i * vocab, &err);
        mtp_rows += got;
        if (st != DSV4_OK) {
            fprintf(stderr, "dsv4 logits: step %ld: %s\n", i, err.msg);
            goto done;
        }
    }
    if (dump.teacher_mismatch) {
        fprintf(stderr, "dsv4 logits: --teacher-dir / --mtp-teacher: the files' [hc, hidden] do not match this model\n");
        goto done;
    }
    long shape[2] = {rows, vocab};
    if (dsv4_npy_write_f32(out, logits, shape, 2, &err) != DSV4_OK) {
        fprintf(stderr, "dsv4 logits: %s\n", err.msg);
        goto done;
    }
    if (mtp_out) {
        long mshape[2] = {mtp_rows, vocab};
        if (mtp_rows != T - 1) {
            fprintf(stderr, "dsv4 logits: --mtp-out: %d MTP rows for %d tokens (internal error)\n", mtp_rows, T);
            goto done;
        }
        if (dsv4_npy_write_f32(mtp_out, mtp_logits, mshape, 2, &err) != DSV4_OK) {
            fprintf(stderr, "dsv4 logits: %s\n", err.msg);
            goto done;
        }
    }
    if (dump_dir) {
        for (int l = 0; l < dump.n_layers; l++) {
            if (!dump.per_layer[l]) {
                fprintf(stderr, "dsv4 logits: out of memory for the layer %d dump\n", l);
                goto done;
            }
            char path[4096];
            snprintf(path, sizeof path, "%s/hc_%d.npy", dump_dir, l);
            long dshape[3] = {T, dump.hc, dump.hidden};
            if (dsv4_npy_write_f32(path, dump.per_layer[l], dshape, 3, &err) != DSV4_OK) {
                fprintf(stderr, "dsv4 logits: %s\n", err.msg);
                goto done;
            }
        }
    }
    rc = 0;
done:
    if (dump.per_layer) {
        for (int l = 0; l < dump.n_layers; l++) free(dump.per_layer[l]);
        free(dump.per_layer);
    }
    if (dump.teacher) {
        for (int l = 0; l < dump.n_layers; l++) free(dump.teacher[l]);
        free(dump.teacher);
    }
    free(dump.final_teacher);
    free(logits);
    free(mtp_logits);
    free(ids);
    free(model_dir);
    dsv4_engine_destroy(e);
    return rc;
}
