/* engine_tp.c — ranks 1..N-1 of a CPU tensor/expert-parallel engine (engine_tp.h). */
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
    dsv4_forward *fwd;        /* owned */
    float *logits;            /* owned [cap_logits] this rank's copy of the step's logits */
    size_t cap_logits;
    /* per-step job */
    const dsv4_seq_step *steps;
    int n_steps;
    dsv4_status st;
    dsv4_err err;
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
        dsv4_kv_access_destroy(p->kv);
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

dsv4_status dsv4_tp_group_step(dsv4_tp_group *g, dsv4_forward *f0, dsv4_kv_manager *kv0, const dsv4_seq_step *steps,
                               int n_steps, float *logits, dsv4_err *err) {
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
