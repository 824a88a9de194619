/* comm_threads.c — the communicator of comm.h for ranks that are threads of one process (the CPU
 * backend's tensor/expert parallelism, and the CI tests of the partition logic).
 *
 * Shared state is one `group`: a barrier (mutex + condition + generation counter), an abort flag, and one
 * published pointer per rank. A collective publishes the rank's buffers, meets the others at the barrier,
 * reads the peers' buffers directly (shared memory: no copies through a staging area), and meets them
 * again before returning so that no rank reuses a buffer another still reads.
 *
 * All-reduce is deterministic and identical on every rank: the elements are cut into `world` contiguous
 * chunks; rank r sums chunk r over ranks 0, 1, ..., N-1 in that order (in place into its own buffer, the
 * only buffer whose chunk r nobody else reads), then every rank copies the other chunks from their owners.
 * Each element is therefore the same left-to-right sum whoever computed it, and the work per rank is
 * count elements (not world * count). */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/numfmt.h"
#include "core/status.h"
#include "dist/comm.h"

typedef struct group {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int world;
    int arrived;             /* ranks inside the current barrier */
    unsigned long gen;       /* barrier generation */
    int aborted;
    int refs;                /* rank handles alive */
    const void **src;        /* [world] published send/in-place buffers */
} group;

/* Waits until all ranks arrived. DSV4_ERR_INTERNAL if the group is (or becomes) aborted. */
static dsv4_status meet(group *g, dsv4_err *err) {
    pthread_mutex_lock(&g->mu);
    int aborted = g->aborted;
    if (!aborted) {
        unsigned long gen = g->gen;
        if (++g->arrived == g->world) {
            g->arrived = 0;
            g->gen++;
            pthread_cond_broadcast(&g->cv);
        } else {
            while (g->gen == gen && !g->aborted) pthread_cond_wait(&g->cv, &g->mu);
        }
        aborted = g->gen == gen;   /* a completed barrier succeeds even if the group is aborted right after */
    }
    pthread_mutex_unlock(&g->mu);
    return aborted ? dsv4_err_set(err, DSV4_ERR_INTERNAL, "comm threads: a peer rank failed (group aborted)")
                   : DSV4_OK;
}

static void chunk_of(size_t count, int world, int r, size_t *lo, size_t *hi) {
    *lo = count * (size_t)r / (size_t)world;
    *hi = count * (size_t)(r + 1) / (size_t)world;
}

static dsv4_status t_allreduce(dsv4_comm *c, void *buf, size_t count, dsv4_comm_dtype dt, void *stream,
                               dsv4_err *err) {
    (void)stream;
    group *g = c->impl;
    const int N = c->world, me = c->rank;
    if (N == 1) return DSV4_OK;   /* the sum over one rank is the buffer itself */
    g->src[me] = buf;
    DSV4_TRY(meet(g, err));
    size_t lo, hi;
    chunk_of(count, N, me, &lo, &hi);
    if (dt == DSV4_COMM_F32) {
        float *out = buf;
        for (size_t i = lo; i < hi; i++) {
            float acc = ((const float *)g->src[0])[i];
            for (int r = 1; r < N; r++) acc += ((const float *)g->src[r])[i];
            out[i] = acc;
        }
    } else {
        uint16_t *out = buf;
        for (size_t i = lo; i < hi; i++) {
            float acc = dsv4_bf16_to_f32(((const uint16_t *)g->src[0])[i]);
            for (int r = 1; r < N; r++) acc = dsv4_bf16_round(acc + dsv4_bf16_to_f32(((const uint16_t *)g->src[r])[i]));
            out[i] = dsv4_f32_to_bf16(acc);
        }
    }
    DSV4_TRY(meet(g, err));
    size_t esz = dt == DSV4_COMM_F32 ? sizeof(float) : sizeof(uint16_t);
    for (int r = 0; r < N; r++) {
        if (r == me) continue;
        chunk_of(count, N, r, &lo, &hi);
        memcpy((char *)buf + lo * esz, (const char *)g->src[r] + lo * esz, (hi - lo) * esz);
    }
    return meet(g, err);
}

static dsv4_status t_allgather(dsv4_comm *c, const void *send, void *recv, size_t bytes, void *stream,
                               dsv4_err *err) {
    (void)stream;
    group *g = c->impl;
    g->src[c->rank] = send;
    DSV4_TRY(meet(g, err));
    for (int r = 0; r < c->world; r++) {
        char *dst = (char *)recv + (size_t)r * bytes;
        if (dst != g->src[r]) memcpy(dst, g->src[r], bytes);
    }
    return meet(g, err);
}

static dsv4_status t_alltoall(dsv4_comm *c, const void *send, void *recv, size_t bytes, void *stream,
                              dsv4_err *err) {
    (void)stream;
    group *g = c->impl;
    g->src[c->rank] = send;
    DSV4_TRY(meet(g, err));
    for (int r = 0; r < c->world; r++)
        memcpy((char *)recv + (size_t)r * bytes, (const char *)g->src[r] + (size_t)c->rank * bytes, bytes);
    return meet(g, err);
}

static dsv4_status t_barrier(dsv4_comm *c, void *stream, dsv4_err *err) {
    (void)stream;
    return meet(c->impl, err);
}

static void t_abort(dsv4_comm *c) {
    group *g = c->impl;
    pthread_mutex_lock(&g->mu);
    g->aborted = 1;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
}

static void group_free(group *g) {
    pthread_cond_destroy(&g->cv);
    pthread_mutex_destroy(&g->mu);
    free(g->src);
    free(g);
}

static void t_destroy(dsv4_comm *c) {
    group *g = c->impl;
    pthread_mutex_lock(&g->mu);
    int last = --g->refs == 0;
    pthread_mutex_unlock(&g->mu);
    if (last) group_free(g);
    free(c);
}

static const dsv4_comm_ops threads_ops = {"threads", t_allreduce, t_allgather, t_alltoall, t_barrier, t_abort,
                                          t_destroy};

dsv4_status dsv4_comm_threads_create(int world, dsv4_comm **comms, dsv4_err *err) {
    if (world < 1 || !comms) return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "comm threads: world %d", world);
    group *g = calloc(1, sizeof *g);
    if (!g || !(g->src = calloc((size_t)world, sizeof *g->src))) {
        free(g);
        return dsv4_err_set(err, DSV4_ERR_NOMEM, "comm threads: out of memory");
    }
    pthread_mutex_init(&g->mu, NULL);
    pthread_cond_init(&g->cv, NULL);
    g->world = world;
    for (int r = 0; r < world; r++) {
        if (!(comms[r] = calloc(1, sizeof **comms))) {
            for (int q = 0; q < r; q++) free(comms[q]);
            group_free(g);
            return dsv4_err_set(err, DSV4_ERR_NOMEM, "comm threads: out of memory");
        }
        *comms[r] = (dsv4_comm){&threads_ops, r, world, g};
    }
    g->refs = world;
    return DSV4_OK;
}
