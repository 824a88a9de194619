/* threadpool.c — the CPU backend's fixed-size worker pool (see threadpool.h).
 *
 * Owns: the worker threads, one mutex and two condition variables. One job at a time: run() publishes
 * (fn, ctx, n_tasks) under a new generation number and wakes every worker; tasks are handed out through an
 * atomic counter, so each task runs exactly once on some thread (the caller included); run() returns only
 * after every worker has left the job, so ctx is never touched after run() returns.
 * Must not: decide anything about the result of a task (callers make results thread-count independent). */
#include "core/threadpool.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#include "core/status.h"

struct dsv4_threadpool {
    int n_threads;              /* workers + the calling thread */
    int n_workers;              /* n_threads - 1 */
    pthread_t *threads;         /* owned, [n_workers] */
    pthread_mutex_t mu;         /* guards everything below except next */
    pthread_cond_t work_cv;     /* workers wait here for a new generation or stop */
    pthread_cond_t done_cv;     /* run() waits here for active == 0 */
    pthread_mutex_t run_mu;     /* serializes concurrent run() callers (contract: one job at a time) */
    uint64_t gen;               /* incremented per published job */
    int stop;                   /* set by destroy */
    int active;                 /* workers still inside the current job */
    void (*fn)(void *ctx, int task);
    void *ctx;                  /* borrowed for the duration of one run() */
    int n_tasks;
    atomic_int next;            /* next task index to hand out */
};

/* Pulls tasks until none are left. Any thread may call it; each index is taken exactly once. */
static void drain(struct dsv4_threadpool *p, void (*fn)(void *, int), void *ctx, int n_tasks) {
    for (;;) {
        int t = atomic_fetch_add_explicit(&p->next, 1, memory_order_relaxed);
        if (t >= n_tasks) break;
        fn(ctx, t);
    }
}

static void *worker_main(void *arg) {
    struct dsv4_threadpool *p = arg;
    uint64_t seen = 0;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->stop && p->gen == seen) pthread_cond_wait(&p->work_cv, &p->mu);
        if (p->stop) break;
        seen = p->gen;
        void (*fn)(void *, int) = p->fn;
        void *ctx = p->ctx;
        int n = p->n_tasks;
        pthread_mutex_unlock(&p->mu);
        drain(p, fn, ctx, n);
        pthread_mutex_lock(&p->mu);
        if (--p->active == 0) pthread_cond_signal(&p->done_cv);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

dsv4_status dsv4_threadpool_create(int n_threads, dsv4_threadpool **out, dsv4_err *err) {
    *out = NULL;
    if (n_threads <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        n_threads = n > 0 ? (int)n : 1;
    }
    if (n_threads > DSV4_THREADS_MAX) return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "threadpool: %d threads", n_threads);
    struct dsv4_threadpool *p = calloc(1, sizeof *p);
    if (!p) return dsv4_err_set(err, DSV4_ERR_NOMEM, "threadpool: out of memory");
    p->n_threads = n_threads;
    p->n_workers = n_threads - 1;
    atomic_init(&p->next, 0);
    if (p->n_workers > 0) {
        p->threads = calloc((size_t)p->n_workers, sizeof *p->threads);
        if (!p->threads) {
            free(p);
            return dsv4_err_set(err, DSV4_ERR_NOMEM, "threadpool: out of memory");
        }
    }
    pthread_mutex_init(&p->mu, NULL);
    pthread_mutex_init(&p->run_mu, NULL);
    pthread_cond_init(&p->work_cv, NULL);
    pthread_cond_init(&p->done_cv, NULL);
    for (int i = 0; i < p->n_workers; i++) {
        int rc = pthread_create(&p->threads[i], NULL, worker_main, p);
        if (rc != 0) {
            p->n_workers = i; /* destroy joins only the threads that started */
            dsv4_threadpool_destroy(p);
            return dsv4_err_set(err, DSV4_ERR_INTERNAL, "threadpool: pthread_create failed (%d)", rc);
        }
    }
    *out = p;
    return DSV4_OK;
}

void dsv4_threadpool_destroy(dsv4_threadpool *p) {
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    p->stop = 1;
    pthread_cond_broadcast(&p->work_cv);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->n_workers; i++) pthread_join(p->threads[i], NULL);
    pthread_cond_destroy(&p->work_cv);
    pthread_cond_destroy(&p->done_cv);
    pthread_mutex_destroy(&p->mu);
    pthread_mutex_destroy(&p->run_mu);
    free(p->threads);
    free(p);
}

int dsv4_threadpool_size(const dsv4_threadpool *p) { return p ? p->n_threads : 1; }

void dsv4_threadpool_run(dsv4_threadpool *p, void (*fn)(void *ctx, int task), void *ctx, int n_tasks) {
    if (n_tasks <= 0) return;
    if (!p || p->n_workers == 0 || n_tasks == 1) {
        for (int t = 0; t < n_tasks; t++) fn(ctx, t);
        return;
    }
    pthread_mutex_lock(&p->run_mu);
    pthread_mutex_lock(&p->mu);
    p->fn = fn;
    p->ctx = ctx;
    p->n_tasks = n_tasks;
    atomic_store_explicit(&p->next, 0, memory_order_relaxed);
    p->active = p->n_workers;
    p->gen++;
    pthread_cond_broadcast(&p->work_cv);
    pthread_mutex_unlock(&p->mu);

    drain(p, fn, ctx, n_tasks);

    pthread_mutex_lock(&p->mu);
    while (p->active > 0) pthread_cond_wait(&p->done_cv, &p->mu);
    pthread_mutex_unlock(&p->mu);
    pthread_mutex_unlock(&p->run_mu);
}
