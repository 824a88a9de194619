/* engine_tp.c — ranks 1..N-1 of a tensor/expert-parallel engine (engine_tp.h): on the CPU (thread
 * communicator) and on GPUs (one forward_cuda per GPU, NCCL). */
#include "engine/engine_tp.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/status.h"
#include "core/threadpool.h"
#include "engine/kv_access.h"
#include "engine/model.h"

typedef struct peer {
    dsv4_model *model;        /* owned: shard `rank` */
    dsv4_threadpool *pool;    /* owned */
    dsv4_kv_manager *kv;      /* owned, replicated state */
    dsv4_forward *fwd;        /* owned (cpu group) */
    dsv4_forward_cuda *cfwd;  /* owned (cuda group); owns kv then */
    float *logits;            /* owned [cap_logits] this rank's copy of the step's logits */
    size_t cap_logits;
    /* per-step job */
    const dsv4_seq_step *steps;
    int n_steps;
    /* greedy job (cuda group) */
    const int *slots;
    int n_slots;
    const int32_t *first;
    int32_t *gout;            /* owned [cap_gout] */
    size_t cap_gout;
    double ms;
    dsv4_status st;
    dsv4_err err;
    /* creation job (cuda group) */
    const char *model_dir;
    int rank, world;
    dsv4_comm *comm;
    const dsv4_forward_cuda_options *base;
} peer;

struct dsv4_tp_group {
    int world;
    dsv4_comm **comms;        /* owned [world] */
    peer *peers;              /* owned [world]; index 0 unused (rank 0 is the engine's) */
};

int dsv4_tp_threads_per_rank(int n_threads_total, int world) {
    int total = n_threads_total > 0 ? n_threads_total : (int)sysconf(_SC_NPROCESSORS_ONLN);
    int t = total / (world > 0 ? world : 1);
    return t > 0 ? t : 1;
}

void dsv4_tp_group_destroy(dsv4_tp_group *g) {
    if (!g) return;
    for (int r = 1; r < g->world && g->peers; r++) {
        peer *p = &g->peers[r];
        dsv4_forward_destroy(p->fwd);
        if (p->cfwd) dsv4_forward_cuda_destroy(p->cfwd);
        else dsv4_kv_access_destroy(p->kv);
        free(p->gout);
        dsv4_threadpool_destroy(p->pool);
        dsv4_model_free(p->model);
        free(p->logits);
    }
    for (int r = 0; r < g->world && g->comms; r++) dsv4_comm_destroy(g->comms[r]);
    free(g->comms);
    free(g->peers);
    free(g);
}

dsv4_status dsv4_tp_group_create(const char *model_dir, int world, int n_threads_total, int max_seqs,
                                 long max_tokens, dsv4_tp_group **out, dsv4_comm **rank0_comm, dsv4_err *err) {
    *out = NULL;
    if (world < 2) return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "engine: tensor-parallel group of %d ranks", world);
    dsv4_tp_group *g = calloc(1, sizeof *g);
    if (!g || !(g->comms = calloc((size_t)world, sizeof *g->comms)) ||
        !(g->peers = calloc((size_t)world, sizeof *g->peers))) {
        if (g) free(g->comms);
        free(g);
        return dsv4_err_set(err, DSV4_ERR_NOMEM, "engine: out of memory");
    }
    dsv4_status st = dsv4_comm_threads_create(world, g->comms, err);
    if (st != DSV4_OK) { free(g->comms); free(g->peers); free(g); return st; }
    g->world = world;
    int threads = dsv4_tp_threads_per_rank(n_threads_total, world);
    for (int r = 1; r < world && st == DSV4_OK; r++) {
        peer *p = &g->peers[r];
        if ((st = dsv4_model_load_shard(model_dir, r, world, &p->model, err)) != DSV4_OK ||
            (st = dsv4_threadpool_create(threads, &p->pool, err)) != DSV4_OK ||
            (st = dsv4_kv_access_create(p->model->cfg, max_seqs, max_tokens, &p->kv, err)) != DSV4_OK ||
            (st = dsv4_forward_create(p->model, p->pool, &p->fwd, err)) != DSV4_OK)
            dsv4_err_prefix(err, "rank %d", r);
        else dsv4_forward_set_comm(p->fwd, g->comms[r]);
    }
    if (st != DSV4_OK) { dsv4_tp_group_destroy(g); return st; }
    *rank0_comm = g->comms[0];
    *out = g;
    return DSV4_OK;
}

void dsv4_tp_group_set_fault(dsv4_tp_group *g, int fault) {
    for (int r = 1; r < g->world; r++) dsv4_forward_set_fault(g->peers[r].fwd, fault);
}

dsv4_status dsv4_tp_group_admit(dsv4_tp_group *g, int slot0, dsv4_err *err) {
    for (int r = 1; r < g->world; r++) {
        int slot = -1;
        dsv4_status st = dsv4_kv_access_admit(g->peers[r].kv, &slot, err);
        if (st != DSV4_OK || slot != slot0) {
            if (st == DSV4_OK) dsv4_kv_access_release(g->peers[r].kv, slot);
            for (int q = 1; q < r; q++) dsv4_kv_access_release(g->peers[q].kv, slot0);
            return st != DSV4_OK ? st : dsv4_err_set(err, DSV4_ERR_INTERNAL, "engine: rank %d admitted slot %d, rank 0 "
                                                     "slot %d (replicated KV managers diverged)", r, slot, slot0);
        }
    }
    return DSV4_OK;
}

void dsv4_tp_group_release(dsv4_tp_group *g, int slot) {
    for (int r = 1; r < g->world; r++)
        if (dsv4_kv_access_slot_valid(g->peers[r].kv, slot)) dsv4_kv_access_release(g->peers[r].kv, slot);
}

static void *peer_main(void *arg) {
    peer *p = arg;
    p->err.msg[0] = 0;
    p->st = dsv4_forward_step(p->fwd, p->kv, p->steps, p->n_steps, p->logits, &p->err);
    return NULL;
}

/* Hands a step to ranks 1..N-1: each gets the step list and a logits buffer large enough for it. */
static dsv4_status peers_prepare_step(dsv4_tp_group *g, const dsv4_seq_step *steps, int n_steps, dsv4_err *err) {
    int n_want = 0;
    for (int i = 0; i < n_steps; i++) n_want += steps[i].want_logits != 0;
    size_t need = (size_t)n_want * (size_t)g->peers[1].model->cfg->vocab_size;
    for (int r = 1; r < g->world; r++) {
        peer *p = &g->peers[r];
        if (need > p->cap_logits) {
            float *l = realloc(p->logits, sizeof(float) * need);
            if (!l) return dsv4_err_set(err, DSV4_ERR_NOMEM, "engine: out of memory (rank %d logits)", r);
            p->logits = l;
            p->cap_logits = need;
        }
        p->steps = steps;
        p->n_steps = n_steps;
    }
    return DSV4_OK;
}

dsv4_status dsv4_tp_group_step(dsv4_tp_group *g, dsv4_forward *f0, dsv4_kv_manager *kv0, const dsv4_seq_step *steps,
                               int n_steps, float *logits, dsv4_err *err) {
    DSV4_TRY(peers_prepare_step(g, steps, n_steps, err));
    pthread_t th[g->world];
    int started = 1;
    dsv4_status st = DSV4_OK;
    for (; started < g->world; started++)
        if (pthread_create(&th[started], NULL, peer_main, &g->peers[started]) != 0) {
            st = dsv4_err_set(err, DSV4_ERR_NOMEM, "engine: cannot start the thread of rank %d", started);
            /* Peers already started would wait for rank 0 in the first collective: release them. */
            dsv4_comm_abort(g->comms[0]);
            break;
        }
    if (st == DSV4_OK) st = dsv4_forward_step(f0, kv0, steps, n_steps, logits, err);
    for (int r = 1; r < started; r++) pthread_join(th[r], NULL);
    for (int r = 1; r < started && st == DSV4_OK; r++)
        if (g->peers[r].st != DSV4_OK) {
            st = g->peers[r].st;
            if (err) {
                *err = g->peers[r].err;
                dsv4_err_prefix(err, "rank %d", r);
            }
        }
    return st;
}

const float *dsv4_tp_group_peer_logits(const dsv4_tp_group *g, int rank) {
    return rank >= 1 && rank < g->world ? g->peers[rank].logits : NULL;
}

/* ==== the CUDA group ==================================================================================== */

dsv4_forward_cuda *dsv4_tp_group_peer_cuda(const dsv4_tp_group *g, int rank) {
    return rank >= 1 && rank < g->world ? g->peers[rank].cfwd : NULL;
}

#ifndef DSV4_HAVE_CUDA
static int visible_devices(void) { return 0; }
#else
#include "backend/cuda/cuda_ctx.h"
static int visible_devices(void) { return dsv4_cuda_device_count(); }
#endif

dsv4_status dsv4_tp_cuda_check_devices(int world, dsv4_err *err) {
    int n = visible_devices();
    if (n < world)
        return dsv4_err_set(err, DSV4_ERR_UNSUPPORTED, "engine: --gpus %d with the cuda backend needs %d CUDA devices, "
                            "%d visible%s", world, world, n, n ? "" : " (or this build has no CUDA backend)");
    return DSV4_OK;
}


static void *peer_create_main(void *arg) {
    peer *p = arg;
    p->err.msg[0] = 0;
    dsv4_forward_cuda_options o = *p->base;
    o.device = p->rank;
    o.comm = p->comm;
    if ((p->st = dsv4_model_load_shard(p->model_dir, p->rank, p->world, &p->model, &p->err)) == DSV4_OK &&
        (p->st = dsv4_forward_cuda_create(p->model, &o, &p->cfwd, &p->err)) == DSV4_OK)
        p->kv = dsv4_forward_cuda_kv(p->cfwd);
    return NULL;
}

dsv4_status dsv4_tp_cuda_group_create(const char *model_dir, int world, const dsv4_model *m0,
                                      const dsv4_forward_cuda_options *base, dsv4_tp_group **out,
                                      dsv4_forward_cuda **f0, dsv4_err *err) {
    *out = NULL;
    *f0 = NULL;
    if (world < 2) return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "engine: tensor-parallel group of %d ranks", world);
    DSV4_TRY(dsv4_tp_cuda_check_devices(world, err));
    dsv4_tp_group *g = calloc(1, sizeof *g);
    if (!g || !(g->comms = calloc((size_t)world, sizeof *g->comms)) ||
        !(g->peers = calloc((size_t)world, sizeof *g->peers))) {
        if (g) free(g->comms);
        free(g);
        return dsv4_err_set(err, DSV4_ERR_NOMEM, "engine: out of memory");
    }
    int devices[world];
    for (int r = 0; r < world; r++) devices[r] = r;
    dsv4_status st = dsv4_comm_nccl_create(world, devices, NULL, g->comms, err);
    if (st != DSV4_OK) { free(g->comms); free(g->peers); free(g); return st; }
    g->world = world;
    /* Every rank loads and uploads at once (one host thread each: the uploads of the GPUs overlap). */
    pthread_t th[world];
    int started = 1;
    for (; started < world; started++) {
        peer *p = &g->peers[started];
        p->model_dir = model_dir;
        p->rank = started;
        p->world = world;
        p->comm = g->comms[started];
        p->base = base;
        if (pthread_create(&th[started], NULL, peer_create_main, p) != 0) {
            st = dsv4_err_set(err, DSV4_ERR_NOMEM, "engine: cannot start the thread of rank %d", started);
            break;
        }
    }
    if (st == DSV4_OK) {
        dsv4_forward_cuda_options o = *base;
        o.device = 0;
        o.comm = g->comms[0];
        if ((st = dsv4_forward_cuda_create(m0, &o, f0, err)) != DSV4_OK) dsv4_err_prefix(err, "rank 0 (GPU 0)");
    }
    for (int r = 1; r < started; r++) pthread_join(th[r], NULL);
    for (int r = 1; r < started && st == DSV4_OK; r++)
        if (g->peers[r].st != DSV4_OK) {
            st = g->peers[r].st;
            if (err) {
                *err = g->peers[r].err;
                dsv4_err_prefix(err, "rank %d (GPU %d)", r, r);
            }
        }
    if (st != DSV4_OK) {
        if (*f0) dsv4_forward_cuda_destroy(*f0);
        *f0 = NULL;
        dsv4_tp_group_destroy(g);
        return st;
    }
    *out = g;
    return DSV4_OK;
}

typedef void *(*rank_fn)(void *);

/* Runs fn on peers 1..N-1 (threads) and rank0 on the caller's thread; joins; the first failure wins. */
static dsv4_status run_ranks(dsv4_tp_group *g, rank_fn fn, dsv4_status (*rank0)(void *), void *arg0, dsv4_err *err) {
    pthread_t th[g->world];
    int started = 1;
    dsv4_status st = DSV4_OK;
    for (; started < g->world; started++)
        if (pthread_create(&th[started], NULL, fn, &g->peers[started]) != 0) {
            st = dsv4_err_set(err, DSV4_ERR_NOMEM, "engine: cannot start the thread of rank %d", started);
            dsv4_comm_abort(g->comms[0]);   /* started peers would wait for rank 0: abort the group */
            break;
        }
    /* A rank failing mid-step aborts the group itself (forward_cuda.c); the replicated checks before the
     * first collective fail alike on every rank and leave the group usable. */
    if (st == DSV4_OK) st = rank0(arg0);
    for (int r = 1; r < started; r++) pthread_join(th[r], NULL);
    for (int r = 1; r < started && st == DSV4_OK; r++)
        if (g->peers[r].st != DSV4_OK) {
            st = g->peers[r].st;
            if (err) {
                *err = g->peers[r].err;
                dsv4_err_prefix(err, "rank %d", r);
            }
        }
    return st;
}

typedef struct rank0_step {
    dsv4_tp_group *g;
    dsv4_forward_cuda *f0;
    const dsv4_seq_step *steps;
    int n_steps;
    float *logits;
    const int *slots;
    int n_slots;
    const int32_t *first;
    int32_t *out;
    double *ms;
    dsv4_err *err;
} rank0_step;

static void *peer_cuda_step_main(void *arg) {
    peer *p = arg;
    p->err.msg[0] = 0;
    p->st = dsv4_forward_cuda_step(p->cfwd, p->steps, p->n_steps, p->logits, &p->err);
    return NULL;
}

static dsv4_status rank0_cuda_step(void *arg) {
    rank0_step *a = arg;
    return dsv4_forward_cuda_step(a->f0, a->steps, a->n_steps, a->logits, a->err);
}

dsv4_status dsv4_tp_cuda_step(dsv4_tp_group *g, dsv4_forward_cuda *f0, const dsv4_seq_step *steps, int n_steps,
                              float *logits, dsv4_err *err) {
    DSV4_TRY(peers_prepare_step(g, steps, n_steps, err));
    rank0_step a = {g, f0, steps, n_steps, logits, NULL, 0, NULL, NULL, NULL, err};
    return run_ranks(g, peer_cuda_step_main, rank0_cuda_step, &a, err);
}

static void *peer_cuda_greedy_main(void *arg) {
    peer *p = arg;
    p->err.msg[0] = 0;
    p->st = dsv4_forward_cuda_decode_greedy(p->cfwd, p->slots, p->n_slots, p->first, p->n_steps, p->gout, &p->ms,
                                            &p->err);
    return NULL;
}

static dsv4_status rank0_cuda_greedy(void *arg) {
    rank0_step *a = arg;
    return dsv4_forward_cuda_decode_greedy(a->f0, a->slots, a->n_slots, a->first, a->n_steps, a->out, a->ms, a->err);
}

dsv4_status dsv4_tp_cuda_decode_greedy(dsv4_tp_group *g, dsv4_forward_cuda *f0, const int *slots, int n_slots,
                                       const int32_t *first, int n_steps, int32_t *out, double *ms, dsv4_err *err) {
    if (n_slots <= 0 || n_steps <= 0) return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "engine: empty greedy decode");
    size_t need = (size_t)n_slots * (size_t)n_steps;
    for (int r = 1; r < g->world; r++) {
        peer *p = &g->peers[r];
        if (need > p->cap_gout) {
            int32_t *o = realloc(p->gout, sizeof(int32_t) * need);
            if (!o) return dsv4_err_set(err, DSV4_ERR_NOMEM, "engine: out of memory (rank %d tokens)", r);
            p->gout = o;
            p->cap_gout = need;
        }
        p->slots = slots;
        p->n_slots = n_slots;
        p->first = first;
        p->n_steps = n_steps;
    }
    rank0_step a = {g, f0, NULL, n_steps, NULL, slots, n_slots, first, out, ms, err};
    DSV4_TRY(run_ranks(g, peer_cuda_greedy_main, rank0_cuda_greedy, &a, err));
    /* The logits every rank argmaxes are all-gathered, hence identical: so must the tokens be. */
    for (int r = 1; r < g->world; r++)
        if (memcmp(out, g->peers[r].gout, sizeof(int32_t) * need) != 0)
            return dsv4_err_set(err, DSV4_ERR_INTERNAL, "engine: greedy tokens of rank %d differ from rank 0's", r);
    return DSV4_OK;
}
