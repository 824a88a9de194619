/* profile.c — the per-op device-event profiler of the CUDA forward and the `dsv4 bench --profile` run (see
 * profile.h). Host code; the only device calls are the event wrappers of cuda_ctx.h. */
#include "engine/profile.h"

#include <stdlib.h>
#include <string.h>

#include "core/status.h"
#include "dsv4_bench.h"

#ifndef DSV4_HAVE_CUDA

static dsv4_status no_cuda(dsv4_err *err) {
    return dsv4_err_set(err, DSV4_ERR_UNSUPPORTED, "profile: backend cuda not compiled in (build with nvcc present)");
}
dsv4_status dsv4_prof_create(int max_marks, dsv4_prof **out, dsv4_err *err) {
    (void)max_marks;
    *out = NULL;
    return no_cuda(err);
}
void dsv4_prof_destroy(dsv4_prof *p) { (void)p; }
dsv4_status dsv4_prof_pass_begin(dsv4_prof *p, dsv4_cuda_ctx *ctx, dsv4_err *err) {
    (void)p; (void)ctx;
    return no_cuda(err);
}
dsv4_status dsv4_prof_mark(dsv4_prof *p, dsv4_cuda_ctx *ctx, const char *name, double bytes, double flops,
                           dsv4_err *err) {
    (void)p; (void)ctx; (void)name; (void)bytes; (void)flops;
    return no_cuda(err);
}
dsv4_status dsv4_prof_pass_end(dsv4_prof *p, dsv4_err *err) {
    (void)p;
    return no_cuda(err);
}
void dsv4_prof_reset(dsv4_prof *p) { (void)p; }
void dsv4_prof_summary(const dsv4_prof *p, int *passes, long *calls, double *ms, long *dropped, int *n_ops) {
    (void)p;
    *passes = 0, *calls = 0, *ms = 0, *dropped = 0, *n_ops = 0;
}
void dsv4_prof_print(const dsv4_prof *p, FILE *out, const char *title, double copy_gbps, double peak_tflops,
                     int n_layers, int csv) {
    (void)p; (void)out; (void)title; (void)copy_gbps; (void)peak_tflops; (void)n_layers; (void)csv;
}
int dsv4_bench_profile(const char *model_dir, long prompt_len, int batch, long context, int n_threads,
                       double copy_gbps, double peak_tflops, FILE *out) {
    (void)model_dir; (void)prompt_len; (void)batch; (void)context; (void)n_threads; (void)copy_gbps;
    (void)peak_tflops; (void)out;
    fprintf(stderr, "dsv4 bench --profile: backend cuda not compiled in\n");
    return 1;
}

#else

#define PROF_MAX_OPS 256

typedef struct prof_op {
    const char *name;     /* borrowed (string literal) */
    double ms, bytes, flops;
    long calls;
    int bytes_known, flops_known;
} prof_op;

typedef struct prof_mark {
    const char *name;
    double bytes, flops;
} prof_mark;

struct dsv4_prof {
    int max_marks;
    void **ev;            /* owned [max_marks + 1] events: ev[0] = pass start, ev[i] = after mark i-1 */
    prof_mark *marks;     /* [max_marks] the pass's marks */
    int n_marks, begun;
    long dropped;         /* marks past max_marks (untimed) */
    int passes;
    prof_op ops[PROF_MAX_OPS];
    int n_ops;
    double total_ms;
};

dsv4_status dsv4_prof_create(int max_marks, dsv4_prof **out, dsv4_err *err) {
    *out = NULL;
    if (max_marks < 1) return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "profile: max_marks %d", max_marks);
    dsv4_prof *p = calloc(1, sizeof *p);
    if (!p) return dsv4_err_set(err, DSV4_ERR_NOMEM, "profile: out of host memory");
    p->max_marks = max_marks;
    p->ev = calloc((size_t)max_marks + 1, sizeof *p->ev);
    p->marks = calloc((size_t)max_marks, sizeof *p->marks);
    if (!p->ev || !p->marks) {
        dsv4_prof_destroy(p);
        return dsv4_err_set(err, DSV4_ERR_NOMEM, "profile: out of host memory");
    }
    for (int i = 0; i <= max_marks; i++) {
        dsv4_status st = dsv4_cuda_event_create(&p->ev[i], err);
        if (st != DSV4_OK) {
            dsv4_prof_destroy(p);
            return st;
        }
    }
    *out = p;
    return DSV4_OK;
}

void dsv4_prof_destroy(dsv4_prof *p) {
    if (!p) return;
    if (p->ev)
        for (int i = 0; i <= p->max_marks; i++) dsv4_cuda_event_destroy(p->ev[i]);
    free(p->ev);
    free(p->marks);
    free(p);
}

dsv4_status dsv4_prof_pass_begin(dsv4_prof *p, dsv4_cuda_ctx *ctx, dsv4_err *err) {
    p->n_marks = 0;
    p->begun = 1;
    return dsv4_cuda_event_record(ctx, p->ev[0], err);
}

dsv4_status dsv4_prof_mark(dsv4_prof *p, dsv4_cuda_ctx *ctx, const char *name, double bytes, double flops,
                           dsv4_err *err) {
    if (!p->begun) return DSV4_OK;
    if (p->n_marks >= p->max_marks) {
        p->dropped++;
        return DSV4_OK;
    }
    p->marks[p->n_marks] = (prof_mark){name, bytes, flops};
    dsv4_status st = dsv4_cuda_event_record(ctx, p->ev[p->n_marks + 1], err);
    if (st == DSV4_OK) p->n_marks++;
    return st;
}

static prof_op *op_of(dsv4_prof *p, const char *name) {
    for (int i = 0; i < p->n_ops; i++)
        if (p->ops[i].name == name || !strcmp(p->ops[i].name, name)) return &p->ops[i];
    if (p->n_ops == PROF_MAX_OPS) return NULL;
    prof_op *o = &p->ops[p->n_ops++];
    memset(o, 0, sizeof *o);
    o->name = name;
    o->bytes_known = o->flops_known = 1;
    return o;
}

dsv4_status dsv4_prof_pass_end(dsv4_prof *p, dsv4_err *err) {
    if (!p->begun) return DSV4_OK;
    p->begun = 0;
    for (int i = 0; i < p->n_marks; i++) {
        float ms = 0.0f;
        DSV4_TRY(dsv4_cuda_event_elapsed_ms(p->ev[i], p->ev[i + 1], &ms, err));
        prof_op *o = op_of(p, p->marks[i].name);
        if (!o) {
            p->dropped++;
            continue;
        }
        o->ms += ms;
        o->calls++;
        o->bytes += p->marks[i].bytes;
        o->flops += p->marks[i].flops;
        if (p->marks[i].bytes <= 0) o->bytes_known = 0;
        if (p->marks[i].flops <= 0) o->flops_known = 0;
        p->total_ms += ms;
    }
    p->passes++;
    p->n_marks = 0;
    return DSV4_OK;
}

void dsv4_prof_summary(const dsv4_prof *p, int *passes, long *calls, double *ms, long *dropped, int *n_ops) {
    *passes = p->passes;
    *calls = 0;
    for (int i = 0; i < p->n_ops; i++) *calls += p->ops[i].calls;
    *ms = p->total_ms;
    *dropped = p->dropped;
    *n_ops = p->n_ops;
}

void dsv4_prof_reset(dsv4_prof *p) {
    p->n_ops = 0;
    p->total_ms = 0;
    p->passes = 0;
    p->dropped = 0;
    p->n_marks = 0;
    p->begun = 0;
}

void dsv4_prof_print(const dsv4_prof *p, FILE *out, const char *title, double copy_gbps, double peak_tflops,
                     int n_layers, int csv) {
    long calls = 0;
    double bytes_known = 0, ms_known = 0;
    for (int i = 0; i < p->n_ops; i++) {
        calls += p->ops[i].calls;
        if (p->ops[i].bytes_known) {
            bytes_known += p->ops[i].bytes;
            ms_known += p->ops[i].ms;
        }
    }
    fprintf(out, "\n%s: %.3f ms of device time over %d pass(es), %ld op calls", title, p->total_ms, p->passes, calls);
    if (n_layers > 0) fprintf(out, " (%.1f per layer)", (double)calls / n_layers / (p->passes ? p->passes : 1));
    if (p->dropped) fprintf(out, ", %ld marks dropped (untimed)", p->dropped);
    fprintf(out, "\n%-28s %7s %7s %10s %6s %9s %9s %8s %7s %8s %7s\n", "op", "calls", "/layer", "ms", "share",
            "us/call", "MB", "GB/s", "vs copy", "TFLOP/s", "vs gemm");
    for (int i = 0; i < p->n_ops; i++) {
        const prof_op *o = &p->ops[i];
        fprintf(out, "%-28s %7ld ", o->name, o->calls);
        if (n_layers > 0) fprintf(out, "%7.2f ", (double)o->calls / n_layers / (p->passes ? p->passes : 1));
        else fprintf(out, "%7s ", "-");
        fprintf(out, "%10.3f %5.1f%% %9.2f ", o->ms, p->total_ms > 0 ? 100.0 * o->ms / p->total_ms : 0.0,
                o->calls ? 1e3 * o->ms / o->calls : 0.0);
        double gbs = o->ms > 0 ? o->bytes / (o->ms * 1e-3) / 1e9 : 0, tf = o->ms > 0 ? o->flops / (o->ms * 1e-3) / 1e12 : 0;
        if (o->bytes_known && o->bytes > 0) {
            fprintf(out, "%9.2f %8.1f ", o->bytes / 1e6, gbs);
            if (copy_gbps > 0) fprintf(out, "%7.3f ", gbs / copy_gbps);
            else fprintf(out, "%7s ", "-");
        } else {
            fprintf(out, "%9s %8s %7s ", "-", "-", "-");
        }
        if (o->flops_known && o->flops > 0) {
            fprintf(out, "%8.2f ", tf);
            if (peak_tflops > 0) fprintf(out, "%7.3f", tf / peak_tflops);
            else fprintf(out, "%7s", "-");
        } else {
            fprintf(out, "%8s %7s", "-", "-");
        }
        fprintf(out, "\n");
        if (csv)
            fprintf(out, "prof,\"%s\",\"%s\",%ld,%.4f,%.0f,%.0f,%.1f,%.2f\n", title, o->name, o->calls, o->ms,
                    o->bytes_known ? o->bytes : -1.0, o->flops_known ? o->flops : -1.0, gbs, tf);
    }
    if (ms_known > 0)
        fprintf(out, "ops with known bytes: %.1f%% of the time, %.1f MB at %.1f GB/s", 100.0 * ms_known / p->total_ms,
                bytes_known / 1e6, bytes_known / (ms_known * 1e-3) / 1e9);
    if (ms_known > 0 && copy_gbps > 0) fprintf(out, " (%.3f of the copy bandwidth)", bytes_known / (ms_known * 1e-3) / 1e9 / copy_gbps);
    fprintf(out, "\n(eager pass, one event after each op group: an op's time includes any wait for the host to "
                 "enqueue it; MB = bytes the op must move, weights in their stored format)\n");
    fflush(out);
}

/* ---- `dsv4 bench --profile` ------------------------------------------------------------------------- */

static uint64_t prof_rng = 0x9E3779B97F4A7C15ull;
static int32_t prof_token(int vocab) {
    prof_rng = prof_rng * 6364136223846793005ull + 1442695040888963407ull;
    return 1 + (int32_t)((prof_rng >> 33) % (uint64_t)(vocab - 1));
}

/* One engine step: every listed sequence gets n tokens (random), logits wanted for each. */
static dsv4_status step_all(dsv4_engine *e, const int *seqs, int B, long n, int32_t *tok, dsv4_batch_item *items,
                            float *logits, dsv4_err *err) {
    const int V = dsv4_engine_vocab_size(e);
    for (int i = 0; i < B; i++) {
        for (long j = 0; j < n; j++) tok[(size_t)i * n + j] = prof_token(V);
        items[i] = (dsv4_batch_item){seqs[i], tok + (size_t)i * n, (int)n, 1};
    }
    return dsv4_engine_step(e, items, B, logits, err);
}

int dsv4_bench_profile(const char *model_dir, long prompt_len, int batch, long context, int n_threads,
                       double copy_gbps, double peak_tflops, FILE *out) {
    const long fill_chunk = 1024;
    int B = batch > 0 ? batch : 1;
    long per_seq = (prompt_len > context ? prompt_len : context) + 64;
    dsv4_engine_options o;
    memset(&o, 0, sizeof o);
    o.model_dir = model_dir;
    o.backend = "cuda";
    o.n_threads = n_threads;
    o.max_seqs = B;
    o.max_tokens = (long)B * per_seq;
    dsv4_err err = {{0}};
    dsv4_engine *e = NULL;
    dsv4_prof *p = NULL;
    int rc = 1;
    long maxn = prompt_len > fill_chunk ? prompt_len : fill_chunk;
    int32_t *tok = malloc(sizeof *tok * (size_t)B * (size_t)maxn);
    dsv4_batch_item *items = malloc(sizeof *items * (size_t)B);
    int *seqs = calloc((size_t)B, sizeof *seqs);
    float *logits = NULL;
    int opened = 0;
    if (!tok || !items || !seqs) {
        fprintf(stderr, "dsv4 bench --profile: out of memory\n");
        goto done;
    }
    if (dsv4_engine_create(&o, &e, &err) != DSV4_OK || dsv4_prof_create(16384, &p, &err) != DSV4_OK) goto fail;
    logits = malloc(sizeof *logits * (size_t)B * (size_t)dsv4_engine_vocab_size(e));
    if (!logits) {
        fprintf(stderr, "dsv4 bench --profile: out of memory\n");
        goto done;
    }
    const int L = dsv4_engine_n_layers(e);
    char title[160];
    if (prompt_len > 0) {
        /* warm-up prompt (first-use costs: module load, cuBLASLt plans), then the profiled one */
        for (int r = 0; r < 2; r++) {
            int s;
            if (dsv4_engine_seq_open(e, &s, &err) != DSV4_OK) goto fail;
            if (r == 1 && dsv4_engine_set_profile(e, p, &err) != DSV4_OK) goto fail;
            dsv4_status st = step_all(e, &s, 1, prompt_len, tok, items, logits, &err);
            dsv4_engine_seq_close(e, s);
            if (st != DSV4_OK || dsv4_engine_set_profile(e, NULL, &err) != DSV4_OK) goto fail;
        }
        snprintf(title, sizeof title, "PROFILE prefill, one prompt of %ld tokens", prompt_len);
        dsv4_prof_print(p, out, title, copy_gbps, peak_tflops, L, 1);
        dsv4_prof_reset(p);
    }
    if (batch > 0) {
        for (; opened < B; opened++)
            if (dsv4_engine_seq_open(e, &seqs[opened], &err) != DSV4_OK) goto fail;
        for (long done = 0; done < context; done += fill_chunk) {
            long m = context - done < fill_chunk ? context - done : fill_chunk;
            if (step_all(e, seqs, B, m, tok, items, logits, &err) != DSV4_OK) goto fail;
        }
        if (dsv4_engine_set_profile(e, p, &err) != DSV4_OK) goto fail;
        for (int r = 0; r < 2; r++) {
            if (r == 1) dsv4_prof_reset(p); /* the first profiled step is the warm-up */
            if (step_all(e, seqs, B, 1, tok, items, logits, &err) != DSV4_OK) goto fail;
        }
        if (dsv4_engine_set_profile(e, NULL, &err) != DSV4_OK) goto fail;
        snprintf(title, sizeof title, "PROFILE decode step, batch %d at context %ld", batch, context);
        dsv4_prof_print(p, out, title, copy_gbps, peak_tflops, L, 1);
    }
    rc = 0;
    goto done;
fail:
    fprintf(stderr, "dsv4 bench --profile: %s\n", err.msg);
done:
    if (e) {
        (void)dsv4_engine_set_profile(e, NULL, NULL);
        for (int i = 0; i < opened; i++) dsv4_engine_seq_close(e, seqs[i]);
    }
    dsv4_engine_destroy(e);
    dsv4_prof_destroy(p);
    free(tok);
    free(items);
    free(seqs);
    free(logits);
    return rc;
}

#endif
