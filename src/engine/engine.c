/* engine.c — the public engine API of dsv4.h: checks the options, creates the group of ranks that owns the
 * model, the forward of the chosen backend and the KV cache (engine_tp.h; one rank unless gpus > 1), maps
 * sequence handles to KV slots, and hands every step to the group. Knows no backend: the group does. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/status.h"
#include "backend/cuda/cuda_ctx.h" /* dsv4_cuda_device_count */
#include "dsv4.h"
#include "engine/engine_tp.h"
#include "engine/forward.h"
#include "engine/kv_access.h"
#include "engine/model.h"
#include "engine/profile.h"
#include "dsv4_limits.h"
#include "engine/spec.h"

struct dsv4_engine {
    dsv4_tp_group *ranks;     /* owned: ranks 0..N-1 (N = gpus; one rank is a group of one) — every model
                                 shard, forward and KV manager */
    const dsv4_model *model;  /* view: rank 0's shard (its config is every rank's) */
    dsv4_kv_manager *kv;      /* view: rank 0's KV manager (slots and lengths are the same on every rank) */
    dsv4_forward *fwd;        /* view: rank 0's cpu forward, NULL on the cuda backend (the MTP path) */
    int on_cuda;              /* the ranks are GPUs: logits are checked on the host (check_logits) */
    long max_tokens;          /* KV capacity in tokens (also the longest sequence) */
    int max_seqs;
    float *mtp_h;             /* owned [max_seqs, hc*D] (allocated on first MTP use): per sequence, the main
                                 model's final HC state at its last position (spec.h "in sync") */
    dsv4_spec_ws *spec_ws;    /* owned; speculative rounds' scratch (created on first use, grown with the batch) */
    dsv4_spec_ctl *spec_ctl;  /* owned [max_seqs]: adaptive drafting per sequence (k = 0: reset by seq_open) */
    dsv4_spec_accept_fn spec_accept; /* benches: forced acceptance counts (borrowed user) */
    void *spec_accept_user;
};

void dsv4_engine_destroy(dsv4_engine *e) {
    if (!e) return;
    dsv4_tp_group_destroy(e->ranks);
    free(e->mtp_h);
    dsv4_spec_ws_destroy(e->spec_ws);
    free(e->spec_ctl);
    free(e);
}

dsv4_status dsv4_engine_create(const dsv4_engine_options *opt, dsv4_engine **out, dsv4_err *err) {
    *out = NULL;
    const dsv4_synthetic_model *syn = opt ? &opt->synthetic : NULL;
    if (!opt || (!opt->model_dir && !syn->preset))
        return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "engine: no model directory given");
    if (opt->model_dir && syn->preset)
        return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "engine: give a model directory or a synthetic model, not both");
    int cuda = opt->backend && strcmp(opt->backend, "cuda") == 0;
    if (opt->backend && !cuda && strcmp(opt->backend, "cpu") != 0)
        return dsv4_err_set(err, DSV4_ERR_UNSUPPORTED, "engine: unknown backend '%s' (known: cpu, cuda)", opt->backend);
    if (cuda && opt->fault)
        return dsv4_err_set(err, DSV4_ERR_UNSUPPORTED, "engine: fault variants exist on the cpu backend only");
    if (opt->fault < 0 || opt->fault >= DSV4_FAULT_COUNT)
        return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "engine: unknown fault %d", opt->fault);
    if (syn->preset && opt->gpus > 1)
        return dsv4_err_set(err, DSV4_ERR_UNSUPPORTED, "engine: a synthetic in-memory model runs on one rank (gpus 1)");
    if (syn->preset && syn->on_device && !cuda)
        return dsv4_err_set(err, DSV4_ERR_UNSUPPORTED, "engine: weights generated on the device need the cuda backend "
                            "(the cpu backend has no host copy of them to compute with)");
    int max_seqs = opt->max_seqs > 0 ? opt->max_seqs : 8;
    long max_tokens = opt->max_tokens > 0 ? opt->max_tokens : (long)max_seqs * 4096;
    if (max_tokens > DSV4_LIMIT_CTX_TOKENS || max_seqs > DSV4_LIMIT_SEQS)
        return dsv4_err_set(err, DSV4_ERR_INVALID_ARG,
                            "engine: KV capacity of %ld tokens / %d sequences exceeds the limit of %ld / %d", max_tokens,
                            max_seqs, (long)DSV4_LIMIT_CTX_TOKENS, DSV4_LIMIT_SEQS);
    dsv4_engine *e = calloc(1, sizeof *e);
    if (!e) return dsv4_err_set(err, DSV4_ERR_NOMEM, "engine: out of memory");
    e->max_seqs = max_seqs;
    e->max_tokens = max_tokens;
    dsv4_tp_options to = {0};
    to.model_dir = opt->model_dir;
    to.world = opt->gpus > 1 ? opt->gpus : 1;
    to.cuda = cuda;
    to.n_threads = opt->n_threads;
    to.max_seqs = max_seqs;
    to.max_tokens = max_tokens;
    to.fault = opt->fault;
    to.progress = opt->progress;
    to.progress_user = opt->progress_user;
    to.synthetic = syn;
    dsv4_status st = dsv4_tp_group_create(&to, &e->ranks, err);
    if (st != DSV4_OK) {
        free(e);
        return st;
    }
    e->model = dsv4_tp_group_model(e->ranks);
    e->kv = dsv4_tp_group_kv(e->ranks);
    e->fwd = dsv4_tp_group_forward(e->ranks, 0);
    e->on_cuda = dsv4_tp_group_on_cuda(e->ranks);
    *out = e;
    return DSV4_OK;
}

int dsv4_engine_vocab_size(const dsv4_engine *e) { return e->model->cfg->vocab_size; }
int dsv4_engine_n_layers(const dsv4_engine *e) { return e->model->cfg->n_layers; }
int dsv4_engine_eos_id(const dsv4_engine *e) { return e->model->cfg->eos_token_id; }

void dsv4_engine_get_kv_stats(const dsv4_engine *e, dsv4_engine_kv_stats *out) {
    memset(out, 0, sizeof *out);
    out->blocks_total = (long)dsv4_kv_manager_total_blocks(e->kv);
    out->blocks_free = (long)dsv4_kv_manager_free_blocks(e->kv);
    out->blocks_used = out->blocks_total - out->blocks_free;
    out->block_tokens = dsv4_kv_manager_schema(e->kv)->block_tokens;
    out->slots_free = dsv4_kv_manager_free_slots(e->kv);
    out->max_seq_tokens = e->max_tokens;
}

long dsv4_engine_kv_blocks_for(const dsv4_engine *e, long n_tokens) {
    return (long)dsv4_kv_schema_blocks_for_tokens(dsv4_kv_manager_schema(e->kv), n_tokens);
}

dsv4_status dsv4_engine_seq_open(dsv4_engine *e, int *seq, dsv4_err *err) {
    dsv4_status st = dsv4_tp_group_admit(e->ranks, seq, err);
    if (st == DSV4_OK && e->spec_ctl) e->spec_ctl[*seq].k = 0;
    return st;
}

void dsv4_engine_seq_close(dsv4_engine *e, int seq) { dsv4_tp_group_release(e->ranks, seq); }

long dsv4_engine_seq_len(const dsv4_engine *e, int seq) {
    return dsv4_kv_access_slot_valid(e->kv, seq) ? dsv4_kv_access_seq_len(e->kv, seq) : -1;
}

/* The cuda backend's only host-side look at values: the logits rows it returns (the cpu forward checks every
 * layer's output and the logits itself). A NaN or infinity fails the step; the positions of this step are
 * already committed on the device, so the caller should close the sequence. */
static dsv4_status check_logits(const dsv4_engine *e, const dsv4_batch_item *items, int n_items, const float *logits,
                                dsv4_err *err) {
    const int V = e->model->cfg->vocab_size;
    int row = 0;
    for (int i = 0; i < n_items; i++) {
        if (!items[i].want_logits) continue;
        const float *l = logits + (size_t)row++ * V;
        for (int v = 0; v < V; v++)
            if (!isfinite(l[v]))
                return dsv4_err_set(err, DSV4_ERR_FORMAT,
                                    "engine: non-finite logit (%s) for sequence %d at vocab id %d (a NaN or infinite "
                                    "weight in the checkpoint?)",
                                    l[v] != l[v] ? "NaN" : "inf", items[i].seq, v);
    }
    return DSV4_OK;
}

long dsv4_engine_max_positions(const dsv4_engine *e) { return e->model->cfg->max_position_embeddings; }

dsv4_status dsv4_engine_step(dsv4_engine *e, const dsv4_batch_item *items, int n_items, float *logits,
                             dsv4_err *err) {
    if (n_items <= 0) return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "engine: empty step");
    dsv4_seq_step *steps = calloc((size_t)n_items, sizeof *steps);
    if (!steps) return dsv4_err_set(err, DSV4_ERR_NOMEM, "engine: out of memory");
    const long max_pos = e->model->cfg->max_position_embeddings;
    for (int i = 0; i < n_items; i++) {
        if (!dsv4_kv_access_slot_valid(e->kv, items[i].seq)) {
            free(steps);
            return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "engine: sequence %d is not open", items[i].seq);
        }
        long len = dsv4_kv_access_seq_len(e->kv, items[i].seq);
        if (items[i].n_tokens > 0 && len + items[i].n_tokens > max_pos) {
            free(steps);
            return dsv4_err_set(err, DSV4_ERR_CAPACITY,
                                "engine: sequence %d would reach %ld positions, beyond the model's "
                                "max_position_embeddings = %ld",
                                items[i].seq, len + items[i].n_tokens, max_pos);
        }
        steps[i] = (dsv4_seq_step){items[i].seq, items[i].tokens, items[i].n_tokens, items[i].want_logits};
    }
    dsv4_status st = dsv4_tp_group_step(e->ranks, steps, n_items, logits, err);
    free(steps);
    if (st == DSV4_OK && e->on_cuda) st = check_logits(e, items, n_items, logits, err);
    return st;
}

dsv4_status dsv4_engine_decode_greedy(dsv4_engine *e, const int *seqs, int n_seqs, const int32_t *first,
                                      int n_steps, int32_t *out, double *device_ms, dsv4_err *err) {
    if (n_seqs <= 0 || n_steps <= 0) return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "engine: empty greedy decode");
    if (device_ms) *device_ms = 0.0;
    if (e->on_cuda) return dsv4_tp_group_decode_greedy(e->ranks, seqs, n_seqs, first, n_steps, out, device_ms, err);
    const int V = e->model->cfg->vocab_size;
    float *logits = malloc(sizeof(float) * (size_t)n_seqs * V);
    dsv4_batch_item *items = malloc(sizeof *items * (size_t)n_seqs);
    int32_t *cur = malloc(sizeof *cur * (size_t)n_seqs);
    dsv4_status st = DSV4_OK;
    if (!logits || !items || !cur) st = dsv4_err_set(err, DSV4_ERR_NOMEM, "engine: out of memory");
    for (int i = 0; i < n_seqs && st == DSV4_OK; i++) cur[i] = first[i];
    for (int k = 0; k < n_steps && st == DSV4_OK; k++) {
        for (int i = 0; i < n_seqs; i++) items[i] = (dsv4_batch_item){seqs[i], &cur[i], 1, 1};
        if ((st = dsv4_engine_step(e, items, n_seqs, logits, err)) != DSV4_OK) break;
        for (int i = 0; i < n_seqs; i++) {
            const float *l = logits + (size_t)i * V;
            int best = 0;
            for (int v = 1; v < V; v++)
                if (l[v] > l[best]) best = v;
            out[(size_t)k * n_seqs + i] = cur[i] = best;
        }
    }
    free(logits);
    free(items);
    free(cur);
    return st;
}

/* ---- MTP / speculative decoding (one rank: the cpu backend, or the cuda backend on one GPU) ---- */

static dsv4_status mtp_ready(dsv4_engine *e, dsv4_err *err) {
    if (dsv4_tp_group_world(e->ranks) > 1)
        return dsv4_err_set(err, DSV4_ERR_UNSUPPORTED, "engine: the MTP block runs on one rank (not with gpus > 1)");
    if (!e->model->w.mtp)
        return dsv4_err_set(err, DSV4_ERR_UNSUPPORTED, "engine: the checkpoint has no MTP block (mtp.0.*)");
    /* cpu: the last states of the sequences; cuda: the forward keeps them on the device (step_mtp), this is the
     * host copy a speculative decode works on */
    if (!e->mtp_h) {
        size_t hd = (size_t)e->model->cfg->hc_mult * e->model->cfg->dim;
        if (!(e->mtp_h = calloc((size_t)e->max_seqs * hd, sizeof(float))))
            return dsv4_err_set(err, DSV4_ERR_NOMEM, "engine: out of memory");
    }
    return DSV4_OK;
}

/* spec.c's backend table over the CUDA forward (its KV manager is kv). */
static dsv4_status cuda_spec_step(void *f, dsv4_kv_manager *kv, const dsv4_seq_step *steps, int n_steps, float *logits,
                                  float *hidden, dsv4_err *err) {
    (void)kv;
    return dsv4_forward_cuda_step_hidden(f, steps, n_steps, logits, hidden, err);
}
static dsv4_status cuda_spec_mtp(void *f, dsv4_kv_manager *kv, const dsv4_mtp_step *steps, int n_steps, float *logits,
                                 float *h_out, dsv4_err *err) {
    (void)kv;
    return dsv4_forward_cuda_mtp(f, steps, n_steps, logits, h_out, err);
}

/* The forward speculative rounds run over: rank 0's cuda forward, else its cpu one. */
static void spec_backend(dsv4_engine *e, dsv4_spec_backend *be) {
    dsv4_forward_cuda *cf = dsv4_tp_group_forward_cuda(e->ranks, 0);
    if (cf) *be = (dsv4_spec_backend){cf, e->model, cuda_spec_step, cuda_spec_mtp};
    else dsv4_spec_backend_cpu(e->fwd, be);
}

dsv4_status dsv4_engine_step_mtp(dsv4_engine *e, const dsv4_batch_item *items, int n_items, float *logits,
                                 float *mtp_logits, int *n_mtp_rows, dsv4_err *err) {
    DSV4_TRY(mtp_ready(e, err));
    if (n_items <= 0 || n_items > e->max_seqs)
        return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "engine: %d items in one step (1..%d)", n_items, e->max_seqs);
    dsv4_seq_step steps[n_items];
    float *last_h[n_items];
    size_t hd = (size_t)e->model->cfg->hc_mult * e->model->cfg->dim;
    for (int i = 0; i < n_items; i++) {
        if (!dsv4_kv_access_slot_valid(e->kv, items[i].seq))
            return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "engine: sequence %d is not open", items[i].seq);
        steps[i] = (dsv4_seq_step){items[i].seq, items[i].tokens, items[i].n_tokens, items[i].want_logits != 0};
        last_h[i] = e->mtp_h ? e->mtp_h + (size_t)items[i].seq * hd : NULL;
    }
    dsv4_forward_cuda *cf = dsv4_tp_group_forward_cuda(e->ranks, 0);
    if (cf) {
        dsv4_status st = dsv4_forward_cuda_step_mtp(cf, steps, n_items, logits, mtp_logits, n_mtp_rows, err);
        return st == DSV4_OK ? check_logits(e, items, n_items, logits, err) : st;
    }
    return dsv4_spec_step(e->fwd, e->kv, steps, n_items, last_h, logits, mtp_logits, n_mtp_rows, err);
}

dsv4_status dsv4_engine_decode_greedy_spec(dsv4_engine *e, const int *seqs, int n_seqs, const int32_t *first,
                                           int n_steps, int k, int32_t *out, dsv4_spec_info *info, dsv4_err *err) {
    const dsv4_spec_options o = {k, 0, 0.0};   /* every round drafts k (fewer at the end): greedy rounds */
    return dsv4_engine_decode_spec(e, seqs, n_seqs, first, n_steps, &o, NULL, out, info, err);
}

/* A round's cost in plain steps when the caller gives none. cpu: measured with `dsv4 bench --spec 3
 * --spec-accept 1,...` (docs/PERF.md "Speculative decoding on the CPU"): a round of K drafts that accepts
 * nothing takes 1.5 / 2.9 / 4.0 plain steps at K = 1 / 2 / 3, batch 1, on the tiny default model (the
 * reference backend's work is per row, so K+1 verification rows cost about K+1 steps): 1 + K. cuda: not
 * measured yet (the MTP block and the rounds run there, never on a GPU so far); the same bench on an H200
 * (`dsv4 bench --backend cuda --spec 3 --spec-accept 1,...`) sets its value — until then 1 + K, which
 * over-estimates a round on a bandwidth-bound GPU and so only keeps adaptive drafting conservative. */
#define SPEC_COST_CPU_BASE 1.0   /* the one-row part of a round, in plain steps */
#define SPEC_COST_CPU_ROW 1.0    /* each further verification row + its draft row */

double dsv4_engine_spec_cost(const dsv4_engine *e, int k) {
    (void)e;
    return SPEC_COST_CPU_BASE + SPEC_COST_CPU_ROW * k;
}

void dsv4_engine_set_spec_accept(dsv4_engine *e, dsv4_spec_accept_fn fn, void *user) {
    e->spec_accept = fn;
    e->spec_accept_user = user;
}

/* The round's forced acceptance hook, from the engine's (which speaks of sequences: slot = sequence). */
static int spec_accept_thunk(void *user, int slot, int k) {
    dsv4_engine *e = user;
    return e->spec_accept(e->spec_accept_user, slot, k);
}

dsv4_status dsv4_engine_spec_round(dsv4_engine *e, const int *seqs, int n_seqs, const int32_t *cur,
                                   const dsv4_spec_options *opt, dsv4_sampler *const *samplers, const int *max_out,
                                   int32_t *out, int *n_out, dsv4_spec_info *info, dsv4_err *err) {
    DSV4_TRY(mtp_ready(e, err));
    if (!opt || opt->k < 1 || opt->k > DSV4_SPEC_MAX_K)
        return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "engine: %d draft tokens (1..%d)", opt ? opt->k : 0,
                            DSV4_SPEC_MAX_K);
    if (n_seqs <= 0 || n_seqs > e->max_seqs || !seqs || !cur || !out || !n_out)
        return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "engine: %d sequences (1..%d)", n_seqs, e->max_seqs);
    if (!e->spec_ctl && !(e->spec_ctl = calloc((size_t)e->max_seqs, sizeof *e->spec_ctl)))
        return dsv4_err_set(err, DSV4_ERR_NOMEM, "engine: out of memory");
    if (dsv4_spec_ws_capacity(e->spec_ws) < n_seqs) {
        dsv4_spec_ws_destroy(e->spec_ws);
        e->spec_ws = NULL;
        dsv4_spec_backend be;
        spec_backend(e, &be);
        DSV4_TRY(dsv4_spec_ws_create(&be, e->kv, n_seqs, &e->spec_ws, err));
    }
    const size_t hd = (size_t)e->model->cfg->hc_mult * e->model->cfg->dim;
    const double cost = opt->cost_ratio > 0 ? opt->cost_ratio : dsv4_engine_spec_cost(e, opt->k);
    const long max_pos = e->model->cfg->max_position_embeddings;
    dsv4_spec_seq q[n_seqs];
    int drafted[n_seqs];
    for (int i = 0; i < n_seqs; i++) {
        if (!dsv4_kv_access_slot_valid(e->kv, seqs[i]))
            return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "engine: sequence %d is not open", seqs[i]);
        if (max_out && max_out[i] < 1)
            return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "engine: max_out %d for sequence %d (>= 1)", max_out[i], seqs[i]);
        dsv4_spec_ctl *c = &e->spec_ctl[seqs[i]];
        if (c->k != opt->k || c->cost != cost) dsv4_spec_ctl_init(c, opt->k, cost);
        int k = opt->adaptive ? dsv4_spec_ctl_drafts(c) : opt->k;
        if (max_out && k > max_out[i] - 1) k = max_out[i] - 1;
        long len = dsv4_kv_access_seq_len(e->kv, seqs[i]);
        if (len + 1 > max_pos)
            return dsv4_err_set(err, DSV4_ERR_CAPACITY, "engine: sequence %d would reach %ld positions, beyond the "
                                "model's max_position_embeddings = %ld", seqs[i], len + 1, max_pos);
        if (len + k + 1 > max_pos) k = (int)(max_pos - len - 1);   /* fewer drafts near the end */
        drafted[i] = len == 0 ? 0 : k;
        q[i] = (dsv4_spec_seq){seqs[i], e->mtp_h + (size_t)seqs[i] * hd, cur[i], k, samplers ? samplers[i] : NULL};
    }
    dsv4_spec_hooks hooks = {0};
    if (e->spec_accept) {
        hooks.accept = spec_accept_thunk;
        hooks.user = e;
    }
    int32_t got[n_seqs * (DSV4_SPEC_MAX_DRAFT + 1)];
    dsv4_forward_cuda *cf = dsv4_tp_group_forward_cuda(e->ranks, 0);
    /* cuda: the forward keeps the last states on the device (step_mtp); the round works on the host copy */
    for (int i = 0; cf && i < n_seqs; i++)
        if (dsv4_kv_access_seq_len(e->kv, seqs[i]) > 0) DSV4_TRY(dsv4_forward_cuda_mtp_state(cf, seqs[i], q[i].last_h, NULL, err));
    dsv4_status st = dsv4_spec_round(e->spec_ws, e->kv, n_seqs, q, got, n_out, &hooks, err);
    for (int i = 0; cf && i < n_seqs; i++) {
        dsv4_status st2 = dsv4_kv_access_seq_len(e->kv, seqs[i]) > 0
                              ? dsv4_forward_cuda_mtp_state(cf, seqs[i], NULL, q[i].last_h, st == DSV4_OK ? err : NULL)
                              : DSV4_OK;
        if (st == DSV4_OK) st = st2;
    }
    if (st != DSV4_OK) return st;
    if (info) *info = (dsv4_spec_info){0, 0, 0};
    for (int i = 0; i < n_seqs; i++) {
        memcpy(out + (size_t)i * (opt->k + 1), got + (size_t)i * (DSV4_SPEC_MAX_DRAFT + 1), sizeof(int32_t) * (size_t)n_out[i]);
        if (opt->adaptive) dsv4_spec_ctl_record(&e->spec_ctl[seqs[i]], drafted[i], n_out[i]);
        if (info) {
            info->rounds++;
            info->drafted += drafted[i];
            info->accepted += n_out[i] - 1;
        }
    }
    return DSV4_OK;
}

dsv4_status dsv4_engine_decode_spec(dsv4_engine *e, const int *seqs, int n_seqs, const int32_t *first, int n_steps,
                                    const dsv4_spec_options *opt, dsv4_sampler *const *samplers, int32_t *out,
                                    dsv4_spec_info *info, dsv4_err *err) {
    if (n_seqs <= 0 || n_seqs > e->max_seqs || n_steps <= 0 || !seqs || !first || !out || !opt)
        return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "engine: empty speculative decode (%d sequences, %d steps)",
                            n_seqs, n_steps);
    if (opt->k < 1 || opt->k > DSV4_SPEC_MAX_K)
        return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "engine: %d draft tokens (1..%d)", opt->k, DSV4_SPEC_MAX_K);
    if (info) *info = (dsv4_spec_info){0, 0, 0};
    const int K1 = opt->k + 1;
    int act[n_seqs], produced[n_seqs], max_out[n_seqs], n_out[n_seqs];
    int32_t cur[n_seqs], got[(size_t)n_seqs * K1];
    int aseq[n_seqs];
    dsv4_sampler *asamp[n_seqs];
    for (int i = 0; i < n_seqs; i++) {
        produced[i] = 0;
        cur[i] = first[i];
    }
    dsv4_status st = DSV4_OK;
    for (;;) {
        int n_act = 0;
        int32_t acur[n_seqs];
        for (int i = 0; i < n_seqs; i++) {
            if (produced[i] >= n_steps) continue;
            act[n_act] = i;
            aseq[n_act] = seqs[i];
            acur[n_act] = cur[i];
            asamp[n_act] = samplers ? samplers[i] : NULL;
            max_out[n_act++] = n_steps - produced[i];
        }
        if (!n_act) break;
        dsv4_spec_info ri;
        if ((st = dsv4_engine_spec_round(e, aseq, n_act, acur, opt, asamp, max_out, got, n_out, &ri, err)) != DSV4_OK)
            break;
        for (int j = 0; j < n_act; j++) {
            const int i = act[j];
            for (int t = 0; t < n_out[j]; t++) out[(size_t)produced[i]++ * n_seqs + i] = got[(size_t)j * K1 + t];
            cur[i] = got[(size_t)j * K1 + n_out[j] - 1];
        }
        if (info) {
            info->rounds += ri.rounds;
            info->drafted += ri.drafted;
            info->accepted += ri.accepted;
        }
    }
    return st;
}

void dsv4_engine_set_layer_dump(dsv4_engine *e, dsv4_layer_dump_fn fn, void *user) {
    /* With gpus > 1 the hook sees rank 0's state (identical on every rank) and must not write it (the other
     * ranks would not see the change). On the cuda backend the passes then run eagerly and X goes down to
     * the host and back after every layer (forward_cuda.h); a failure to get the host staging leaves no hook. */
    dsv4_tp_group_set_hook(e->ranks, fn, user);
}

dsv4_status dsv4_engine_set_profile(dsv4_engine *e, dsv4_prof *p, dsv4_err *err) {
    return dsv4_tp_group_set_profile(e->ranks, p, err);
}

int dsv4_engine_cuda_devices(void) {
#ifdef DSV4_HAVE_CUDA
    return dsv4_cuda_device_count();
#else
    return 0;
#endif
}
