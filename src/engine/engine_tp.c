/* engine_tp.c — the group of ranks 0..N-1 of an engine (engine_tp.h), on the cpu (thread communicator) and
 * on GPUs (one forward_cuda per GPU, NCCL): creation, admission mirroring, and the one hand-off that runs a
 * job (build, step, greedy decode) on every rank at once. Must not know the engine's API (dsv4_engine). */
#include "engine/engine_tp.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core/status.h"
#include "core/threadpool.h"
#include "dist/comm.h"
#include "dsv4_synth.h"
#include "engine/kv_access.h"

#ifdef DSV4_HAVE_CUDA
#include "backend/cuda/cuda_ctx.h"
#endif

/* ---- jobs ------------------------------------------------------------------------------------------------
 * What every rank runs at once. Inputs are the same for every rank (replicated control flow); each rank
 * writes its outputs where its own fields point: rank 0 into the caller's buffers, the others into theirs. */

typedef enum job_kind { JOB_BUILD, JOB_STEP, JOB_GREEDY } job_kind;

typedef struct job {
    job_kind kind;
    const dsv4_tp_options *opt;   /* JOB_BUILD */
    const dsv4_seq_step *steps;   /* JOB_STEP [n_steps] */
    const int *slots;             /* JOB_GREEDY [n_slots] */
    int n_slots;
    const int32_t *first;         /* JOB_GREEDY [n_slots] */
    int n_steps;                  /* JOB_STEP: entries of steps; JOB_GREEDY: decode steps */
} job;

typedef struct tp_rank {
    int index;                /* rank in the group; its GPU on cuda */
    int world;
    int cuda;                 /* forward_cuda (else the cpu forward) */
    dsv4_model *model;        /* owned: shard `index` of world */
    dsv4_comm *comm;          /* owned; NULL when world = 1 */
    dsv4_threadpool *pool;    /* owned (cpu) */
    dsv4_forward *fwd;        /* owned (cpu) */
    dsv4_forward_cuda *cfwd;  /* owned (cuda); owns kv then */
    dsv4_kv_manager *kv;      /* owned (cpu) / view of cfwd's (cuda): replicated state */
    float *logits;            /* owned (ranks >= 1) [cap_logits]: this rank's copy of a step's logits */
    size_t cap_logits;
    int32_t *tokens;          /* owned (ranks >= 1) [cap_tokens]: this rank's greedy tokens */
    size_t cap_tokens;
    double ms_own;            /* ranks >= 1: greedy device time */
    /* the job in flight */
    const job *job;           /* borrowed */
    float *out_logits;        /* JOB_STEP: rank 0 the caller's buffer, the others `logits` */
    int32_t *out_tokens;      /* JOB_GREEDY: rank 0 the caller's buffer, the others `tokens` */
    double *out_ms;           /* JOB_GREEDY: rank 0 the caller's (may be NULL), the others &ms_own */
    dsv4_status st;           /* ranks >= 1: the job's result and error */
    dsv4_err err;
} tp_rank;

struct dsv4_tp_group {
    int world;
    int cuda;
    tp_rank *ranks;           /* owned [world] */
};

/* ---- creation --------------------------------------------------------------------------------------- */

static int threads_per_rank(int n_threads_total, int world) {
    int total = n_threads_total > 0 ? n_threads_total : (int)sysconf(_SC_NPROCESSORS_ONLN);
    int t = total / (world > 0 ? world : 1);
    return t > 0 ? t : 1;
}

/* The group's only device check, before anything is loaded; the messages of a one-GPU engine are those
 * forward_cuda_create gives (it keeps its own check for its direct callers). */
static dsv4_status check_devices(int world, dsv4_err *err) {
#ifndef DSV4_HAVE_CUDA
    (void)world;
    return dsv4_err_set(err, DSV4_ERR_UNSUPPORTED, "backend cuda not compiled in (build with nvcc present)");
#else
    int n = dsv4_cuda_device_count();
    if (n >= world) return DSV4_OK;
    if (world == 1) return dsv4_err_set(err, DSV4_ERR_UNSUPPORTED, "cuda: no CUDA device visible");
    return dsv4_err_set(err, DSV4_ERR_UNSUPPORTED, "engine: --gpus %d with the cuda backend needs %d CUDA devices, "
                        "%d visible", world, world, n);
#endif
}

/* Reads one byte per 4 KiB page of every mapped weight file, reporting bytes done per 64 MiB chunk. Only
 * when a progress callback is set: the mappings are otherwise faulted in lazily by the first steps. */
static void page_in_weights(const dsv4_checkpoint *ck, dsv4_progress_fn fn, void *user) {
    uint64_t total = 0, done = 0;
    for (int f = 0; f < ck->n_files; f++) total += ck->files[f].size;
    fn(user, "weights", 0, total);
    const size_t chunk = (size_t)64 << 20;
    volatile uint8_t sink = 0;
    for (int f = 0; f < ck->n_files; f++) {
        const dsv4_st_file *sf = &ck->files[f];
        for (size_t off = 0; off < sf->size; off += chunk) {
            size_t n = sf->size - off < chunk ? sf->size - off : chunk;
            size_t a = off & ~(size_t)4095;   /* mappings are page aligned; chunk offsets are too */
            if (sf->mapped) madvise((void *)(uintptr_t)(sf->base + a), n + (off - a), MADV_WILLNEED);
            uint8_t acc = 0;
            for (size_t i = 0; i < n; i += 4096) acc ^= sf->base[off + i];
            sink ^= acc;
            done += n;
            fn(user, "weights", done, total);
        }
    }
    (void)sink;
}

/* JOB_BUILD on one rank: its shard (unless already loaded: rank 0's is), then its forward and KV manager. */
static dsv4_status rank_build(tp_rank *r, const dsv4_tp_options *o, dsv4_err *err) {
    dsv4_status st = r->model ? DSV4_OK : dsv4_model_load_shard(o->model_dir, r->index, r->world, &r->model, err);
    if (st == DSV4_OK && r->cuda) {
        dsv4_forward_cuda_options co = {0};
        co.device = r->index;
        co.max_seqs = o->max_seqs;
        co.max_tokens = o->max_tokens;
        co.verbose = o->progress != NULL;
        co.comm = r->comm;
        if ((st = dsv4_forward_cuda_create(r->model, &co, &r->cfwd, err)) == DSV4_OK)
            r->kv = dsv4_forward_cuda_kv(r->cfwd);
    } else if (st == DSV4_OK &&
               (st = dsv4_threadpool_create(threads_per_rank(o->n_threads, r->world), &r->pool, err)) == DSV4_OK &&
               (st = dsv4_kv_access_create(r->model->cfg, o->max_seqs, o->max_tokens, &r->kv, err)) == DSV4_OK &&
               (st = dsv4_forward_create(r->model, r->pool, &r->fwd, err)) == DSV4_OK) {
        if (r->comm) dsv4_forward_set_comm(r->fwd, r->comm);
        dsv4_forward_set_fault(r->fwd, o->fault);
    }
    if (st != DSV4_OK && r->world > 1) {
        if (r->cuda) dsv4_err_prefix(err, "rank %d (GPU %d)", r->index, r->index);
        else dsv4_err_prefix(err, "rank %d", r->index);
    }
    return st;
}

/* ---- the hand-off ---------------------------------------------------------------------------------------- */

static dsv4_status rank_run(tp_rank *r, const job *j, dsv4_err *err) {
    switch (j->kind) {
    case JOB_BUILD:
        return rank_build(r, j->opt, err);
    case JOB_STEP:
        return r->cuda ? dsv4_forward_cuda_step(r->cfwd, j->steps, j->n_steps, r->out_logits, err)
                       : dsv4_forward_step(r->fwd, r->kv, j->steps, j->n_steps, r->out_logits, err);
    case JOB_GREEDY:
        return dsv4_forward_cuda_decode_greedy(r->cfwd, j->slots, j->n_slots, j->first, j->n_steps, r->out_tokens,
                                               r->out_ms, err);
    }
    return dsv4_err_set(err, DSV4_ERR_INTERNAL, "engine: unknown rank job %d", (int)j->kind);
}

static void *rank_thread(void *arg) {
    tp_rank *r = arg;
    r->err.msg[0] = 0;
    r->st = rank_run(r, r->job, &r->err);
    return NULL;
}

/* Runs j on every rank: ranks 1..N-1 on a host thread each, rank 0 on the caller's; joins them all. The
 * result is rank 0's status (its error in err), else the first failing rank's, prefixed "rank r". A rank
 * failing mid-step aborts the communicator itself (forward_cpu.c / forward_cuda.c), which releases peers
 * blocked in a collective; failures before the first collective (the replicated checks) are the same on
 * every rank and leave the group usable. world = 1: rank 0 alone, no thread. */
static dsv4_status run_ranks(dsv4_tp_group *g, const job *j, dsv4_err *err) {
    const int N = g->world;
    pthread_t th[N];
    int started = 1;
    dsv4_status st = DSV4_OK;
    for (int r = 0; r < N; r++) g->ranks[r].job = j;
    for (; started < N; started++) {
        if (pthread_create(&th[started], NULL, rank_thread, &g->ranks[started]) != 0) {
            st = dsv4_err_set(err, DSV4_ERR_NOMEM, "engine: cannot start the thread of rank %d", started);
            /* Ranks already started would wait for rank 0 in the first collective: release them. */
            dsv4_comm_abort(g->ranks[0].comm);
            break;
        }
    }
    if (st == DSV4_OK) st = rank_run(&g->ranks[0], j, err);
    for (int r = 1; r < started; r++) pthread_join(th[r], NULL);
    for (int r = 1; r < started && st == DSV4_OK; r++)
        if (g->ranks[r].st != DSV4_OK) {
            st = g->ranks[r].st;
            if (err) {
                *err = g->ranks[r].err;
                if (j->kind != JOB_BUILD) dsv4_err_prefix(err, "rank %d", r);   /* a build names its rank itself */
            }
        }
    for (int r = 0; r < N; r++) g->ranks[r].job = NULL;
    return st;
}

void dsv4_tp_group_destroy(dsv4_tp_group *g) {
    if (!g) return;
    /* Every rank's forward (a cuda one owns its KV manager) before any communicator: a forward may still
     * reference its comm until it is gone. */
    for (int i = 0; i < g->world; i++) {
        tp_rank *r = &g->ranks[i];
        dsv4_forward_destroy(r->fwd);
        if (r->cfwd) dsv4_forward_cuda_destroy(r->cfwd);
        else dsv4_kv_access_destroy(r->kv);
        dsv4_threadpool_destroy(r->pool);
        dsv4_model_free(r->model);
        free(r->logits);
        free(r->tokens);
    }
    for (int i = 0; i < g->world; i++) dsv4_comm_destroy(g->ranks[i].comm);
    free(g->ranks);
    free(g);
}

dsv4_status dsv4_tp_group_create(const dsv4_tp_options *o, dsv4_tp_group **out, dsv4_err *err) {
    *out = NULL;
    if (!o || (!o->model_dir && !(o->synthetic && o->synthetic->preset)) || o->max_seqs <= 0 || o->max_tokens <= 0)
        return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "engine: rank group: no model (directory or synthetic) or no KV "
                            "capacity");
    const int world = o->world > 1 ? o->world : 1;
    const int cuda = o->cuda != 0;
    if (cuda) DSV4_TRY(check_devices(world, err));
    dsv4_tp_group *g = calloc(1, sizeof *g);
    if (!g || !(g->ranks = calloc((size_t)world, sizeof *g->ranks))) {
        free(g);
        return dsv4_err_set(err, DSV4_ERR_NOMEM, "engine: out of memory");
    }
    g->world = world;
    g->cuda = cuda;
    for (int r = 0; r < world; r++) g->ranks[r] = (tp_rank){.index = r, .world = world, .cuda = cuda};

    /* Rank 0's shard first, alone: a partition the model does not divide fails here before any thread
     * starts, and its page-in (progress only) fills the page cache every rank maps. */
    if (o->progress) o->progress(o->progress_user, "checkpoint", 0, 1);
    const dsv4_synthetic_model *syn = o->synthetic && o->synthetic->preset ? o->synthetic : NULL;
    dsv4_status st;
    if (syn) {   /* an in-memory synthetic model (one rank; the engine checks): no files to page in */
        dsv4_config sc;
        st = world > 1 ? dsv4_err_set(err, DSV4_ERR_UNSUPPORTED, "engine: a synthetic in-memory model runs on one rank")
                       : dsv4_synth_config_preset(syn->preset, syn->n_layers, syn->n_experts, &sc, err);
        if (st == DSV4_OK)
            st = syn->on_device && syn->with_mtp
                     ? dsv4_model_create_synth_device_mtp(&sc, syn->seed, &g->ranks[0].model, err)
                     : dsv4_model_create_synth(&sc, syn->seed, syn->on_device, &g->ranks[0].model, err);
        if (st == DSV4_OK && o->progress) o->progress(o->progress_user, "checkpoint", 1, 1);
    } else if ((st = dsv4_model_load_shard(o->model_dir, 0, world, &g->ranks[0].model, err)) == DSV4_OK &&
               o->progress) {
        o->progress(o->progress_user, "checkpoint", 1, 1);
        page_in_weights(&g->ranks[0].model->ckpt, o->progress, o->progress_user);
    }
    if (st == DSV4_OK && world > 1) {
        dsv4_comm *comms[world];
        int devices[world];
        for (int r = 0; r < world; r++) devices[r] = r;
        st = cuda ? dsv4_comm_nccl_create(world, devices, NULL, comms, err)
                  : dsv4_comm_threads_create(world, comms, err);
        if (st == DSV4_OK)
            for (int r = 0; r < world; r++) g->ranks[r].comm = comms[r];
    }
    if (st == DSV4_OK) {
        job j = {.kind = JOB_BUILD, .opt = o};
        st = run_ranks(g, &j, err);
    }
    if (st != DSV4_OK) {
        dsv4_tp_group_destroy(g);
        return st;
    }
    *out = g;
    return DSV4_OK;
}

/* ---- queries ---------------------------------------------------------------------------------------- */

int dsv4_tp_group_world(const dsv4_tp_group *g) { return g->world; }
int dsv4_tp_group_on_cuda(const dsv4_tp_group *g) { return g->cuda; }
const dsv4_model *dsv4_tp_group_model(const dsv4_tp_group *g) { return g->ranks[0].model; }
dsv4_kv_manager *dsv4_tp_group_kv(const dsv4_tp_group *g) { return g->ranks[0].kv; }

dsv4_forward *dsv4_tp_group_forward(const dsv4_tp_group *g, int rank) {
    return rank >= 0 && rank < g->world ? g->ranks[rank].fwd : NULL;
}

dsv4_forward_cuda *dsv4_tp_group_forward_cuda(const dsv4_tp_group *g, int rank) {
    return rank >= 0 && rank < g->world ? g->ranks[rank].cfwd : NULL;
}

const float *dsv4_tp_group_peer_logits(const dsv4_tp_group *g, int rank) {
    return rank >= 1 && rank < g->world ? g->ranks[rank].logits : NULL;
}

/* ---- admission -------------------------------------------------------------------------------------- */

dsv4_status dsv4_tp_group_admit(dsv4_tp_group *g, int *slot, dsv4_err *err) {
    int slot0 = -1;
    DSV4_TRY(dsv4_kv_access_admit(g->ranks[0].kv, &slot0, err));
    for (int r = 1; r < g->world; r++) {
        int s = -1;
        dsv4_status st = dsv4_kv_access_admit(g->ranks[r].kv, &s, err);
        if (st != DSV4_OK || s != slot0) {
            if (st == DSV4_OK) dsv4_kv_access_release(g->ranks[r].kv, s);
            for (int q = 0; q < r; q++) dsv4_kv_access_release(g->ranks[q].kv, slot0);
            return st != DSV4_OK ? st : dsv4_err_set(err, DSV4_ERR_INTERNAL, "engine: rank %d admitted slot %d, rank 0 "
                                                     "slot %d (replicated KV managers diverged)", r, s, slot0);
        }
    }
    *slot = slot0;
    return DSV4_OK;
}

void dsv4_tp_group_release(dsv4_tp_group *g, int slot) {
    for (int r = 0; r < g->world; r++)
        if (dsv4_kv_access_slot_valid(g->ranks[r].kv, slot)) dsv4_kv_access_release(g->ranks[r].kv, slot);
}

/* ---- steps ------------------------------------------------------------------------------------------ */

dsv4_status dsv4_tp_group_step(dsv4_tp_group *g, const dsv4_seq_step *steps, int n_steps, float *logits,
                               dsv4_err *err) {
    size_t n_want = 0;   /* logits rows of the step (DSV4_LOGITS_ALL: one per token) */
    for (int i = 0; i < n_steps; i++)
        n_want += steps[i].want_logits == DSV4_LOGITS_ALL ? (size_t)(steps[i].n_tokens > 0 ? steps[i].n_tokens : 0)
                                                          : (size_t)(steps[i].want_logits != 0);
    size_t need = n_want * (size_t)g->ranks[0].model->cfg->vocab_size;
    g->ranks[0].out_logits = logits;
    for (int r = 1; r < g->world; r++) {
        tp_rank *p = &g->ranks[r];
        if (need > p->cap_logits) {
            float *l = realloc(p->logits, sizeof(float) * need);
            if (!l) return dsv4_err_set(err, DSV4_ERR_NOMEM, "engine: out of memory (rank %d logits)", r);
            p->logits = l;
            p->cap_logits = need;
        }
        p->out_logits = p->logits;
    }
    job j = {.kind = JOB_STEP, .steps = steps, .n_steps = n_steps};
    return run_ranks(g, &j, err);
}

dsv4_status dsv4_tp_group_decode_greedy(dsv4_tp_group *g, const int *slots, int n_slots, const int32_t *first,
                                        int n_steps, int32_t *out, double *ms, dsv4_err *err) {
    if (!g->cuda)
        return dsv4_err_set(err, DSV4_ERR_UNSUPPORTED, "engine: greedy decoding on the device needs the cuda backend");
    if (n_slots <= 0 || n_steps <= 0) return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "engine: empty greedy decode");
    size_t need = (size_t)n_slots * (size_t)n_steps;
    g->ranks[0].out_tokens = out;
    g->ranks[0].out_ms = ms;
    for (int r = 1; r < g->world; r++) {
        tp_rank *p = &g->ranks[r];
        if (need > p->cap_tokens) {
            int32_t *t = realloc(p->tokens, sizeof(int32_t) * need);
            if (!t) return dsv4_err_set(err, DSV4_ERR_NOMEM, "engine: out of memory (rank %d tokens)", r);
            p->tokens = t;
            p->cap_tokens = need;
        }
        p->out_tokens = p->tokens;
        p->out_ms = &p->ms_own;
    }
    job j = {.kind = JOB_GREEDY, .slots = slots, .n_slots = n_slots, .first = first, .n_steps = n_steps};
    DSV4_TRY(run_ranks(g, &j, err));
    /* The logits every rank argmaxes are all-gathered, hence identical: so must the tokens be. */
    for (int r = 1; r < g->world; r++)
        if (memcmp(out, g->ranks[r].tokens, sizeof(int32_t) * need) != 0)
            return dsv4_err_set(err, DSV4_ERR_INTERNAL, "engine: greedy tokens of rank %d differ from rank 0's", r);
    return DSV4_OK;
}

/* ---- hooks ------------------------------------------------------------------------------------------ */

void dsv4_tp_group_set_hook(dsv4_tp_group *g, dsv4_layer_dump_fn fn, void *user) {
    tp_rank *r0 = &g->ranks[0];
    if (r0->fwd) dsv4_forward_set_hook(r0->fwd, fn, user);
    if (r0->cfwd && dsv4_forward_cuda_set_hook(r0->cfwd, fn, user, NULL) != DSV4_OK)
        (void)dsv4_forward_cuda_set_hook(r0->cfwd, NULL, NULL, NULL);
}

dsv4_status dsv4_tp_group_set_profile(dsv4_tp_group *g, struct dsv4_prof *p, dsv4_err *err) {
    if (!g->cuda)
        return p ? dsv4_err_set(err, DSV4_ERR_UNSUPPORTED, "engine: profiling needs the cuda backend") : DSV4_OK;
    if (g->world > 1 && p)
        return dsv4_err_set(err, DSV4_ERR_UNSUPPORTED, "engine: profiling runs on one GPU (gpus = 1)");
    dsv4_forward_cuda_set_profile(g->ranks[0].cfwd, p);
    return DSV4_OK;
}
